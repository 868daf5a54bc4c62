//! Nonces that any edge process can verify without shared state.
//!
//! Edge pods are stateless and the retried request after a 401 may reach another pod, so
//! a nonce carries its own proof: `hex(issued-at seconds, 16 digits) || hex(8 random
//! bytes) || hex(HMAC-SHA-256(secret, realm:issued:random), first 16 bytes)`. Every pod
//! has the same secret (`--auth-nonce-secret`, from one Kubernetes Secret), so every pod
//! recomputes the MAC: a nonce is accepted when the MAC matches and it is younger than
//! the lifetime. What that does and does not protect against is in `docs/security.md`
//! (replays within the lifetime are possible: there is no shared nonce-count state).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use ring::hmac;

use crate::auth::digest::{constant_time_eq, hex};

/// How far in the future a nonce's issue time may be: pods' clocks differ a little.
const CLOCK_SKEW: Duration = Duration::from_secs(30);
const TIME_HEX: usize = 16;
const RANDOM_HEX: usize = 16;
const MAC_BYTES: usize = 16;
const NONCE_LEN: usize = TIME_HEX + RANDOM_HEX + MAC_BYTES * 2;

/// What a nonce turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by an edge of this install, within its lifetime.
    Fresh,
    /// Issued by an edge of this install, but too old: the client should retry with a
    /// new one without asking its user again (`stale=true`, RFC 7616 §3.3).
    Stale,
    /// Not one of ours (forged, another install, another realm, garbled).
    Foreign,
}

/// Issues and verifies nonces with the install-wide secret.
pub struct NonceKey {
    key: hmac::Key,
    realm: String,
    lifetime: Duration,
}

pub(crate) fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl NonceKey {
    pub fn new(secret: &[u8], realm: &str, lifetime: Duration) -> Self {
        NonceKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            realm: realm.to_owned(),
            lifetime,
        }
    }

    fn mac(&self, issued_and_random: &str) -> String {
        let tag = hmac::sign(
            &self.key,
            format!("{}:{issued_and_random}", self.realm).as_bytes(),
        );
        hex(&tag.as_ref()[..MAC_BYTES])
    }

    /// A new nonce.
    pub fn issue(&self) -> String {
        self.issue_at(now_seconds())
    }

    pub(crate) fn issue_at(&self, issued: u64) -> String {
        let mut random = [0u8; RANDOM_HEX / 2];
        rand::rng().fill_bytes(&mut random);
        let body = format!("{issued:016x}{}", hex(&random));
        let mac = self.mac(&body);
        format!("{body}{mac}")
    }

    pub fn check(&self, nonce: &str) -> NonceCheck {
        self.check_at(nonce, now_seconds())
    }

    fn check_at(&self, nonce: &str, now: u64) -> NonceCheck {
        if nonce.len() != NONCE_LEN || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return NonceCheck::Foreign;
        }
        let (body, mac) = nonce.split_at(TIME_HEX + RANDOM_HEX);
        if !constant_time_eq(
            self.mac(body).as_bytes(),
            mac.to_ascii_lowercase().as_bytes(),
        ) {
            return NonceCheck::Foreign;
        }
        let Ok(issued) = u64::from_str_radix(&body[..TIME_HEX], 16) else {
            return NonceCheck::Foreign;
        };
        if issued > now.saturating_add(CLOCK_SKEW.as_secs()) {
            // Signed by us but from the future: a clock far off; ask again.
            return NonceCheck::Stale;
        }
        if now.saturating_sub(issued) > self.lifetime.as_secs() {
            return NonceCheck::Stale;
        }
        NonceCheck::Fresh
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIFETIME: Duration = Duration::from_secs(300);

    #[test]
    fn a_nonce_verifies_with_the_same_secret_on_another_instance() {
        let one = NonceKey::new(b"0123456789abcdef-shared", "switchyard", LIFETIME);
        let two = NonceKey::new(b"0123456789abcdef-shared", "switchyard", LIFETIME);
        let nonce = one.issue();
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_eq!(two.check(&nonce), NonceCheck::Fresh);
        assert_ne!(one.issue(), nonce, "random part");
    }

    #[test]
    fn another_secret_or_realm_or_a_changed_byte_makes_it_foreign() {
        let key = NonceKey::new(b"0123456789abcdef-shared", "switchyard", LIFETIME);
        let nonce = key.issue();
        let other_secret = NonceKey::new(b"another-secret-0123456", "switchyard", LIFETIME);
        let other_realm = NonceKey::new(b"0123456789abcdef-shared", "elsewhere", LIFETIME);
        assert_eq!(other_secret.check(&nonce), NonceCheck::Foreign);
        assert_eq!(other_realm.check(&nonce), NonceCheck::Foreign);
        // Moving the issue time forward (to extend the lifetime) breaks the MAC.
        let mut forged = nonce.clone().into_bytes();
        forged[15] = if forged[15] == b'f' { b'e' } else { b'f' };
        let forged = String::from_utf8(forged).unwrap();
        assert_eq!(key.check(&forged), NonceCheck::Foreign);
        for junk in ["", "xyz", &"g".repeat(NONCE_LEN), &nonce[1..]] {
            assert_eq!(key.check(junk), NonceCheck::Foreign, "{junk:?}");
        }
    }

    #[test]
    fn an_old_nonce_is_stale() {
        let key = NonceKey::new(b"0123456789abcdef-shared", "switchyard", LIFETIME);
        let nonce = key.issue_at(1_000_000);
        assert_eq!(key.check_at(&nonce, 1_000_000 + 300), NonceCheck::Fresh);
        assert_eq!(key.check_at(&nonce, 1_000_000 + 301), NonceCheck::Stale);
        assert_eq!(
            key.check_at(&nonce, 1_000_000 - 10),
            NonceCheck::Fresh,
            "skew"
        );
        assert_eq!(key.check_at(&nonce, 1_000_000 - 100), NonceCheck::Stale);
    }
}
