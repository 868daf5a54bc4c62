//! Call identifiers and the Redis key space of a call.
//!
//! Every key of one call carries the call's hash tag `{<tag>}` (16 lowercase hex
//! characters), so in Redis Cluster they all live in one slot and a Lua script can move
//! the call from one state to the next atomically. The tag is derived from what arrives
//! on the wire: a SIP Call-ID. Call-IDs the edge generates embed the tag
//! ([`edge_call_id`]), so an in-dialog request on an outbound leg finds the same slot as
//! the inbound leg of the same call.

use rand::Rng;

/// Length of a hash tag in hex characters (64 bits).
pub const TAG_LEN: usize = 16;
/// Length of a call sid: `CA` + tag + 16 random hex characters.
pub const SID_LEN: usize = 2 + TAG_LEN + 16;

/// The sorted set of timers (score: due time in ms since the epoch, member: sid). It is
/// a single key, so it lives in its own slot and is never touched by a call's script.
pub const TIMERS_KEY: &str = "sy:v1:timers";

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// 64-bit FNV-1a: stable across processes, versions and architectures (unlike std's
/// `DefaultHasher`, which is randomly seeded), so every pod derives the same tag.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

/// A Call-ID for a leg the edge originates: `sy<tag>-<leg>@<host>`. The embedded tag
/// sends requests of that dialog to the call's slot.
pub fn edge_call_id(tag: &str, leg: &str, host: &str) -> String {
    format!("sy{tag}-{leg}@{host}")
}

/// The hash tag a Call-ID belongs to: the embedded tag of an edge-generated Call-ID,
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
    format!("{:016x}", fnv1a64(sip_call_id.as_bytes()))
}

/// A new call sid in the call's slot: `CA` + tag + 16 random hex (34 characters, shaped
/// like Restcomm/Twilio CallSids).
pub fn new_call_sid(tag: &str) -> String {
    format!("CA{tag}{:016x}", rand::rng().random::<u64>())
}

/// The hash tag of a sid made by [`new_call_sid`]; `None` for anything else.
pub fn tag_of_sid(sid: &str) -> Option<&str> {
    let rest = sid.strip_prefix("CA")?;
    if sid.len() != SID_LEN || !is_lower_hex(rest) {
        return None;
    }
    rest.get(..TAG_LEN)
}

/// Key names of one call (key-space version 1).
#[derive(Debug, Clone)]
pub struct CallKeys {
    pub tag: String,
    /// `sy:v1:call:{<tag>}:<sid>`: hash with `v` (version) and `d` (data), plus the
    /// bookkeeping fields the scripts keep (`t`, `i:<call-id>`, `l:<leg>`).
    pub call: String,
}

impl CallKeys {
    pub fn new(sid: &str) -> Option<Self> {
        let tag = tag_of_sid(sid)?;
        Some(CallKeys {
            call: format!("sy:v1:call:{{{tag}}}:{sid}"),
            tag: tag.to_owned(),
        })
    }

    /// `sy:v1:call:{<tag>}:<sid>:cseq:<leg>`: INCR counter of a leg's CSeq.
    pub fn cseq(&self, leg: &str) -> String {
        format!("{}:cseq:{leg}", self.call)
    }

    /// `sy:v1:call:{<tag>}:<sid>:owner`: the ownership lease.
    pub fn owner(&self) -> String {
        format!("{}:owner", self.call)
    }

    /// Prefix of the dialog index keys in this call's slot.
    pub fn dialog_prefix(&self) -> String {
        format!("sy:v1:dlg:{{{}}}:", self.tag)
    }
}

/// `sy:v1:dlg:{<tag>}:<sip-call-id>`: which call a dialog belongs to.
/// What the dialog index is keyed by: the SIP Call-ID and this edge's tag in the dialog,
/// joined by a space (which no Call-ID contains). The Call-ID alone is not enough: when
/// the edge calls itself (a `<Number>` routed back through the edge), one SIP dialog has
/// both of its ends in two different calls, told apart by their local tags.
pub fn dialog_id(sip_call_id: &str, local_tag: &str) -> String {
    format!("{sip_call_id} {local_tag}")
}

pub fn dialog_key(sip_call_id: &str) -> String {
    format!(
        "sy:v1:dlg:{{{}}}:{sip_call_id}",
        tag_for_sip_call_id(sip_call_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_call_ids_carry_their_tag() {
        let tag = "0123456789abcdef";
        let id = edge_call_id(tag, "b", "edge.example");
        assert_eq!(id, "sy0123456789abcdef-b@edge.example");
        assert_eq!(tag_for_sip_call_id(&id), tag);
    }

    #[test]
    fn foreign_call_ids_hash_stably() {
        let id = "a84b4c76e66710@pc33.atlanta.com";
        let tag = tag_for_sip_call_id(id);
        assert_eq!(tag.len(), TAG_LEN);
        assert!(is_lower_hex(&tag));
        assert_eq!(tag, tag_for_sip_call_id(id));
        assert_ne!(tag, tag_for_sip_call_id("another@pc33.atlanta.com"));
        // FNV-1a 64 of the empty string is its offset basis: pins the algorithm, so a
        // change (which would orphan every live call on upgrade) fails here.
        assert_eq!(tag_for_sip_call_id(""), "cbf29ce484222325");
        // Look-alikes that are not edge Call-IDs are hashed, not trusted.
        for id in [
            "sy0123456789ABCDEF-b@h",
            "sy0123456789abcde-b@h",
            "sy0123456789abcdefx",
        ] {
            assert_ne!(tag_for_sip_call_id(id), "0123456789abcdef", "{id}");
        }
        // Multi-byte input must not panic on slicing.
        let _ = tag_for_sip_call_id("syé0123456789abcde-b@h");
    }

    #[test]
    fn sids_embed_the_tag() {
        let tag = "fedcba9876543210";
        let sid = new_call_sid(tag);
        assert_eq!(sid.len(), SID_LEN);
        assert!(sid.starts_with("CAfedcba9876543210"));
        assert_eq!(tag_of_sid(&sid), Some(tag));
        assert_ne!(sid, new_call_sid(tag));
        for bad in [
            "",
            "CA",
            "XAfedcba9876543210fedcba9876543210",
            "CAFEDCBA9876543210fedcba9876543210",
            "CAfedcba9876543210fedcba987654321é",
        ] {
            assert_eq!(tag_of_sid(bad), None, "{bad}");
        }
    }

    #[test]
    fn keys_share_one_hash_tag() {
        let sid = new_call_sid("00000000000000aa");
        let keys = CallKeys::new(&sid).expect("a valid sid");
        assert_eq!(keys.call, format!("sy:v1:call:{{00000000000000aa}}:{sid}"));
        assert_eq!(keys.cseq("a"), format!("{}:cseq:a", keys.call));
        assert_eq!(keys.owner(), format!("{}:owner", keys.call));
        let id = edge_call_id("00000000000000aa", "b", "h");
        assert_eq!(dialog_key(&id), format!("{}{id}", keys.dialog_prefix()));
    }
}
