//! The checked-in CRD must be exactly what the Rust type generates, and must carry the
//! validation platform teams rely on at `kubectl apply` time.

use std::path::PathBuf;

use switchyard_routing::crd::phone_number_crd_yaml;

fn checked_in_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds/phonenumbers.yaml")
}

#[test]
fn checked_in_crd_matches_the_rust_type() {
    let generated = phone_number_crd_yaml();
    let checked_in = std::fs::read_to_string(checked_in_path()).unwrap_or_default();
    assert!(
        generated == checked_in,
        "crds/phonenumbers.yaml is stale; regenerate it with\n  cargo run -p switchyard-operator --bin crdgen > crds/phonenumbers.yaml"
    );
}

fn crd() -> serde_json::Value {
    let yaml: serde_yaml::Value = serde_yaml::from_str(&phone_number_crd_yaml()).unwrap();
    serde_json::to_value(yaml).unwrap()
}

#[test]
fn crd_names_group_version_and_scope() {
    let crd = crd();
    assert_eq!(crd["metadata"]["name"], "phonenumbers.switchyard.dev");
    assert_eq!(crd["spec"]["group"], "switchyard.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(crd["spec"]["names"]["kind"], "PhoneNumber");
    assert_eq!(crd["spec"]["versions"][0]["name"], "v1alpha1");
    assert!(crd["spec"]["versions"][0]["subresources"]["status"].is_object());
}

#[test]
fn schema_validates_what_a_schema_can() {
    let crd = crd();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let props = &spec["properties"];
    assert_eq!(spec["required"], serde_json::json!(["voiceUrl"]));
    for url in ["voiceUrl", "voiceFallbackUrl", "referUrl", "statusCallback"] {
        let pattern = props[url]["pattern"].as_str().unwrap_or_default();
        assert!(
            pattern.contains("https?://") && pattern.contains("file:"),
            "{url}: {pattern}"
        );
    }
    for method in ["voiceMethod", "voiceFallbackMethod", "referMethod"] {
        assert_eq!(
            props[method]["enum"],
            serde_json::json!(["GET", "POST"]),
            "{method}"
        );
        assert_eq!(props[method]["default"], "POST", "{method}");
    }
    assert!(props["phoneNumber"]["pattern"].is_string());
    let rules: Vec<&str> = spec["x-kubernetes-validations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    assert!(
        rules.contains(&"has(self.phoneNumber) != has(self.pattern)"),
        "{rules:?}"
    );
}

#[test]
fn printer_columns_are_number_refer_url_ready_and_age() {
    let crd = crd();
    let names: Vec<&str> = crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["priority"].as_i64().unwrap_or(0) == 0)
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert_eq!(names, ["Number", "Refer URL", "Ready", "Age"]);
}
