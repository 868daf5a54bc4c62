//! The CustomResourceDefinition for `PhoneNumber`, generated from the Rust type so the
//! schema and the code cannot drift apart. `crds/phonenumbers.yaml` is this output,
//! checked in; a test fails when it is stale (regenerate with
//! `cargo run -p switchyard-operator --bin crdgen > crds/phonenumbers.yaml`).

use kube::CustomResourceExt;

use crate::resource::PhoneNumber;

/// The CRD as YAML, with a header saying where it comes from.
pub fn phone_number_crd_yaml() -> String {
    let body = serde_yaml::to_string(&PhoneNumber::crd())
        .unwrap_or_else(|e| format!("# failed to serialise the CRD: {e}\n"));
    format!(
        "# Generated from routing/src/resource.rs by `cargo run -p switchyard-operator --bin crdgen`.\n# Do not edit by hand.\n{body}"
    )
}
