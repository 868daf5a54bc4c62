//! Loading PhoneNumber manifests from YAML files and directories: the edge's standalone
//! mode, and the same files platform teams `kubectl apply`.
//!
//! - A directory is read non-recursively; its `*.yaml` / `*.yml` files in name order.
//! - A file may hold several documents (`---`); documents of other kinds are skipped, so
//!   a manifest bundle with a Namespace in it loads as it applies.
//! - Every problem is reported with the file, the document (1-based) and the field, and
//!   loading goes on so one run shows all of them.
//! - Relative `file:` URLs are resolved against the manifest's directory, so a manifest
//!   and its RCML documents can move together.
//! - Two manifests claiming one number or one pattern are an error (there is no
//!   creation time to decide between them, unlike in a cluster).

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::resource::{PhoneNumber, PhoneNumberSpec};
use crate::route::{Owner, Route, RouteKey};
use crate::validate::validate_spec;

pub const API_VERSION: &str = "switchyard.dev/v1alpha1";
pub const KIND: &str = "PhoneNumber";

/// Where a manifest came from: file and 1-based document index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub document: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.file.display(), self.document)
    }
}

#[derive(Debug, Error)]
pub enum ManifestError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: no *.yaml or *.yml files", path.display())]
    EmptyDirectory { path: PathBuf },
    #[error("{location}: {message}")]
    Invalid { location: Location, message: String },
    #[error("{0}")]
    Conflict(Box<Conflict>),
}

/// Two manifests claiming one number or pattern.
#[derive(Debug, Error)]
#[error("{key} is claimed by {first} ({first_owner}) and by {second} ({second_owner})")]
pub struct Conflict {
    pub key: RouteKey,
    pub first: Location,
    pub first_owner: Owner,
    pub second: Location,
    pub second_owner: Owner,
}

/// A PhoneNumber read from a file, with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedPhoneNumber {
    pub location: Location,
    pub resource: PhoneNumber,
    pub route: Route,
}

/// Loads every PhoneNumber under `paths` (files or directories). Returns all of them, or
/// every problem found.
pub fn load_paths(
    paths: &[impl AsRef<Path>],
) -> Result<Vec<LoadedPhoneNumber>, Vec<ManifestError>> {
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match manifest_files(path.as_ref()) {
            Ok(files) => {
                for file in files {
                    match load_file(&file) {
                        Ok(mut found) => loaded.append(&mut found),
                        Err(mut problems) => errors.append(&mut problems),
                    }
                }
            }
            Err(error) => errors.push(error),
        }
    }
    errors.extend(conflicts(&loaded));
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

fn manifest_files(path: &Path) -> Result<Vec<PathBuf>, ManifestError> {
    let io = |source| ManifestError::Io {
        path: path.to_owned(),
        source,
    };
    if !path.metadata().map_err(io)?.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(io)? {
        let file = entry.map_err(io)?.path();
        let is_yaml = matches!(
            file.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        );
        if is_yaml && file.is_file() {
            files.push(file);
        }
    }
    if files.is_empty() {
        return Err(ManifestError::EmptyDirectory {
            path: path.to_owned(),
        });
    }
    files.sort();
    Ok(files)
}

/// Loads the PhoneNumbers of one (possibly multi-document) YAML file.
pub fn load_file(path: &Path) -> Result<Vec<LoadedPhoneNumber>, Vec<ManifestError>> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        vec![ManifestError::Io {
            path: path.to_owned(),
            source,
        }]
    })?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut loaded = Vec::new();
    let mut errors = Vec::new();
    for (index, document) in serde_yaml::Deserializer::from_str(&text).enumerate() {
        let location = Location {
            file: path.to_owned(),
            document: index + 1,
        };
        let invalid = |message: String| ManifestError::Invalid {
            location: location.clone(),
            message,
        };
        let value = match serde_yaml::Value::deserialize(document) {
            Ok(serde_yaml::Value::Null) => continue,
            Ok(value) => value,
            Err(error) => {
                errors.push(invalid(format!("not valid YAML: {error}")));
                // The YAML stream cannot be resynchronised after a syntax error.
                break;
            }
        };
        match parse_document(value, base) {
            Ok(Some((resource, route))) => loaded.push(LoadedPhoneNumber {
                location,
                resource,
                route,
            }),
            Ok(None) => {}
            Err(messages) => errors.extend(messages.into_iter().map(invalid)),
        }
    }
    if errors.is_empty() {
        Ok(loaded)
    } else {
        Err(errors)
    }
}

