//! HTTP Digest as SIP uses it (RFC 3261 §22.4, RFC 7616, RFC 8760): the algorithms, the
//! `Authorization` header's parameters, and the response a client must have computed.
//!
//! Only what the edge offers is supported: `MD5` and `SHA-256`, `qop=auth` (and the
//! RFC 2069 form without qop, which old phones still send). `-sess` algorithms and
//! `auth-int` are not offered, so a response using them is refused.

use std::fmt::Write as _;

use md5::Digest as _;

/// A digest algorithm the edge can challenge with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The name on the wire (`algorithm=` parameter), as RFC 7616 spells it.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// From the wire name (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("MD5") {
            Some(Algorithm::Md5)
        } else if name.eq_ignore_ascii_case("SHA-256") {
            Some(Algorithm::Sha256)
        } else {
            None
        }
    }

    /// Length of a hash in lowercase hex.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha256 => 64,
        }
    }

    /// The hash of `data`, in lowercase hex.
    pub fn hash_hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex(&md5::Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => {
                hex(ring::digest::digest(&ring::digest::SHA256, data.as_bytes()).as_ref())
            }
        }
    }

    /// HA1 of RFC 7616 §3.4.2: `H(username:realm:password)`.
    pub fn ha1(self, username: &str, realm: &str, password: &str) -> String {
        self.hash_hex(&format!("{username}:{realm}:{password}"))
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut text = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(text, "{byte:02x}");
    }
    text
}

/// Equality that takes the same time wherever the first difference is, so a response
/// cannot be guessed byte by byte from answer times.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The parameters of one `Authorization: Digest ...` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DigestCredentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    /// Absent means MD5 (RFC 7616 §3.4).
    pub algorithm: Option<String>,
    pub qop: Option<String>,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
    pub opaque: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DigestError {
    #[error("not a Digest Authorization header")]
    NotDigest,
    #[error("malformed Authorization parameters near {0:?}")]
    Malformed(String),
    #[error("Authorization parameter {0} appears twice")]
    Duplicate(String),
    #[error("Authorization without {0}")]
    Missing(&'static str),
}

/// Reads `name=value` pairs (value a token or a quoted string with `\` escapes),
/// separated by commas.
fn auth_params(mut rest: &str) -> Result<Vec<(String, String)>, DigestError> {
    let mut params = Vec::new();
    let near = |s: &str| s.chars().take(20).collect::<String>();
    loop {
        rest = rest.trim_start_matches([' ', '\t', '\r', '\n', ',']);
        if rest.is_empty() {
            return Ok(params);
        }
        let (name, after) = rest
            .split_once('=')
            .ok_or_else(|| DigestError::Malformed(near(rest)))?;
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(DigestError::Malformed(near(rest)));
        }
        let after = after.trim_start();
        let (value, remainder) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some((_, escaped)) => value.push(escaped),
                        None => break,
                    },
                    '"' => {
                        end = Some(i);
                        break;
                    }
                    _ => value.push(c),
                }
            }
            let end = end.ok_or_else(|| DigestError::Malformed(near(after)))?;
            (value, &quoted[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        let remainder = remainder.trim_start();
        if !remainder.is_empty() && !remainder.starts_with(',') {
            return Err(DigestError::Malformed(near(remainder)));
        }
        let name = name.to_ascii_lowercase();
        if params.iter().any(|(n, _)| *n == name) {
            return Err(DigestError::Duplicate(name));
        }
        params.push((name, value));
        rest = remainder;
    }
}

impl DigestCredentials {
    /// Parses an `Authorization` (or `Proxy-Authorization`) header value.
    pub fn parse(value: &str) -> Result<Self, DigestError> {
        let value = value.trim_start();
        let scheme_end = value
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(value.len());
        if !value[..scheme_end].eq_ignore_ascii_case("Digest") {
            return Err(DigestError::NotDigest);
        }
        let mut credentials = DigestCredentials::default();
        for (name, value) in auth_params(&value[scheme_end..])? {
            match name.as_str() {
                "username" => credentials.username = value,
                "realm" => credentials.realm = value,
                "nonce" => credentials.nonce = value,
                "uri" => credentials.uri = value,
                "response" => credentials.response = value.to_ascii_lowercase(),
                "algorithm" => credentials.algorithm = Some(value),
                "qop" => credentials.qop = Some(value),
                "cnonce" => credentials.cnonce = Some(value),
                "nc" => credentials.nc = Some(value),
                "opaque" => credentials.opaque = Some(value),
                _ => {} // auth-param extensions: ignored (RFC 7616 §3.4)
            }
        }
        for (field, name) in [
            (&credentials.username, "username"),
            (&credentials.realm, "realm"),
            (&credentials.nonce, "nonce"),
            (&credentials.uri, "uri"),
            (&credentials.response, "response"),
        ] {
            if field.is_empty() {
                return Err(DigestError::Missing(name));
            }
        }
        Ok(credentials)
    }

