//! The call record: everything about one call, stored as JSON in the call store so that
//! any edge process can carry on the call (end it, relay a re-INVITE, transfer it).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use switchyard_routing::{AppUrl, Route};

use crate::ratelimit::RequestWindow;
use crate::sip::dialog::Dialog;
use crate::sip::transport::{Destination, Protocol};
use crate::store::Op;

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
pub struct Leg {
    /// `a` for the caller's leg, `b1`, `b2`, ... for legs the edge dialled.
    pub name: String,
    pub sip_call_id: String,
    /// This leg's entry in the dialog index (`store::dialog_id`: Call-ID and our tag).
    pub index: String,
    pub peer: Peer,
    /// The confirmed dialog, once the leg is answered.
    pub dialog: Option<Dialog>,
    /// The party's address (From of the caller, Request-URI of a callee).
    pub party: String,
    /// The last session description this leg sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp: Option<String>,
    /// The leg's INVITE as text while it is unanswered, so another process can answer or
    /// cancel it if the owner dies (dropped once answered, to keep records small).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite: Option<String>,
}

/// The Dial in progress (or the last one), for its `action` and DialCall* parameters.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DialRecord {
    pub leg: String,
    pub dial_call_sid: String,
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
    pub sid: String,
    pub account_sid: String,
    pub state: CallState,
    /// The route the call came in on: its referUrl runs if a party transfers the call.
    pub route: Route,
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

    /// The store operations that go with ending the call: its legs leave the dialog
    /// index and its timer is cleared.
    pub fn closing_ops(&self) -> Vec<Op> {
        std::iter::once(&self.inbound)
            .chain(self.outbound.as_ref())
            .map(|leg| Op::ForgetDialog {
                sip_call_id: leg.index.clone(),
            })
            .chain(std::iter::once(Op::CancelTimer))
            .collect()
    }

    pub fn to_json(&self) -> Vec<u8> {
        // A record holds strings, numbers and enums only: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
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