/// Parses one document. `Ok(None)`: a document of another kind, skipped.
fn parse_document(
    value: serde_yaml::Value,
    base: &Path,
) -> Result<Option<(PhoneNumber, Route)>, Vec<String>> {
    let text_field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    if text_field("kind").as_deref() != Some(KIND) {
        return Ok(None);
    }
    let api_version = text_field("apiVersion");
    if api_version.as_deref() != Some(API_VERSION) {
        return Err(vec![format!(
            "apiVersion: expected {API_VERSION:?}, found {:?}",
            api_version.unwrap_or_default()
        )]);
    }
    let mut messages = unknown_spec_fields(&value);
    // serde_path_to_error names the field (`spec.referMethod`) that serde_yaml's own
    // error leaves out when deserialising from a Value.
    let mut resource: PhoneNumber = match serde_path_to_error::deserialize(value) {
        Ok(resource) => resource,
        Err(error) => {
            let path = error.path().to_string();
            messages.push(format!("{path}: {}", error.into_inner()));
            return Err(messages);
        }
    };
    if resource
        .metadata
        .name
        .as_deref()
        .unwrap_or_default()
        .is_empty()
    {
        messages.push("metadata.name: required".to_owned());
    }
    if let Err(errors) = validate_spec(&resource.spec) {
        messages.extend(errors.iter().map(ToString::to_string));
    }
    if !messages.is_empty() {
        return Err(messages);
    }
    resolve_file_urls(&mut resource.spec, base);
    let owner = Owner::new(
        resource.metadata.namespace.as_deref().unwrap_or("default"),
        resource.metadata.name.as_deref().unwrap_or_default(),
    );
    let route = Route::from_spec(owner, &resource.spec)
        .ok_or_else(|| vec!["spec: exactly one of phoneNumber and pattern must be set".into()])?;
    Ok(Some((resource, route)))
}

/// A misspelt field (`referURL`) would silently disable a feature, and the API server
/// prunes unknown fields, so standalone loading reports them instead.
fn unknown_spec_fields(value: &serde_yaml::Value) -> Vec<String> {
    let Some(spec) = value.get("spec").and_then(|s| s.as_mapping()) else {
        return Vec::new();
    };
    let schema = schemars::SchemaGenerator::default().into_root_schema_for::<PhoneNumberSpec>();
    let known: BTreeSet<&str> = schema
        .get("properties")
        .and_then(|p| p.as_object())
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    spec.keys()
        .filter_map(|k| k.as_str())
        .filter(|k| !known.contains(k))
        .map(|k| format!("spec.{k}: unknown field (known: {known:?})"))
        .collect()
}

fn resolve_file_urls(spec: &mut PhoneNumberSpec, base: &Path) {
    let resolve = |url: &mut String| {
        if let Some(path) = url.strip_prefix("file:")
            && !path.starts_with('/')
        {
            let absolute = std::path::absolute(base.join(path)).unwrap_or_else(|_| base.join(path));
            *url = format!("file://{}", absolute.display());
        }
    };
    resolve(&mut spec.voice_url);
    for url in [
        &mut spec.voice_fallback_url,
        &mut spec.refer_url,
        &mut spec.status_callback,
    ]
    .into_iter()
    .flatten()
    {
        resolve(url);
    }
}