    /// The response a client knowing HA1 computes for `method` (RFC 7616 §3.4.1; RFC
    /// 2069 without qop). `None` when the qop is one the edge does not offer, or `auth`
    /// lacks its cnonce or nc.
    pub fn expected_response(
        &self,
        algorithm: Algorithm,
        ha1: &str,
        method: &str,
    ) -> Option<String> {
        let ha2 = algorithm.hash_hex(&format!("{method}:{}", self.uri));
        let nonce = &self.nonce;
        match self.qop.as_deref() {
            None => Some(algorithm.hash_hex(&format!("{ha1}:{nonce}:{ha2}"))),
            Some(qop) if qop.eq_ignore_ascii_case("auth") => {
                let cnonce = self.cnonce.as_deref().filter(|c| !c.is_empty())?;
                let nc = self.nc.as_deref().filter(|n| n.len() == 8)?;
                Some(algorithm.hash_hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")))
            }
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_2617_example_response_is_reproduced() {
        // RFC 2617 §3.5 (the HTTP example; SIP computes the same way).
        let credentials = DigestCredentials::parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com",
               nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html",
               qop=auth, nc=00000001, cnonce="0a4f113b",
               response="6629fae49393a05397450978507c4ef1",
               opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let ha1 = Algorithm::Md5.ha1("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(
            credentials.expected_response(Algorithm::Md5, &ha1, "GET"),
            Some(credentials.response.clone())
        );
    }

    #[test]
    fn the_rfc_7616_sha_256_example_response_is_reproduced() {
        // RFC 7616 §3.9.1.
        let credentials = DigestCredentials::parse(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",
               algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,
               response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        assert_eq!(credentials.algorithm.as_deref(), Some("SHA-256"));
        let ha1 = Algorithm::Sha256.ha1("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            credentials.expected_response(Algorithm::Sha256, &ha1, "GET"),
            Some(credentials.response.clone())
        );
    }

    #[test]
    fn quoted_values_keep_commas_and_escapes() {
        let credentials = DigestCredentials::parse(
            r#"digest username="a\"b,c",realm="r",nonce=n,uri="sip:x@y;transport=udp",response=ABC"#,
        )
        .unwrap();
        assert_eq!(credentials.username, "a\"b,c");
        assert_eq!(credentials.uri, "sip:x@y;transport=udp");
        assert_eq!(credentials.response, "abc", "hex compared in lowercase");
    }

    #[test]
    fn malformed_headers_are_errors_not_panics() {
        for bad in [
            "Basic dXNlcjpwYXNz",
            "Digest username=\"unterminated",
            "Digest username=\"a\" junk, realm=\"r\"",
            "Digest =x",
            "Digest username=\"a\", username=\"b\"",
            "Digest realm=\"r\", nonce=\"n\", uri=\"u\", response=\"x\"",
            "Digest",
            "",
            "Digest username=\"a\\",
        ] {
            assert!(DigestCredentials::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn qop_auth_needs_a_cnonce_and_an_eight_digit_nc_and_auth_int_is_refused() {
        let mut credentials = DigestCredentials::parse(
            "Digest username=u, realm=r, nonce=n, uri=sip:x, response=00, qop=auth, nc=00000001",
        )
        .unwrap();
        assert_eq!(
            credentials.expected_response(Algorithm::Md5, "h", "INVITE"),
            None
        );
        credentials.cnonce = Some("c".into());
        assert!(
            credentials
                .expected_response(Algorithm::Md5, "h", "INVITE")
                .is_some()
        );
        credentials.nc = Some("1".into());
        assert_eq!(
            credentials.expected_response(Algorithm::Md5, "h", "INVITE"),
            None
        );
        credentials.qop = Some("auth-int".into());
        credentials.nc = Some("00000001".into());
        assert_eq!(
            credentials.expected_response(Algorithm::Md5, "h", "INVITE"),
            None
        );
    }

    #[test]
    fn constant_time_eq_compares_whole_slices() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
