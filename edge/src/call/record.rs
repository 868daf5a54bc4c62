//! The call record: everything about one call, stored as JSON in the call store so that
//! any edge process can carry on the call (end it, relay a re-INVITE, transfer it).
//!
//! It holds what another process needs to carry the call on, and nothing it can derive
//! or never reads: every held call costs Redis memory (`bench/RESULTS.md` measures it),
//! so there are no SDP copies, no copy of the whole route, and no derived dialog ids.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_routing::{AppUrl, Route};

use crate::ratelimit::RequestWindow;
use crate::sip::dialog::{Dialog, uri_of};
use crate::sip::transport::{Destination, Protocol};
use crate::store::{Op, dialog_id};

/// How long the keys of a live call are kept (a call longer than this loses its state).
pub const LIVE_TTL: Duration = Duration::from_secs(4 * 3600);
/// How long an ended call is kept, so late requests (a retransmitted BYE) still find it.
pub const ENDED_TTL: Duration = Duration::from_secs(64);

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallState {
    /// RCML is running; the caller has not been answered.
    Setup,
    /// Both legs are up.
    Answered,
    Ended,
}

/// Where in-dialog requests for a leg go.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

impl Peer {
    pub fn destination(&self) -> Destination {
        Destination {
            protocol: self.protocol,
            addr: self.addr,
            connection: None,
        }
    }
}

/// One SIP leg of the B2BUA.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(from = "StoredLeg", into = "StoredLeg")]
pub struct Leg {
    /// `a` for the caller's leg, `b1`, `b2`, ... for legs the edge dialled.
    pub name: String,
    pub sip_call_id: String,
    /// The edge's tag in this leg's dialog (the To tag towards a caller, the From tag
    /// towards a callee); with the Call-ID it keys the leg's dialog index entry.
    pub local_tag: String,
    pub peer: Peer,
    /// The confirmed dialog, once the leg is answered.
    pub dialog: Option<Dialog>,
    /// The party's address (From of the caller, Request-URI of a callee).
    pub party: String,
    /// The leg's INVITE as text while it is unanswered, so another process can answer or
    /// cancel it if the owner dies (dropped once answered, to keep records small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

impl Leg {
    /// This leg's entry in the dialog index (`store::dialog_id`).
    pub fn index(&self) -> String {
        dialog_id(&self.sip_call_id, &self.local_tag)
    }
}

/// A leg as stored: its dialog without the Call-ID and local tag, which the leg holds
/// already (a dialog's are always its leg's), and without empty fields.
#[derive(Serialize, Deserialize)]
struct StoredLeg {
    name: String,
    sip_call_id: String,
    local_tag: String,
    peer: Peer,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    dialog: Option<StoredDialog>,
    /// Left out when it is the URI of the dialog's remote URI (it always is, once the leg
    /// is answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    party: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    invite: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct StoredDialog {
    remote_tag: String,
    local_uri: String,
    remote_uri: String,
    remote_target: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    route_set: Vec<String>,
    local_cseq: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    remote_cseq: Option<u32>,
}

impl From<Leg> for StoredLeg {
    fn from(leg: Leg) -> Self {
        debug_assert!(
            leg.dialog
                .as_ref()
                .is_none_or(|d| d.call_id == leg.sip_call_id && d.local_tag == leg.local_tag)
        );
        let party = match &leg.dialog {
            Some(d) if uri_of(&d.remote_uri) == leg.party => None,
            _ => Some(leg.party),
        };
        StoredLeg {
            dialog: leg.dialog.map(|d| StoredDialog {
                remote_tag: d.remote_tag,
                local_uri: d.local_uri,
                remote_uri: d.remote_uri,
                remote_target: d.remote_target,
                route_set: d.route_set,
                local_cseq: d.local_cseq,
                remote_cseq: d.remote_cseq,
            }),
            name: leg.name,
            sip_call_id: leg.sip_call_id,
            local_tag: leg.local_tag,
            peer: leg.peer,
            party,
            invite: leg.invite,
        }
    }
}

impl From<StoredLeg> for Leg {
    fn from(leg: StoredLeg) -> Self {
        let party = match (leg.party, &leg.dialog) {
            (Some(party), _) => party,
            (None, Some(d)) => uri_of(&d.remote_uri),
            (None, None) => String::new(),
        };
        Leg {
            dialog: leg.dialog.map(|d| Dialog {
                call_id: leg.sip_call_id.clone(),
                local_tag: leg.local_tag.clone(),
                remote_tag: d.remote_tag,
                local_uri: d.local_uri,
                remote_uri: d.remote_uri,
                remote_target: d.remote_target,
                route_set: d.route_set,
                local_cseq: d.local_cseq,
                remote_cseq: d.remote_cseq,
            }),
            name: leg.name,
            sip_call_id: leg.sip_call_id,
            local_tag: leg.local_tag,
            peer: leg.peer,
            party,
            invite: leg.invite,
        }
    }
}

/// What the call keeps of the route it came in on: what a transfer needs. Set-up uses
/// the whole route, in the process that runs it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct CallRoute {
    /// The number's refer application; none: transfers are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refer: Option<AppUrl>,
    /// The number's `referTargetAllow` patterns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refer_target_allow: Vec<String>,
}

