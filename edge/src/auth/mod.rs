//! Optional digest authentication of the requests that can cost money: new calls
//! (INVITE) and transfers (REFER), for the clients in `--auth-credentials`.
//!
//! The edge is the UAS for the caller, so it challenges with `401` and
//! `WWW-Authenticate` (RFC 3261 §22.2), one header per algorithm in order of preference
//! (RFC 8760 §2.4: a client answers the first it supports). Retried requests may reach
//! any edge process: nonces are verified statelessly ([`nonce`]).
//!
//! - [`digest`]: algorithms, the `Authorization` header, the expected response;
//! - [`nonce`]: nonces every pod can verify;
//! - [`credentials`]: the users and their passwords or HA1s.

pub mod credentials;
pub mod digest;
pub mod nonce;

use std::net::IpAddr;
use std::time::Duration;

use rsip::{Header, Method, Request, Response};

use crate::cidr::{Cidr, any_contains};
use crate::sip::message::SipHeaders;
use credentials::Credentials;
use digest::{Algorithm, DigestCredentials, constant_time_eq};
use nonce::{NonceCheck, NonceKey};

/// What authentication needs, from the command line.
pub struct AuthConfig {
    pub realm: String,
    pub credentials: Credentials,
    pub nonce_secret: Vec<u8>,
    pub nonce_lifetime: Duration,
    /// Methods that must authenticate (INVITE: new calls only; re-INVITEs inside a call
    /// are relayed without a challenge).
    pub methods: Vec<Method>,
    /// Sources that need not authenticate (a trunk).
    pub trusted: Vec<Cidr>,
    /// Offered in this order.
    pub algorithms: Vec<Algorithm>,
}

/// The outcome of checking one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The method need not authenticate.
    NotRequired,
    /// From a trusted source.
    Trusted,
    Authenticated {
        user: String,
    },
    /// Answer 401 with a fresh challenge (`stale`: the old nonce was ours but expired).
    Challenge {
        stale: bool,
        reason: &'static str,
    },
    /// Answer 403: credentials that answer a valid challenge, but wrongly.
    Refused {
        reason: &'static str,
    },
}

impl Verdict {
    /// The metric label.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::NotRequired => "not_required",
            Verdict::Trusted => "trusted",
            Verdict::Authenticated { .. } => "authenticated",
            Verdict::Challenge { stale: false, .. } => "challenged",
            Verdict::Challenge { stale: true, .. } => "stale",
            Verdict::Refused { .. } => "refused",
        }
    }
}

pub struct Authenticator {
    realm: String,
    credentials: Credentials,
    nonces: NonceKey,
    methods: Vec<Method>,
    trusted: Vec<Cidr>,
    algorithms: Vec<Algorithm>,
}

/// Whether the `uri` parameter names the Request-URI: the response is computed over it,
/// so without this check a response captured for one number could be replayed in an
/// INVITE to another.
fn same_uri(request: &Request, uri: &str) -> bool {
    let request_uri = request.uri.to_string();
    if request_uri == uri {
        return true;
    }
    crate::sip::message::parse_uri(uri).is_some_and(|parsed| parsed == request.uri)
}

impl Authenticator {
    pub fn new(config: AuthConfig) -> Self {
        Authenticator {
            nonces: NonceKey::new(&config.nonce_secret, &config.realm, config.nonce_lifetime),
            realm: config.realm,
            credentials: config.credentials,
            methods: config.methods,
            trusted: config.trusted,
            algorithms: config.algorithms,
        }
    }

    /// Whether `method` must authenticate (`in_dialog`: the request is inside a call).
    pub fn covers(&self, method: &Method, in_dialog: bool) -> bool {
        self.methods.contains(method) && !(in_dialog && *method == Method::Invite)
    }

    /// Checks a request from `source`.
    pub fn check(&self, request: &Request, source: IpAddr, in_dialog: bool) -> Verdict {
        if !self.covers(&request.method, in_dialog) {
            return Verdict::NotRequired;
        }
        if any_contains(&self.trusted, source.to_canonical()) {
            return Verdict::Trusted;
        }
        let ours: Vec<DigestCredentials> = request
            .header_values("Authorization")
            .iter()
            .filter_map(|value| DigestCredentials::parse(value).ok())
            .filter(|c| c.realm == self.realm)
            .collect();
        let Some(credentials) = ours.into_iter().next() else {
            let reason = if request.header_value("Authorization").is_some() {
                "no usable credentials for this realm"
            } else {
                "authentication required"
            };
            return Verdict::Challenge {
                stale: false,
                reason,
            };
        };
        let algorithm = credentials
            .algorithm
            .as_deref()
            .map_or(Some(Algorithm::Md5), Algorithm::from_name)
            .filter(|a| self.algorithms.contains(a));
        let Some(algorithm) = algorithm else {
            return Verdict::Challenge {
                stale: false,
                reason: "digest algorithm not offered",
            };
        };
        match self.nonces.check(&credentials.nonce) {
            NonceCheck::Fresh => {}
            NonceCheck::Stale => {
                return Verdict::Challenge {
                    stale: true,
                    reason: "nonce expired",
                };
            }
            NonceCheck::Foreign => {
                return Verdict::Challenge {
                    stale: false,
                    reason: "nonce not issued by this service",
                };
            }
        }
        if !same_uri(request, &credentials.uri) {
            return Verdict::Refused {
                reason: "credentials are for another Request-URI",
            };
        }
        let expected = self
            .credentials
            .ha1(&credentials.username, &self.realm, algorithm)
            .and_then(|ha1| {
                credentials.expected_response(algorithm, &ha1, &request.method.to_string())
            });
        // Unknown users and wrong passwords get the same answer: a scanner learns nothing
        // about which users exist.
        match expected {
            Some(expected)
                if constant_time_eq(expected.as_bytes(), credentials.response.as_bytes()) =>
            {
                Verdict::Authenticated {
                    user: credentials.username,
                }
            }
            _ => Verdict::Refused {
                reason: "bad credentials",
            },
        }
    }

