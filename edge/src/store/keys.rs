//! Call identifiers and the Redis key space of a call (version 2).
//!
//! Every key one call touches carries the hash tag of the call's **bucket**, `{<tag>}`
//! (2 lowercase hex characters, [`BUCKETS`] of them). In Redis Cluster a hash tag decides
//! the slot, so a call's hash, its dialog index entries and the timer set of its bucket
//! all live in one slot, and each transition of the call is one Lua script on one node.
//!
//! Why buckets, not one tag per call: timers must be found without scanning every call,
//! so they sit in sorted sets; a sorted set per bucket can be written atomically with the
//! calls of its bucket, and there are few enough of them to poll. 256 buckets spread
//! over 256 slots, which Redis Cluster deals out to its masters like any other slots.
//!
//! The bucket is derived from what arrives on the wire, a SIP Call-ID. Call-IDs the edge
//! generates embed it ([`edge_call_id`]), so an in-dialog request on an outbound leg
//! finds the same bucket as the inbound leg of the same call.

use rand::Rng;

/// How many buckets calls are spread over. Part of the key-space version: changing it
/// moves every call to another bucket.
pub const BUCKETS: u64 = 256;
/// Length of a hash tag in hex characters.
pub const TAG_LEN: usize = 2;
/// Length of a call sid: `CA` + 32 hex characters, the bucket's tag first.
pub const SID_LEN: usize = 34;
/// Prefix of every call-state key.
pub const KEY_PREFIX: &str = "sy:v2:";

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 64-bit FNV-1a: stable across processes, versions and architectures (unlike std's
/// `DefaultHasher`, which is randomly seeded), so every pod derives the same bucket.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// The tag of bucket `bucket` (taken modulo [`BUCKETS`]).
pub fn bucket_tag(bucket: u64) -> String {
    format!("{:02x}", bucket % BUCKETS)
}

/// Every bucket's tag, for polling their timers.
pub fn all_tags() -> impl Iterator<Item = String> {
    (0..BUCKETS).map(bucket_tag)
}

/// A Call-ID for a leg the edge originates: `sy<tag>-<leg>@<host>`. The embedded tag
/// sends requests of that dialog to the call's bucket.
pub fn edge_call_id(tag: &str, leg: &str, host: &str) -> String {
    format!("sy{tag}-{leg}@{host}")
}

/// The bucket tag a Call-ID belongs to: the embedded tag of an edge-generated Call-ID,
/// otherwise a stable hash of the whole Call-ID.
pub fn tag_for_sip_call_id(sip_call_id: &str) -> String {
    // A dialog id (`dialog_id`) hashes by its Call-ID part.
    let sip_call_id = sip_call_id.split(' ').next().unwrap_or(sip_call_id);
    if let Some(rest) = sip_call_id.strip_prefix("sy")
        && let Some(tag) = rest.get(..TAG_LEN)
        && rest.as_bytes().get(TAG_LEN) == Some(&b'-')
        && is_lower_hex(tag)
    {
        return tag.to_owned();
    }
    bucket_tag(fnv1a64(sip_call_id.as_bytes()))
}

/// A new call sid in bucket `tag`: `CA` + tag + 30 random hex (34 characters, shaped like
/// Restcomm/Twilio CallSids).
pub fn new_call_sid(tag: &str) -> String {
    let random: u128 = rand::rng().random();
    format!("CA{tag}{:030x}", random >> 8)
}

/// The bucket tag of a sid made by [`new_call_sid`]; `None` for anything else.
pub fn tag_of_sid(sid: &str) -> Option<&str> {
    let rest = sid.strip_prefix("CA")?;
    if sid.len() != SID_LEN || !is_lower_hex(rest) {
        return None;
    }
    rest.get(..TAG_LEN)
}

/// Key names of one call.
#[derive(Debug, Clone)]
pub struct CallKeys {
    pub tag: String,
    /// `sy:v2:call:{<tag>}:<sid>`: hash with `v` (version) and `d` (data), plus the
    /// bookkeeping fields the scripts keep: `c:<leg>` per CSeq counter, `o` and `e` for
    /// the ownership lease.
    pub call: String,
}

impl CallKeys {
    pub fn new(sid: &str) -> Option<Self> {
        let tag = tag_of_sid(sid)?;
        Some(CallKeys {
            call: format!("{}{sid}", call_prefix(tag)),
            tag: tag.to_owned(),
        })
    }

    /// The timer set of the call's bucket.
    pub fn timers(&self) -> String {
        timers_key(&self.tag)
    }

    /// Prefix of the dialog index keys in this call's bucket.
    pub fn dialog_prefix(&self) -> String {
        dialog_prefix(&self.tag)
    }
}

/// `sy:v2:call:{<tag>}:`: the calls of a bucket (the sid follows).
pub fn call_prefix(tag: &str) -> String {
    format!("{KEY_PREFIX}call:{{{tag}}}:")
}

fn dialog_prefix(tag: &str) -> String {
    format!("{KEY_PREFIX}dlg:{{{tag}}}:")
}

/// `sy:v2:timers:{<tag>}`: sorted set of the bucket's timers (score: due time in ms
/// since the Unix epoch, member: sid).
pub fn timers_key(tag: &str) -> String {
    format!("{KEY_PREFIX}timers:{{{tag}}}")
}

/// What the dialog index is keyed by: the SIP Call-ID and this edge's tag in the dialog,
/// joined by a space (which no Call-ID contains). The Call-ID alone is not enough: when
/// the edge calls itself (a `<Number>` routed back through the edge), one SIP dialog has
/// both of its ends in two different calls, told apart by their local tags.
pub fn dialog_id(sip_call_id: &str, local_tag: &str) -> String {
    format!("{sip_call_id} {local_tag}")
}

/// `sy:v2:dlg:{<tag>}:<dialog-id>`: which call a dialog belongs to.
pub fn dialog_key(dialog_id: &str) -> String {
    format!(
        "{}{dialog_id}",
        dialog_prefix(&tag_for_sip_call_id(dialog_id))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_call_ids_carry_their_tag() {
        let tag = "3f";
        let id = edge_call_id(tag, "b", "edge.example");
        assert_eq!(id, "sy3f-b@edge.example");
        assert_eq!(tag_for_sip_call_id(&id), tag);
        assert_eq!(tag_for_sip_call_id(&dialog_id(&id, "xyz")), tag);
    }

    #[test]
    fn foreign_call_ids_hash_stably_into_the_buckets() {
        let id = "a84b4c76e66710@pc33.atlanta.com";
        let tag = tag_for_sip_call_id(id);
        assert_eq!(tag.len(), TAG_LEN);
        assert!(is_lower_hex(&tag));
        assert_eq!(tag, tag_for_sip_call_id(id));
        // FNV-1a 64 of the empty string is its offset basis, 0xcbf29ce484222325: pins the
        // algorithm and the bucket count, so a change (which would orphan every live
        // call on upgrade) fails here.
        assert_eq!(tag_for_sip_call_id(""), "25");
        // Look-alikes that are not edge Call-IDs are hashed, not trusted.
        for id in ["sy3F-b@h", "sy3-b@h", "sy3fx", "sy3f"] {
            assert_eq!(
                tag_for_sip_call_id(id),
                bucket_tag(fnv1a64(id.as_bytes())),
                "{id}"
            );
        }
        // Multi-byte input must not panic on slicing.
        let _ = tag_for_sip_call_id("syé-b@h");
        // Many Call-IDs use many buckets.
        let used: std::collections::HashSet<String> = (0..5000)
            .map(|n| tag_for_sip_call_id(&format!("{n}@host")))
            .collect();
        assert_eq!(used.len() as u64, BUCKETS);
    }

    #[test]
    fn sids_embed_the_tag() {
        let tag = "fe";
        let sid = new_call_sid(tag);
        assert_eq!(sid.len(), SID_LEN);
        assert!(sid.starts_with("CAfe"));
        assert_eq!(tag_of_sid(&sid), Some(tag));
        assert_ne!(sid, new_call_sid(tag));
        for bad in [
            "",
            "CA",
            "XAfedcba9876543210fedcba9876543210",
            "CAFEDCBA9876543210fedcba9876543210",
            "CAfedcba9876543210fedcba987654321é",
            "CAfedcba9876543210fedcba987654321",
        ] {
            assert_eq!(tag_of_sid(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let sid = new_call_sid("aa");
        let keys = CallKeys::new(&sid).expect("a valid sid");
        assert_eq!(keys.call, format!("sy:v2:call:{{aa}}:{sid}"));
        assert_eq!(keys.timers(), "sy:v2:timers:{aa}");
        let id = dialog_id(&edge_call_id("aa", "b", "h"), "t1");
        assert_eq!(dialog_key(&id), format!("{}{id}", keys.dialog_prefix()));
        assert_eq!(all_tags().count() as u64, BUCKETS);
        assert_eq!(all_tags().last().as_deref(), Some("ff"));
    }
}
