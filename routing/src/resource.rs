//! The `PhoneNumber` custom resource (group `switchyard.dev`, version `v1alpha1`).
//!
//! Field names follow Restcomm's IncomingPhoneNumber resource (VoiceUrl, ReferUrl, ...),
//! camelCased as Kubernetes APIs are. Everything a schema can check is declared here so
//! `kubectl apply` rejects it; [`crate::validate`] re-checks the rest (a regex that does
//! not compile) for the operator and for standalone manifests.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// An absolute `http`/`https` URL, or a `file:` URL (standalone mode; relative paths are
/// resolved against the manifest's directory).
pub const URL_PATTERN: &str = r"^(https?://[^\s/?#]+[^\s]*|file:[^\s]+)$";

/// Digits with an optional leading `+` (E.164-like), or a SIP user part
/// (RFC 3261 `user` characters: unreserved, escaped and user-unreserved).
pub const NUMBER_PATTERN: &str = r"^(\+?[0-9]{1,32}|[A-Za-z0-9\-_.!~*'()&=+$,;?/%]{1,128})$";

/// How Switchyard fetches an RCML document (Restcomm's `VoiceMethod`, `ReferMethod`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum HttpMethod {
    #[serde(rename = "GET")]
    Get,
    #[default]
    #[serde(rename = "POST")]
    Post,
}

impl HttpMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
        }
    }
}

impl std::fmt::Display for HttpMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A number (or a pattern of numbers) that Switchyard answers, and the RCML applications
/// that run for it: `voiceUrl` for calls to it, `referUrl` when a party of such a call
/// presses Blind Transfer.
// kube's printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "switchyard.dev",
    version = "v1alpha1",
    kind = "PhoneNumber",
    plural = "phonenumbers",
    singular = "phonenumber",
    shortname = "pn",
    category = "switchyard",
    namespaced,
    status = "PhoneNumberStatus",
    doc = "A phone number (or number pattern) served by Switchyard, with the RCML applications for its calls and transfers",
    printcolumn(name = "Number", type_ = "string", json_path = ".spec.phoneNumber"),
    printcolumn(
        name = "Pattern",
        type_ = "string",
        json_path = ".spec.pattern",
        priority = "1"
    ),
    printcolumn(name = "Refer URL", type_ = "string", json_path = ".spec.referUrl"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("has(self.phoneNumber) != has(self.pattern)")
    .message("exactly one of phoneNumber and pattern must be set"))]
#[x_kube(validation = Rule::new("!has(self.priority) || has(self.pattern)")
    .message("priority applies to patterns only"))]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumberSpec {
    /// The exact number this resource answers: digits with an optional leading `+`, or a
    /// SIP user part. Calls match it with and without the leading `+`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = NUMBER_PATTERN))]
    pub phone_number: Option<String>,

    /// A regular expression (Rust `regex` syntax) matched against the whole dialled
    /// number, instead of `phoneNumber` (Restcomm's regex support).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub pattern: Option<String>,

    /// Among patterns that match, the highest priority wins; ties go to the longest pattern.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = -1000, max = 1000))]
    pub priority: Option<i32>,

    /// A human-readable label (Restcomm's FriendlyName).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub friendly_name: Option<String>,

    /// The RCML application run for calls to this number.
    #[schemars(regex(pattern = URL_PATTERN))]
    pub voice_url: String,

    /// How `voiceUrl` is fetched.
    #[serde(default)]
    pub voice_method: HttpMethod,

    /// Fetched when `voiceUrl` fails (unreachable, error status, malformed RCML).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN))]
    pub voice_fallback_url: Option<String>,

    /// How `voiceFallbackUrl` is fetched.
    #[serde(default)]
    pub voice_fallback_method: HttpMethod,

    /// The refer application (Restcomm's "Refer URL"): run when a party of a call to this
    /// number sends a blind-transfer REFER, with `Transferor`, `Transferee` and
    /// `ReferTarget`. Without it, transfers on this number are refused (403).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN))]
    pub refer_url: Option<String>,

    /// How `referUrl` is fetched.
    #[serde(default)]
    pub refer_method: HttpMethod,

    /// Which transfer targets a REFER on a call to this number may ask for: regular
    /// expressions (Rust `regex` syntax), each matched against the whole `ReferTarget`
    /// (the Refer-To user part, e.g. `+15551230002`) and against the whole Refer-To URI
    /// (e.g. `sip:+15551230002@edge.example`); a target is allowed when any expression
    /// matches either. Other targets are refused with 403 (toll-fraud protection). Empty
    /// or absent: the edge's install-wide `--refer-target-allow` applies, and when that
    /// is empty too, every target is allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 256)))]
    pub refer_target_allow: Vec<String>,

    /// Receives call status changes (Restcomm's StatusCallback).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = URL_PATTERN))]
    pub status_callback: Option<String>,
}

/// What the operator last did with a PhoneNumber.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhoneNumberStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Standard conditions; `Ready` says whether the route is programmed in Redis.
    /// A list map keyed by `type`, so server-side apply merges conditions by type.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

impl PhoneNumberSpec {
    /// The number or the pattern, whichever is set: what kubectl users see as "Number".
    pub fn number_or_pattern(&self) -> &str {
        self.phone_number
            .as_deref()
            .or(self.pattern.as_deref())
            .unwrap_or_default()
    }
}
