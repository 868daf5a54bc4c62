//! Dialogs (RFC 3261 §12) as plain, serialisable values.
//!
//! A [`Dialog`] holds everything needed to send the next request of a dialog: tags, URIs,
//! the route set, the remote target and both CSeq counters. It has no handles, sockets or
//! tasks, so it can be stored in Redis and loaded by whichever edge process receives the
//! next request of the call.

use rsip::{Header, Method, Request, Response};
use serde::{Deserialize, Serialize};

use crate::sip::message::{HeaderError, SipHeaders};
use crate::sip::transaction::new_branch;
use crate::sip::transport::Protocol;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dialog {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
    /// Our From/To value (name-addr without tag).
    pub local_uri: String,
    /// The peer's From/To value (name-addr without tag).
    pub remote_uri: String,
    /// The peer's Contact URI: the Request-URI of our next request.
    pub remote_target: String,
    /// Route header values for our requests, in order.
    pub route_set: Vec<String>,
    /// The last CSeq number we used.
    pub local_cseq: u32,
    /// The last CSeq number the peer used (`None` until it sends a request).
    pub remote_cseq: Option<u32>,
}

/// How this edge names itself in requests it builds.
#[derive(Debug, Clone)]
pub struct LocalIdentity {
    /// `host:port` of this process, for Via (responses come back here).
    pub via_sent_by: String,
    pub protocol: Protocol,
    /// The advertised address for Contact (and Record-Route).
    pub contact: String,
}

/// Strips the `tag` parameter from a From/To value.
fn without_tag(value: &str) -> String {
    let (addr, params) = match value.rfind('>') {
        Some(i) => (&value[..=i], &value[i + 1..]),
        None => match value.split_once(';') {
            Some((addr, params)) => (addr, params),
            None => (value, ""),
        },
    };
    let kept: Vec<&str> = params
        .split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("tag="))
        .collect();
    let mut out = addr.trim().to_owned();
    for p in kept {
        out.push(';');
        out.push_str(p);
    }
    out
}

/// The URI inside a Contact, Route or Record-Route value (`<sip:...>` or a bare URI).
pub fn uri_of(value: &str) -> String {
    match (value.find('<'), value.find('>')) {
        (Some(start), Some(end)) if start < end => value[start + 1..end].to_owned(),
        _ => value.split(';').next().unwrap_or(value).trim().to_owned(),
    }
}

fn contact_uri<M: SipHeaders>(message: &M) -> Result<String, HeaderError> {
    message
        .header_value("Contact")
        .map(|c| uri_of(&c))
        .filter(|c| !c.is_empty())
        .ok_or(HeaderError::Missing("Contact"))
}

impl Dialog {
    /// The dialog a UAS creates by answering `request` with a 2xx carrying `local_tag`.
    pub fn as_uas(request: &Request, local_tag: &str) -> Result<Self, HeaderError> {
        Ok(Dialog {
            call_id: request.call_id()?,
            local_tag: local_tag.to_owned(),
            remote_tag: request.tag_from()?.unwrap_or_default(),
            local_uri: without_tag(
                &request
                    .header_value("To")
                    .ok_or(HeaderError::Missing("To"))?,
            ),
            remote_uri: without_tag(
                &request
                    .header_value("From")
                    .ok_or(HeaderError::Missing("From"))?,
            ),
            remote_target: contact_uri(request)?,
            route_set: request.header_values("Record-Route"),
            local_cseq: 0,
            remote_cseq: Some(request.cseq()?.0),
        })
    }

    /// The dialog a UAC holds after `response` (1xx with tag, or 2xx) to `request`.
    pub fn as_uac(request: &Request, response: &Response) -> Result<Self, HeaderError> {
        let mut route_set = response.header_values("Record-Route");
        route_set.reverse();
        Ok(Dialog {
            call_id: request.call_id()?,
            local_tag: request.tag_from()?.unwrap_or_default(),
            remote_tag: response
                .tag_to()?
                .ok_or(HeaderError::Invalid("To", "no tag in the response".into()))?,
            local_uri: without_tag(
                &request
                    .header_value("From")
                    .ok_or(HeaderError::Missing("From"))?,
            ),
            remote_uri: without_tag(
                &response
                    .header_value("To")
                    .ok_or(HeaderError::Missing("To"))?,
            ),
            remote_target: contact_uri(response)?,
            route_set,
            local_cseq: request.cseq()?.0,
            remote_cseq: None,
        })
    }

