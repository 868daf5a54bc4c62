//! The request parameters Restcomm sends with every RCML fetch, so application servers
//! written for Restcomm (and Visual Designer's `$core_<Name>` variables) work unchanged.
//!
//! The call flow builds them with [`Params::call`], adds what the moment calls for (the
//! Dial outcome for an `action`, the transfer parties for a `referUrl`), and hands
//! [`Params::as_slice`] to [`super::Fetcher::fetch`].

use std::time::Duration;

/// `ApiVersion`: the Restcomm API version whose parameters these are.
pub const API_VERSION: &str = "2012-04-24";

/// `Direction` of a call the edge answered.
pub const DIRECTION_INBOUND: &str = "inbound";
/// `Direction` of a leg the edge placed for a `<Dial>`.
pub const DIRECTION_OUTBOUND_DIAL: &str = "outbound-dial";

/// Name/value pairs in the order they were added; a name appears at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(Vec<(String, String)>);

/// `DialCallStatus`: how a `<Dial>` ended, sent to its `action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialCallStatus {
    Completed,
    Busy,
    NoAnswer,
    Failed,
    Canceled,
}

impl DialCallStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DialCallStatus::Completed => "completed",
            DialCallStatus::Busy => "busy",
            DialCallStatus::NoAnswer => "no-answer",
            DialCallStatus::Failed => "failed",
            DialCallStatus::Canceled => "canceled",
        }
    }
}

impl std::fmt::Display for DialCallStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Params {
    /// The parameters every fetch carries. `call_status` is Restcomm's (`ringing`,
    /// `in-progress`, `completed`, ...); `direction` is [`DIRECTION_INBOUND`] or
    /// [`DIRECTION_OUTBOUND_DIAL`].
    pub fn call(
        call_sid: &str,
        account_sid: &str,
        from: &str,
        to: &str,
        call_status: &str,
        direction: &str,
    ) -> Params {
        Params::default()
            .with("CallSid", call_sid)
            .with("AccountSid", account_sid)
            .with("From", from)
            .with("To", to)
            .with("CallStatus", call_status)
            .with("ApiVersion", API_VERSION)
            .with("Direction", direction)
    }

    /// Sets `name` to `value`, replacing an earlier value (a call's `CallStatus` changes
    /// between fetches) and keeping its place.
    pub fn with(mut self, name: &str, value: impl Into<String>) -> Params {
        let value = value.into();
        match self.0.iter_mut().find(|(key, _)| key == name) {
            Some((_, old)) => *old = value,
            None => self.0.push((name.to_owned(), value)),
        }
        self
    }

    /// `CallerName` (the From display name) and `ForwardedFrom` (a Diversion), when known.
    pub fn with_caller(self, caller_name: Option<&str>, forwarded_from: Option<&str>) -> Params {
        let params = match caller_name {
            Some(name) => self.with("CallerName", name),
            None => self,
        };
        match forwarded_from {
            Some(number) => params.with("ForwardedFrom", number),
            None => params,
        }
    }

    /// What a `<Dial>`'s `action` receives: `DialCallStatus`, `DialCallSid` (the dialled
    /// leg, absent if none was placed) and `DialCallDuration` in whole seconds.
    pub fn with_dial_result(
        self,
        status: DialCallStatus,
        dial_call_sid: Option<&str>,
        duration: Duration,
    ) -> Params {
        let params = self
            .with("DialCallStatus", status.as_str())
            .with("DialCallDuration", duration.as_secs().to_string());
        match dial_call_sid {
            Some(sid) => params.with("DialCallSid", sid),
            None => params,
        }
    }

    /// What a `referUrl` receives when a party presses Blind Transfer: `Transferor` (who
    /// sent the REFER), `Transferee` (who is transferred), `ReferTarget` (the user part
    /// of Refer-To, what was typed), and `ReferredBy` / `ReferTransferTarget` (the
    /// Referred-By header and the full Refer-To URI).
    pub fn with_transfer(self, transfer: &Transfer<'_>) -> Params {
        let params = self
            .with("Transferor", transfer.transferor)
            .with("Transferee", transfer.transferee)
            .with("ReferTarget", transfer.refer_target)
            .with("ReferTransferTarget", transfer.refer_transfer_target);
        match transfer.referred_by {
            Some(referred_by) => params.with("ReferredBy", referred_by),
            None => params,
        }
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn as_slice(&self) -> &[(String, String)] {
        &self.0
    }
}

/// The parties of a blind transfer, for [`Params::with_transfer`].
#[derive(Debug, Clone, Copy)]
pub struct Transfer<'a> {
    pub transferor: &'a str,
    pub transferee: &'a str,
    pub refer_target: &'a str,
    pub referred_by: Option<&'a str>,
    pub refer_transfer_target: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(params: &Params) -> Vec<&str> {
        params.as_slice().iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn call_parameters_are_restcomms() {
        let params = Params::call("CA1", "AC1", "+1555", "+1666", "ringing", DIRECTION_INBOUND);
        assert_eq!(
            names(&params),
            [
                "CallSid",
                "AccountSid",
                "From",
                "To",
                "CallStatus",
                "ApiVersion",
                "Direction"
            ]
        );
        assert_eq!(params.get("ApiVersion"), Some("2012-04-24"));
        assert_eq!(params.get("Direction"), Some("inbound"));
    }

    #[test]
    fn with_replaces_in_place() {
        let params = Params::call("CA1", "AC1", "a", "b", "ringing", DIRECTION_INBOUND)
            .with("CallStatus", "in-progress");
        assert_eq!(params.get("CallStatus"), Some("in-progress"));
        assert_eq!(names(&params)[4], "CallStatus");
        assert_eq!(params.as_slice().len(), 7);
    }

    #[test]
    fn caller_dial_and_transfer_parameters() {
        let params = Params::default()
            .with_caller(Some("Alice"), None)
            .with_dial_result(DialCallStatus::NoAnswer, None, Duration::from_millis(2500))
            .with_transfer(&Transfer {
                transferor: "bob",
                transferee: "alice",
                refer_target: "+1777",
                referred_by: Some("<sip:bob@example.com>"),
                refer_transfer_target: "sip:+1777@example.com",
            });
        assert_eq!(params.get("CallerName"), Some("Alice"));
        assert_eq!(params.get("ForwardedFrom"), None);
        assert_eq!(params.get("DialCallStatus"), Some("no-answer"));
        assert_eq!(params.get("DialCallDuration"), Some("2"));
        assert_eq!(params.get("DialCallSid"), None);
        assert_eq!(params.get("Transferor"), Some("bob"));
        assert_eq!(params.get("Transferee"), Some("alice"));
        assert_eq!(params.get("ReferTarget"), Some("+1777"));
        assert_eq!(params.get("ReferredBy"), Some("<sip:bob@example.com>"));
        assert_eq!(
            params.get("ReferTransferTarget"),
            Some("sip:+1777@example.com")
        );
    }
}