fn conflicts(loaded: &[LoadedPhoneNumber]) -> Vec<ManifestError> {
    let mut first_claim: HashMap<&RouteKey, &LoadedPhoneNumber> = HashMap::new();
    let mut errors = Vec::new();
    for manifest in loaded {
        match first_claim.get(&manifest.route.key) {
            Some(first) => errors.push(ManifestError::Conflict(Box::new(Conflict {
                key: manifest.route.key.clone(),
                first: first.location.clone(),
                first_owner: first.route.owner.clone(),
                second: manifest.location.clone(),
                second_owner: manifest.route.owner.clone(),
            }))),
            None => {
                first_claim.insert(&manifest.route.key, manifest);
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::HttpMethod;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const NUMBER_A: &str = r#"
apiVersion: switchyard.dev/v1alpha1
kind: PhoneNumber
metadata: {name: number-a, namespace: telephony}
spec:
  phoneNumber: "+15551230001"
  voiceUrl: file:apps/dial-bob.xml
  referUrl: http://apps.example/refer.xml
  referMethod: GET
"#;

    #[test]
    fn loads_a_multi_document_file_and_skips_other_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: telephony}}\n---\n{NUMBER_A}---\n"
        );
        let file = write(dir.path(), "numbers.yaml", &text);
        let loaded = load_paths(&[&file]).unwrap();
        assert_eq!(loaded.len(), 1);
        let a = &loaded[0];
        assert_eq!(a.location.document, 2);
        assert_eq!(a.route.owner.0, "telephony/number-a");
        assert_eq!(a.route.key, RouteKey::Number("+15551230001".into()));
        let refer = a.route.refer.as_ref().unwrap();
        assert_eq!(refer.method, HttpMethod::Get);
        assert_eq!(
            a.route.voice.method,
            HttpMethod::Post,
            "voiceMethod defaults to POST"
        );
        let expected = format!("file://{}/apps/dial-bob.xml", dir.path().display());
        assert_eq!(
            a.route.voice.url, expected,
            "relative file: URLs resolve beside the manifest"
        );
    }

    #[test]
    fn reads_yaml_files_of_a_directory_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "b.yml",
            &NUMBER_A.replace("number-a", "b").replace("0001", "0002"),
        );
        write(dir.path(), "a.yaml", NUMBER_A);
        write(dir.path(), "dial-bob.xml", "<Response/>");
        let loaded = load_paths(&[dir.path()]).unwrap();
        let owners: Vec<_> = loaded.iter().map(|l| l.route.owner.0.as_str()).collect();
        assert_eq!(owners, ["telephony/number-a", "telephony/b"]);
    }

    #[test]
    fn errors_name_the_file_the_document_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let bad = NUMBER_A.replace("referMethod: GET", "referMethod: PUT");
        let file = write(dir.path(), "bad.yaml", &format!("{NUMBER_A}---\n{bad}"));
        let errors = load_paths(&[&file]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        let message = errors[0].to_string();
        assert!(message.contains("bad.yaml, document 2"), "{message}");
        assert!(message.contains("referMethod"), "{message}");
    }

    #[test]
    fn reports_every_invalid_field_and_unknown_fields() {
        let dir = tempfile::tempdir().unwrap();
        let bad = NUMBER_A
            .replace("\"+15551230001\"", "\"+1 555\"")
            .replace("referUrl:", "referURL:");
        let file = write(dir.path(), "bad.yaml", &bad);
        let messages: Vec<String> = load_paths(&[&file])
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("spec.referURL: unknown field")),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m.contains("spec.phoneNumber:")),
            "{messages:?}"
        );
    }

    #[test]
    fn a_missing_required_field_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let bad = NUMBER_A.replace("voiceUrl: file:apps/dial-bob.xml", "");
        let file = write(dir.path(), "bad.yaml", &bad);
        let message = load_paths(&[&file]).unwrap_err()[0].to_string();
        assert!(message.contains("voiceUrl"), "{message}");
    }

    #[test]
    fn two_manifests_claiming_one_number_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "a.yaml", NUMBER_A);
        write(
            dir.path(),
            "b.yaml",
            &NUMBER_A.replace("number-a", "number-a-copy"),
        );
        let errors = load_paths(&[dir.path()]).unwrap_err();
        assert_eq!(errors.len(), 1);
        let message = errors[0].to_string();
        assert!(message.contains("number +15551230001"), "{message}");
        assert!(message.contains("telephony/number-a-copy"), "{message}");
        assert!(message.contains("b.yaml"), "{message}");
    }

    #[test]
    fn a_missing_path_and_an_empty_directory_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let errors =
            load_paths(&[dir.path().join("nope.yaml"), dir.path().to_owned()]).unwrap_err();
        assert_eq!(errors.len(), 2);
        assert!(matches!(errors[0], ManifestError::Io { .. }));
        assert!(matches!(errors[1], ManifestError::EmptyDirectory { .. }));
    }

    #[test]
    fn a_yaml_syntax_error_is_reported_not_panicked() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "broken.yaml",
            "kind: PhoneNumber\nspec: [unclosed\n",
        );
        let message = load_paths(&[&file]).unwrap_err()[0].to_string();
        assert!(
            message.contains("broken.yaml, document 1: not valid YAML"),
            "{message}"
        );
    }
}