    /// The `WWW-Authenticate` headers of a challenge: one per algorithm, fresh nonces.
    pub fn challenge_headers(&self, stale: bool) -> Vec<Header> {
        self.algorithms
            .iter()
            .map(|algorithm| {
                let stale = if stale { ", stale=true" } else { "" };
                Header::Other(
                    "WWW-Authenticate".into(),
                    format!(
                        "Digest realm=\"{}\", nonce=\"{}\", algorithm={}, qop=\"auth\"{stale}",
                        self.realm,
                        self.nonces.issue(),
                        algorithm.name()
                    ),
                )
            })
            .collect()
    }

    /// A 401 challenge to `request` with a `Reason`.
    pub fn challenge(&self, request: &Request, stale: bool, reason: &str) -> Response {
        let mut response = crate::call::refusal(request, 401, reason, None);
        response.headers.extend(self.challenge_headers(stale));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"a nonce secret shared by every pod";

    fn authenticator(algorithms: &[Algorithm], trusted: &[&str]) -> Authenticator {
        Authenticator::new(AuthConfig {
            realm: "switchyard".into(),
            credentials: Credentials::parse("alice:wonderland\n").unwrap(),
            nonce_secret: SECRET.to_vec(),
            nonce_lifetime: Duration::from_secs(300),
            methods: vec![Method::Invite, Method::Refer],
            trusted: trusted.iter().map(|c| c.parse().unwrap()).collect(),
            algorithms: algorithms.to_vec(),
        })
    }

    fn request(method: &str, uri: &str, authorization: Option<&str>) -> Request {
        let authorization = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let text = format!(
            "{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK1\r\nFrom: <sip:alice@192.0.2.1>;tag=a\r\nTo: <{uri}>\r\nCall-ID: c1\r\nCSeq: 1 {method}\r\nMax-Forwards: 70\r\n{authorization}Content-Length: 0\r\n\r\n"
        );
        match crate::sip::message::parse(text.as_bytes()) {
            Ok(rsip::SipMessage::Request(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn nonce_of(header: &Header) -> String {
        let text = header.to_string();
        let start = text.find("nonce=\"").unwrap() + 7;
        text[start..start + text[start..].find('"').unwrap()].to_owned()
    }

    /// What a client computes for a challenge (RFC 7616 with qop=auth).
    fn answer(
        algorithm: Algorithm,
        nonce: &str,
        method: &str,
        uri: &str,
        password: &str,
    ) -> String {
        let ha1 = algorithm.ha1("alice", "switchyard", password);
        let ha2 = algorithm.hash_hex(&format!("{method}:{uri}"));
        let response = algorithm.hash_hex(&format!("{ha1}:{nonce}:00000001:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"alice\", realm=\"switchyard\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm={}, qop=auth, nc=00000001, cnonce=\"c0ffee\"",
            algorithm.name()
        )
    }

    const SOURCE: &str = "198.51.100.20";

    #[test]
    fn a_request_without_credentials_is_challenged_with_each_algorithm_in_order() {
        let auth = authenticator(&[Algorithm::Sha256, Algorithm::Md5], &[]);
        let invite = request("INVITE", "sip:+15551230001@edge", None);
        assert_eq!(
            auth.check(&invite, SOURCE.parse().unwrap(), false),
            Verdict::Challenge {
                stale: false,
                reason: "authentication required"
            }
        );
        let response = auth.challenge(&invite, false, "authentication required");
        assert_eq!(response.status_code.code(), 401);
        let text = response.to_string();
        let sha = text.find("algorithm=SHA-256").unwrap();
        let md5 = text.find("algorithm=MD5").unwrap();
        assert!(sha < md5, "{text}");
        assert!(text.contains("Reason: SIP;cause=401;"), "{text}");
        assert!(text.contains("qop=\"auth\""), "{text}");
    }

    #[test]
    fn the_right_answer_authenticates_with_either_algorithm_on_another_instance() {
        for algorithm in [Algorithm::Md5, Algorithm::Sha256] {
            let challenger = authenticator(&[Algorithm::Sha256, Algorithm::Md5], &[]);
            let verifier = authenticator(&[Algorithm::Sha256, Algorithm::Md5], &[]);
            let nonce = nonce_of(&challenger.challenge_headers(false)[0]);
            let uri = "sip:+15551230001@edge";
            let invite = request(
                "INVITE",
                uri,
                Some(&answer(algorithm, &nonce, "INVITE", uri, "wonderland")),
            );
            assert_eq!(
                verifier.check(&invite, SOURCE.parse().unwrap(), false),
                Verdict::Authenticated {
                    user: "alice".into()
                },
                "{algorithm:?}"
            );
        }
    }

    #[test]
    fn a_wrong_password_or_another_uri_or_method_is_refused() {
        let auth = authenticator(&[Algorithm::Md5], &[]);
        let nonce = nonce_of(&auth.challenge_headers(false)[0]);
        let uri = "sip:+15551230001@edge";
        let source = SOURCE.parse().unwrap();
        let wrong = request(
            "INVITE",
            uri,
            Some(&answer(Algorithm::Md5, &nonce, "INVITE", uri, "guess")),
        );
        assert_eq!(
            auth.check(&wrong, source, false),
            Verdict::Refused {
                reason: "bad credentials"
            }
        );
        // A response captured for number A, replayed in an INVITE to a premium number.
        let replayed = request(
            "INVITE",
            "sip:+19005550100@edge",
            Some(&answer(Algorithm::Md5, &nonce, "INVITE", uri, "wonderland")),
        );
        assert!(matches!(
            auth.check(&replayed, source, false),
            Verdict::Refused { .. }
        ));
        // A response computed for INVITE does not authenticate a REFER.
        let refer = request(
            "REFER",
            uri,
            Some(&answer(Algorithm::Md5, &nonce, "INVITE", uri, "wonderland")),
        );
        assert!(matches!(
            auth.check(&refer, source, true),
            Verdict::Refused { .. }
        ));
    }

    #[test]
    fn foreign_or_expired_nonces_and_unoffered_algorithms_get_a_new_challenge() {
        let auth = authenticator(&[Algorithm::Md5], &[]);
        let uri = "sip:+15551230001@edge";
        let source = SOURCE.parse().unwrap();
        let forged = request(
            "INVITE",
            uri,
            Some(&answer(
                Algorithm::Md5,
                "abcdef",
                "INVITE",
                uri,
                "wonderland",
            )),
        );
        assert!(matches!(
            auth.check(&forged, source, false),
            Verdict::Challenge { stale: false, .. }
        ));
        let other_install = NonceKey::new(
            b"another install's secret",
            "switchyard",
            Duration::from_secs(300),
        );
        let theirs = request(
            "INVITE",
            uri,
            Some(&answer(
                Algorithm::Md5,
                &other_install.issue(),
                "INVITE",
                uri,
                "wonderland",
            )),
        );
        assert!(matches!(
            auth.check(&theirs, source, false),
            Verdict::Challenge { stale: false, .. }
        ));
        // Signed with our secret ten minutes ago: older than the 300 s lifetime.
        let old_nonce = NonceKey::new(SECRET, "switchyard", Duration::from_secs(300))
            .issue_at(nonce::now_seconds() - 600);
        let stale = request(
            "INVITE",
            uri,
            Some(&answer(
                Algorithm::Md5,
                &old_nonce,
                "INVITE",
                uri,
                "wonderland",
            )),
        );
        assert_eq!(
            auth.check(&stale, source, false),
            Verdict::Challenge {
                stale: true,
                reason: "nonce expired"
            }
        );
        let nonce = nonce_of(&auth.challenge_headers(false)[0]);
        let sha = request(
            "INVITE",
            uri,
            Some(&answer(
                Algorithm::Sha256,
                &nonce,
                "INVITE",
                uri,
                "wonderland",
            )),
        );
        assert!(
            matches!(auth.check(&sha, source, false), Verdict::Challenge { .. }),
            "SHA-256 not offered"
        );
    }

    #[test]
    fn trusted_sources_other_methods_and_re_invites_need_no_credentials() {
        let auth = authenticator(&[Algorithm::Md5], &["192.0.2.0/24"]);
        let invite = request("INVITE", "sip:+15551230001@edge", None);
        assert_eq!(
            auth.check(&invite, "192.0.2.9".parse().unwrap(), false),
            Verdict::Trusted
        );
        assert_eq!(
            auth.check(&invite, SOURCE.parse().unwrap(), true),
            Verdict::NotRequired,
            "a re-INVITE"
        );
        let bye = request("BYE", "sip:+15551230001@edge", None);
        assert_eq!(
            auth.check(&bye, SOURCE.parse().unwrap(), true),
            Verdict::NotRequired
        );
        let refer = request("REFER", "sip:+15551230001@edge", None);
        assert!(matches!(
            auth.check(&refer, SOURCE.parse().unwrap(), true),
            Verdict::Challenge { .. }
        ));
    }
}