impl CallRoute {
    fn is_empty(&self) -> bool {
        self == &CallRoute::default()
    }
}

impl From<&Route> for CallRoute {
    fn from(route: &Route) -> Self {
        CallRoute {
            refer: route.refer.clone(),
            refer_target_allow: route.refer_target_allow.clone(),
        }
    }
}

/// The Dial in progress (or the last one), for its `action` and DialCall* parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DialRecord {
    pub leg: String,
    pub dial_call_sid: String,
    /// The Dial's `action`, resolved against the document it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<AppUrl>,
    pub started_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_ms: Option<u64>,
    /// When the Dial's `timeLimit` ends the bridged call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hangup_at_ms: Option<u64>,
}

/// A blind transfer in progress (a REFER was accepted).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TransferRecord {
    /// The leg that sent REFER.
    pub transferor: String,
    /// The leg that stays and is connected to the target.
    pub transferee: String,
    /// The Refer-To URI.
    pub refer_to: String,
    /// Whether the transferor wants NOTIFYs (RFC 4488 `Refer-Sub: false` says no).
    pub notify: bool,
    pub started_ms: u64,
    /// The edge process running the transfer.
    pub owner: String,
    /// The leg being dialled, while it is (its INVITE lets another process cancel it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<Leg>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// The store's key for the call: not stored inside it again.
    #[serde(skip)]
    pub sid: String,
    pub account_sid: String,
    pub state: CallState,
    /// What a transfer needs of the route the call came in on.
    #[serde(default, skip_serializing_if = "CallRoute::is_empty")]
    pub route: CallRoute,
    pub from: String,
    pub to: String,
    pub caller_name: String,
    pub inbound: Leg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound: Option<Leg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial: Option<DialRecord>,
    pub created_ms: u64,
    /// The edge process driving the call's set-up.
    pub owner: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transfer: Option<TransferRecord>,
    /// REFERs counted in the current window (`--refer-limit-per-call`), whichever edge
    /// process received them: past the limit a REFER storm gets 503.
    #[serde(default, skip_serializing_if = "RequestWindow::is_empty")]
    pub refers: RequestWindow,
}

impl CallRecord {
    /// The leg a SIP Call-ID belongs to, and the other one.
    pub fn legs_for(&self, sip_call_id: &str) -> Option<(&Leg, Option<&Leg>)> {
        if self.inbound.sip_call_id == sip_call_id {
            return Some((&self.inbound, self.outbound.as_ref()));
        }
        match &self.outbound {
            Some(out) if out.sip_call_id == sip_call_id => Some((out, Some(&self.inbound))),
            _ => None,
        }
    }

    pub fn leg(&self, name: &str) -> Option<&Leg> {
        std::iter::once(&self.inbound)
            .chain(self.outbound.as_ref())
            .find(|l| l.name == name)
    }

    pub fn leg_mut(&mut self, name: &str) -> Option<&mut Leg> {
        if self.inbound.name == name {
            return Some(&mut self.inbound);
        }
        self.outbound.as_mut().filter(|l| l.name == name)
    }

    /// `ops` plus a `KeepDialog` for each leg the ops do not already index or forget, so
    /// the legs' dialog index entries live as long as the call: every commit goes
    /// through this.
    pub fn with_dialog_upkeep(&self, ops: &[Op]) -> Vec<Op> {
        let named: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                Op::IndexDialog { dialog_id }
                | Op::ForgetDialog { dialog_id }
                | Op::KeepDialog { dialog_id } => Some(dialog_id.as_str()),
                _ => None,
            })
            .collect();
        let legs = std::iter::once(&self.inbound)
            .chain(self.outbound.as_ref())
            .chain(self.transfer.as_ref().and_then(|t| t.target.as_ref()));
        let keep = legs
            .map(Leg::index)
            .filter(|id| !named.contains(&id.as_str()))
            .map(|dialog_id| Op::KeepDialog { dialog_id });
        ops.iter().cloned().chain(keep).collect()
    }

    /// The store operations that go with ending the call: its legs leave the dialog
    /// index and its timer is cleared.
    pub fn closing_ops(&self) -> Vec<Op> {
        std::iter::once(&self.inbound)
            .chain(self.outbound.as_ref())
            .map(|leg| Op::ForgetDialog {
                dialog_id: leg.index(),
            })
            .chain(std::iter::once(Op::CancelTimer))
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A record holds strings, numbers and enums only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record of call `sid`, as [`CallRecord::to_json`] wrote it.
    pub fn from_json(sid: &str, bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let mut record: CallRecord = serde_json::from_slice(bytes)?;
        record.sid = sid.to_owned();
        Ok(record)
    }
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}