    /// Whether the next hop is the first route (loose routing) or the remote target.
    fn strict_routing(&self) -> bool {
        self.route_set
            .first()
            .is_some_and(|r| !uri_of(r).to_ascii_lowercase().contains(";lr"))
    }

    /// The URI our next request goes to first (§12.2.1.1, §8.1.2).
    pub fn next_hop(&self) -> String {
        match self.route_set.first() {
            Some(route) => uri_of(route),
            None => self.remote_target.clone(),
        }
    }

    /// Builds the next in-dialog request. `cseq`: the number to use (the caller allocates
    /// it; shared storage makes that atomic). ACK and CANCEL reuse the INVITE's number.
    pub fn request(&self, method: Method, cseq: u32, me: &LocalIdentity) -> Request {
        let (uri, routes) = if self.strict_routing() {
            // Strict routing (RFC 2543 proxies): the first route becomes the Request-URI
            // and the remote target goes last in Route.
            let mut routes: Vec<String> = self.route_set[1..].to_vec();
            routes.push(format!("<{}>", self.remote_target));
            (uri_of(&self.route_set[0]), routes)
        } else {
            (self.remote_target.clone(), self.route_set.clone())
        };
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(
            format!(
                "SIP/2.0/{} {};branch={};rport",
                me.protocol.via_token(),
                me.via_sent_by,
                new_branch()
            )
            .into(),
        ));
        headers.push(Header::MaxForwards("70".into()));
        for route in routes {
            headers.push(Header::Route(route.into()));
        }
        headers.push(Header::From(
            format!("{};tag={}", self.local_uri, self.local_tag).into(),
        ));
        headers.push(Header::To(
            format!("{};tag={}", self.remote_uri, self.remote_tag).into(),
        ));
        headers.push(Header::CallId(self.call_id.clone().into()));
        headers.push(Header::CSeq(format!("{cseq} {method}").into()));
        if !matches!(method, Method::Ack | Method::Cancel | Method::Bye) {
            headers.push(Header::Contact(format!("<sip:{}>", me.contact).into()));
        }
        Request {
            method,
            uri: rsip::Uri::try_from(uri.as_str()).unwrap_or_default(),
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }

    /// Checks an in-dialog request's CSeq (§12.2.2): lower than the last one is an error
    /// (500); otherwise it becomes the new remote CSeq. ACK and CANCEL are not counted.
    pub fn accept_remote_cseq(&mut self, request: &Request) -> Result<(), HeaderError> {
        let (seq, method) = request.cseq()?;
        if matches!(method, Method::Ack | Method::Cancel) {
            return Ok(());
        }
        match self.remote_cseq {
            Some(last) if seq <= last => Err(HeaderError::Invalid(
                "CSeq",
                format!("{seq} is not above the dialog's last {last}"),
            )),
            _ => {
                self.remote_cseq = Some(seq);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::testing::{request, response};

    const INVITE: &str = "INVITE sip:bob@edge SIP/2.0\r\n\
        Via: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
        Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
        From: \"Alice\" <sip:alice@a.example>;tag=al\r\n\
        To: <sip:bob@b.example>\r\n\
        Call-ID: dlg-1\r\nCSeq: 10 INVITE\r\n\
        Contact: <sip:alice@10.0.0.1:5060;transport=udp>\r\n\
        Content-Length: 0\r\n\r\n";

    fn me() -> LocalIdentity {
        LocalIdentity {
            via_sent_by: "10.0.0.9:5060".into(),
            protocol: Protocol::Udp,
            contact: "edge.example:5060".into(),
        }
    }

    #[test]
    fn uas_dialog_uses_record_route_in_order_and_the_contact_as_target() {
        let dialog = Dialog::as_uas(&request(INVITE), "edge1").unwrap();
        assert_eq!(dialog.remote_tag, "al");
        assert_eq!(dialog.local_tag, "edge1");
        assert_eq!(
            dialog.remote_target,
            "sip:alice@10.0.0.1:5060;transport=udp"
        );
        // rsip normalises the transport parameter when it builds the Request-URI.
        assert_eq!(
            dialog.route_set,
            ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        assert_eq!(dialog.remote_uri, "\"Alice\" <sip:alice@a.example>");
        assert_eq!(dialog.remote_cseq, Some(10));

        let bye = dialog.request(Method::Bye, 1, &me());
        assert_eq!(
            bye.uri.to_string().to_lowercase(),
            "sip:alice@10.0.0.1:5060;transport=udp"
        );
        assert_eq!(
            bye.header_values("Route"),
            ["<sip:p1.example;lr>", "<sip:p2.example;lr>"]
        );
        assert_eq!(bye.tag_from().unwrap().as_deref(), Some("edge1"));
        assert_eq!(bye.tag_to().unwrap().as_deref(), Some("al"));
        assert_eq!(bye.cseq().unwrap(), (1, Method::Bye));
        assert!(bye.branch().unwrap().starts_with("z9hG4bK"));
        assert_eq!(dialog.next_hop(), "sip:p1.example;lr");
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_takes_the_to_tag() {
        let invite = request(INVITE);
        let ok = response(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\n\
             Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n\
             From: \"Alice\" <sip:alice@a.example>;tag=al\r\nTo: <sip:bob@b.example>;tag=bb\r\n\
             Call-ID: dlg-1\r\nCSeq: 10 INVITE\r\nContact: <sip:bob@10.0.0.2>\r\nContent-Length: 0\r\n\r\n",
        );
        let dialog = Dialog::as_uac(&invite, &ok).unwrap();
        assert_eq!(
            dialog.route_set,
            ["<sip:p2.example;lr>", "<sip:p1.example;lr>"]
        );
        assert_eq!(
            (dialog.local_tag.as_str(), dialog.remote_tag.as_str()),
            ("al", "bb")
        );
        assert_eq!(dialog.local_cseq, 10);
        assert_eq!(dialog.remote_target, "sip:bob@10.0.0.2");
    }

    #[test]
    fn strict_route_becomes_the_request_uri() {
        let mut dialog = Dialog::as_uas(&request(INVITE), "edge1").unwrap();
        dialog.route_set = vec!["<sip:strict.example>".into(), "<sip:p2.example;lr>".into()];
        let bye = dialog.request(Method::Bye, 2, &me());
        assert_eq!(bye.uri.to_string(), "sip:strict.example");
        assert_eq!(
            bye.header_values("Route"),
            [
                "<sip:p2.example;lr>",
                "<sip:alice@10.0.0.1:5060;transport=udp>"
            ],
            "the remote target goes last, as stored"
        );
    }

    #[test]
    fn remote_cseq_must_increase() {
        let mut dialog = Dialog::as_uas(&request(INVITE), "edge1").unwrap();
        let bye = |seq: u32| {
            request(
                &INVITE
                    .replace("INVITE sip", "BYE sip")
                    .replace("10 INVITE", &format!("{seq} BYE")),
            )
        };
        assert!(dialog.accept_remote_cseq(&bye(10)).is_err());
        assert!(dialog.accept_remote_cseq(&bye(11)).is_ok());
        assert_eq!(dialog.remote_cseq, Some(11));
    }

    #[test]
    fn dialogs_round_trip_through_json() {
        let dialog = Dialog::as_uas(&request(INVITE), "edge1").unwrap();
        let json = serde_json::to_string(&dialog).unwrap();
        assert_eq!(serde_json::from_str::<Dialog>(&json).unwrap(), dialog);
    }
}
