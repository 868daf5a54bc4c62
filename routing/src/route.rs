//! One row of the routing table: what the edge needs to run a call to a number.
//!
//! A [`Route`] is derived from a validated [`PhoneNumberSpec`] and is what both backends
//! store (as JSON in Redis). Keeping it separate from the resource type means the edge
//! never depends on Kubernetes object metadata, and the operator decides ownership
//! (conflicts) before a route is written.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::resource::{HttpMethod, PhoneNumberSpec};

/// How a route matches a dialled number.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(tag = "kind", content = "value", rename_all = "camelCase")]
pub enum RouteKey {
    /// An exact number, stored as declared (with or without a leading `+`).
    Number(String),
    /// A regular expression matched against the whole dialled number.
    Pattern(String),
}

impl RouteKey {
    /// The Redis hash field of this key: `n:<number>` or `p:<pattern>`.
    pub fn field(&self) -> String {
        match self {
            RouteKey::Number(n) => format!("n:{n}"),
            RouteKey::Pattern(p) => format!("p:{p}"),
        }
    }

    /// The metric label for this kind of key.
    pub fn kind(&self) -> &'static str {
        match self {
            RouteKey::Number(_) => "number",
            RouteKey::Pattern(_) => "pattern",
        }
    }
}

impl fmt::Display for RouteKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteKey::Number(n) => write!(f, "number {n}"),
            RouteKey::Pattern(p) => write!(f, "pattern /{p}/"),
        }
    }
}

/// The resource a route came from, `namespace/name` (or the manifest file in standalone
/// mode). Used to keep one resource from removing a route another one owns.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Owner(pub String);

impl Owner {
    pub fn new(namespace: &str, name: &str) -> Self {
        Owner(format!("{namespace}/{name}"))
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An RCML application location and how to fetch it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AppUrl {
    pub url: String,
    pub method: HttpMethod,
}

/// Everything the edge needs to answer a call to a number and to transfer it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Route {
    pub key: RouteKey,
    pub owner: Owner,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub friendly_name: Option<String>,
    pub voice: AppUrl,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voice_fallback: Option<AppUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refer: Option<AppUrl>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_callback: Option<String>,
    /// `referTargetAllow` of the PhoneNumber (see there). Defaulted so routes written
    /// before the field existed still load (they allow what the install-wide default
    /// allows).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refer_target_allow: Vec<String>,
}

impl Route {
    /// Builds the route a spec declares. The spec must have passed
    /// [`crate::validate::validate_spec`]; an invalid one yields `None`.
    pub fn from_spec(owner: Owner, spec: &PhoneNumberSpec) -> Option<Route> {
        let key = match (&spec.phone_number, &spec.pattern) {
            (Some(number), None) => RouteKey::Number(number.clone()),
            (None, Some(pattern)) => RouteKey::Pattern(pattern.clone()),
            _ => return None,
        };
        let app = |url: &Option<String>, method: HttpMethod| {
            url.as_ref().map(|url| AppUrl {
                url: url.clone(),
                method,
            })
        };
        Some(Route {
            key,
            owner,
            priority: spec.priority.unwrap_or(0),
            friendly_name: spec.friendly_name.clone(),
            voice: AppUrl {
                url: spec.voice_url.clone(),
                method: spec.voice_method,
            },
            voice_fallback: app(&spec.voice_fallback_url, spec.voice_fallback_method),
            refer: app(&spec.refer_url, spec.refer_method),
            status_callback: spec.status_callback.clone(),
            refer_target_allow: spec.refer_target_allow.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_written_before_refer_target_allow_still_load() {
        // A Redis entry written by an operator that did not know the field.
        let old = r#"{"key":{"kind":"number","value":"+15551230001"},"owner":"telephony/a",
            "voice":{"url":"http://apps.example/a.xml","method":"POST"}}"#;
        let route: Route = serde_json::from_str(old).expect("an old route loads");
        assert!(route.refer_target_allow.is_empty());
        // And the field round-trips when set.
        let mut with = route.clone();
        with.refer_target_allow = vec![r"\+1555\d+".into()];
        let json = serde_json::to_string(&with).unwrap();
        assert!(
            json.contains(r#""referTargetAllow":["\\+1555\\d+"]"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Route>(&json).unwrap(), with);
    }
}
