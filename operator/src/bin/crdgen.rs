//! Prints the PhoneNumber CustomResourceDefinition:
//! `cargo run -p switchyard-operator --bin crdgen > crds/phonenumbers.yaml`.

fn main() {
    print!("{}", switchyard_routing::crd::phone_number_crd_yaml());
}
