//! The clients that may authenticate, from a file (a Kubernetes Secret mounted as a
//! file). One client a line, `user:secret`; `#` starts a comment line:
//!
//! ```text
//! alice:correct horse battery staple      a password
//! bob:md5:3f1e...(32 hex digits)           HA1 = MD5(user:realm:password), MD5 only
//! bob:sha-256:9a0c...(64 hex digits)       HA1 for SHA-256
//! ```
//!
//! An HA1 keeps the password itself out of the Secret; it is only good for its realm and
//! its algorithm, so a client with only an MD5 HA1 cannot answer a SHA-256 challenge. A
//! password that happens to look like `md5:` + 32 hex digits is read as an HA1.

use std::collections::HashMap;
use std::path::Path;

use crate::auth::digest::Algorithm;

#[derive(Debug, Clone, Default)]
struct Secret {
    password: Option<String>,
    ha1: HashMap<Algorithm, String>,
}

/// Users and their passwords or HA1s.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    users: HashMap<String, Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("no credentials in the file")]
    Empty,
}

/// `md5:<hex>` or `sha-256:<hex>` with the right number of digits: an HA1.
fn as_ha1(secret: &str) -> Option<(Algorithm, String)> {
    let (name, hash) = secret.split_once(':')?;
    let algorithm = Algorithm::from_name(name)?;
    (hash.len() == algorithm.hex_len() && hash.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| (algorithm, hash.to_ascii_lowercase()))
}

impl Credentials {
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let text = std::fs::read_to_string(path).map_err(|source| CredentialsError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, CredentialsError> {
        let mut users: HashMap<String, Secret> = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |message: &str| CredentialsError::Line {
                line: index + 1,
                message: message.to_owned(),
            };
            let (user, secret) = line
                .split_once(':')
                .ok_or_else(|| error("expected user:password or user:md5|sha-256:HA1"))?;
            let user = user.trim();
            if user.is_empty() || user.contains(|c: char| c.is_whitespace() || c == '"') {
                return Err(error(
                    "a user name must be non-empty, without spaces or quotes",
                ));
            }
            if secret.is_empty() {
                return Err(error("empty password"));
            }
            let entry = users.entry(user.to_owned()).or_default();
            match as_ha1(secret) {
                Some((algorithm, ha1)) => {
                    if entry.ha1.insert(algorithm, ha1).is_some() {
                        return Err(error(&format!(
                            "a second {} HA1 for {user}",
                            algorithm.name()
                        )));
                    }
                }
                None => {
                    if entry.password.replace(secret.to_owned()).is_some() {
                        return Err(error(&format!("a second password for {user}")));
                    }
                }
            }
        }
        if users.is_empty() {
            return Err(CredentialsError::Empty);
        }
        Ok(Credentials { users })
    }

    /// The HA1 of `user` for `algorithm` in `realm`: computed from the password, or as
    /// given. `None` for an unknown user or one without a secret for this algorithm.
    pub fn ha1(&self, user: &str, realm: &str, algorithm: Algorithm) -> Option<String> {
        let secret = self.users.get(user)?;
        if let Some(password) = &secret.password {
            return Some(algorithm.ha1(user, realm, password));
        }
        secret.ha1.get(&algorithm).cloned()
    }

    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_ha1s_give_the_same_ha1() {
        let md5 = Algorithm::Md5.ha1("bob", "switchyard", "pw");
        let text = format!(
            "# clients\nalice:s3cret with spaces\n\nbob:md5:{}\n",
            md5.to_uppercase()
        );
        let credentials = Credentials::parse(&text).unwrap();
        assert_eq!(credentials.len(), 2);
        assert_eq!(
            credentials.ha1("alice", "switchyard", Algorithm::Sha256),
            Some(Algorithm::Sha256.ha1("alice", "switchyard", "s3cret with spaces"))
        );
        assert_eq!(
            credentials.ha1("bob", "switchyard", Algorithm::Md5),
            Some(md5)
        );
        assert_eq!(
            credentials.ha1("bob", "switchyard", Algorithm::Sha256),
            None,
            "no SHA-256 HA1"
        );
        assert_eq!(credentials.ha1("carol", "switchyard", Algorithm::Md5), None);
    }

    #[test]
    fn a_password_that_is_not_a_well_formed_ha1_stays_a_password() {
        let credentials = Credentials::parse("dave:md5:notahash\n").unwrap();
        assert_eq!(
            credentials.ha1("dave", "r", Algorithm::Md5),
            Some(Algorithm::Md5.ha1("dave", "r", "md5:notahash"))
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        for (text, line) in [
            ("alice:pw\nno-colon\n", 2),
            (":pw\n", 1),
            ("alice:\n", 1),
            ("alice:one\nalice:two\n", 2),
            ("a b:pw\n", 1),
        ] {
            match Credentials::parse(text) {
                Err(CredentialsError::Line { line: l, .. }) => assert_eq!(l, line, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        assert!(matches!(
            Credentials::parse("# nothing\n"),
            Err(CredentialsError::Empty)
        ));
    }
}