/// Restcomm's DialCallStatus values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialStatus {
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl DialStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DialStatus::Completed => "completed",
            DialStatus::Busy => "busy",
            DialStatus::NoAnswer => "no-answer",
            DialStatus::Failed => "failed",
            DialStatus::Canceled => "canceled",
        }
    }

    /// From the callee's final status code.
    pub fn from_code(code: u16) -> Self {
        match code {
            200..=299 => DialStatus::Completed,
            486 | 600 => DialStatus::Busy,
            408 | 480 => DialStatus::NoAnswer,
            487 => DialStatus::Canceled,
            _ => DialStatus::Failed,
        }
    }

    /// What the caller hears when the RCML ends on this Dial outcome without answering.
    pub fn caller_code(self) -> u16 {
        match self {
            DialStatus::Busy => 486,
            DialStatus::NoAnswer => 480,
            DialStatus::Canceled => 487,
            DialStatus::Failed => 502,
            DialStatus::Completed => 480,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leg(name: &str, call_id: &str, tag: &str, answered: bool) -> Leg {
        Leg {
            name: name.into(),
            sip_call_id: call_id.into(),
            local_tag: tag.into(),
            peer: Peer {
                protocol: Protocol::Udp,
                addr: "192.0.2.1:5060".parse().expect("an address"),
            },
            dialog: answered.then(|| Dialog {
                call_id: call_id.into(),
                local_tag: tag.into(),
                remote_tag: "far".into(),
                local_uri: "<sip:edge@192.0.2.9>".into(),
                remote_uri: "<sip:bob@192.0.2.1>".into(),
                remote_target: "sip:bob@192.0.2.1:5060".into(),
                route_set: vec!["<sip:proxy.example;lr>".into()],
                local_cseq: 1,
                remote_cseq: Some(7),
            }),
            party: "sip:bob@192.0.2.1".into(),
            invite: (!answered).then(|| "INVITE sip:bob@192.0.2.1 SIP/2.0\r\n\r\n".into()),
        }
    }

    fn record() -> CallRecord {
        CallRecord {
            sid: "CA00000000000000000000000000000000".into(),
            account_sid: "ACtest".into(),
            state: CallState::Answered,
            route: CallRoute::default(),
            from: "alice".into(),
            to: "+15551230001".into(),
            caller_name: String::new(),
            inbound: leg("a", "in-call@alice.example", "tag-a", true),
            outbound: Some(leg("b1", "sy00-b1@edge", "tag-b", true)),
            dial: None,
            created_ms: 1,
            owner: "edge-0".into(),
            transfer: Some(TransferRecord {
                transferor: "b1".into(),
                transferee: "a".into(),
                refer_to: "sip:carol@example".into(),
                notify: true,
                started_ms: 2,
                owner: "edge-1".into(),
                target: Some(leg("t1", "sy00-t1@edge", "tag-t", false)),
            }),
            refers: Default::default(),
        }
    }

    #[test]
    fn a_record_round_trips_with_each_call_id_stored_once_per_leg() {
        let record = record();
        let json = record.to_json();
        assert_eq!(
            CallRecord::from_json(&record.sid, &json).expect("parses"),
            record
        );
        let text = String::from_utf8(json).expect("JSON is text");
        // The dialog's Call-ID and local tag are the leg's: stored once.
        assert_eq!(text.matches("in-call@alice.example").count(), 1, "{text}");
        assert_eq!(text.matches("tag-b").count(), 1, "{text}");
        // The sid is the store's key; an answered leg's party is its dialog's remote
        // URI; empty and default fields are left out.
        assert!(!text.contains(&record.sid), "{text}");
        assert_eq!(text.matches("\"party\"").count(), 1, "only t1's: {text}");
        assert!(!text.contains("\"route\""), "{text}");
        assert!(!text.contains("\"sdp\""), "{text}");
    }

    #[test]
    fn commits_keep_every_leg_s_dialog_entry_alive() {
        let record = record();
        let forget_a = Op::ForgetDialog {
            dialog_id: record.inbound.index(),
        };
        let ops = record.with_dialog_upkeep(&[forget_a.clone(), Op::CancelTimer]);
        assert_eq!(
            ops,
            vec![
                forget_a,
                Op::CancelTimer,
                Op::KeepDialog {
                    dialog_id: dialog_id("sy00-b1@edge", "tag-b")
                },
                Op::KeepDialog {
                    dialog_id: dialog_id("sy00-t1@edge", "tag-t")
                },
            ]
        );
        // Ending a call forgets every leg and keeps none.
        let record = CallRecord {
            transfer: None,
            ..record
        };
        let closing = record.closing_ops();
        assert!(
            !record
                .with_dialog_upkeep(&closing)
                .iter()
                .any(|op| matches!(op, Op::KeepDialog { .. }))
        );
    }
}
