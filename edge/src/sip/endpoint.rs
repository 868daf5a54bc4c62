//! The SIP core: takes each message from the transport, checks it, matches it to a
//! transaction, and hands new requests to the application (the transaction user).
//!
//! Checks done here, for every request, before the application sees it:
//! - unparseable: 400 with a `Reason` (416, 501 or 505 when `message::check_head` says
//!   so) when a response can be built, otherwise dropped and counted;
//! - missing or inconsistent Call-ID, CSeq, From, To or Via branch: 400 with a `Reason`;
//! - Max-Forwards 0 on a request the edge would forward: 483;
//! - the top Via gets `received` and `rport` (RFC 3581) so answers reach phones behind
//!   NAT;
//! - a source over its rate (`--rate-limit-per-source`): 503 with Retry-After, answered
//!   statelessly before the request gets a transaction, so a flood costs no Redis or
//!   RCML work (retransmissions of requests already in a transaction are absorbed
//!   without counting; ACK and CANCEL take no token: they finish transactions); past a
//!   few 503s a second, everything from the source is dropped before it is parsed.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, SipMessage};
use tokio::sync::mpsc;
use tracing::{debug, trace};

use crate::metrics::METRICS;
use crate::ratelimit::{Admission, SourceLimiter, retry_after_seconds};
use crate::sip::message::{
    SipHeaders, host_ip, parse, reason_header, response_to, response_to_raw, to_bytes, via_sent_by,
};
use crate::sip::transaction::{Context, Delivery, Role, ServerTransaction, TransactionKey};
use crate::sip::transport::{Destination, Inbound, Protocol, Wire};

/// The application on top of the SIP core.
pub trait Application: Send + Sync + 'static {
    /// A new request, in its server transaction. Must respond (eventually).
    fn request(self: Arc<Self>, tx: ServerTransaction) -> impl Future<Output = ()> + Send;

    /// An ACK for a 2xx that no local transaction is waiting for (the INVITE was answered
    /// by another edge process, or the ACK arrived after our retransmissions stopped).
    fn stray_ack(
        self: Arc<Self>,
        ack: Request,
        source: Destination,
    ) -> impl Future<Output = ()> + Send;

    /// A 2xx to an INVITE that no local client transaction is waiting for (a
    /// retransmission whose ACK was lost): the dialog owner must ACK it again.
    fn stray_2xx(
        self: Arc<Self>,
        response: Response,
        source: Destination,
    ) -> impl Future<Output = ()> + Send;
}

pub struct Endpoint<A> {
    pub ctx: Context,
    app: Arc<A>,
    /// Per-source rate limits; `None`: off.
    limiter: Option<SourceLimiter>,
}

impl<A: Application> Endpoint<A> {
    pub fn new(ctx: Context, app: Arc<A>, limiter: Option<SourceLimiter>) -> Arc<Self> {
        Arc::new(Endpoint { ctx, app, limiter })
    }

    /// Takes a token for a message from `source`.
    fn admit(&self, source: &Destination) -> Admission {
        let Some(limiter) = self.limiter.as_ref() else {
            return Admission::Allowed;
        };
        let admission = limiter.admit(source.addr.ip());
        METRICS
            .rate_limit_sources
            .set(i64::try_from(limiter.tracked()).unwrap_or(i64::MAX));
        admission
    }

    /// Whether a message from `source` is dropped before parsing: the source is over its
    /// rate and has had its share of 503s.
    fn shed(&self, source: &Destination) -> bool {
        let shed = self
            .limiter
            .as_ref()
            .is_some_and(|limiter| limiter.shedding(source.addr.ip()));
        if shed {
            METRICS
                .messages_dropped
                .with_label_values(&["rate_limited"])
                .inc();
        }
        shed
    }

    /// Processes inbound messages until the transport closes.
    pub async fn run(self: Arc<Self>, mut inbound: mpsc::Receiver<Inbound>) {
        while let Some(message) = inbound.recv().await {
            self.receive(message);
        }
    }

    fn receive(&self, inbound: Inbound) {
        if self.shed(&inbound.source) {
            return;
        }
        match parse(&inbound.bytes) {
            Ok(SipMessage::Request(request)) => self.receive_request(request, inbound.source),
            Ok(SipMessage::Response(response)) => self.receive_response(response, inbound.source),
            Err(error) => {
                debug!(source = %inbound.source.addr, %error, "unparseable SIP message");
                let answer = error
                    .head
                    .as_ref()
                    .and_then(|head| response_to_raw(head, error.status, &error.reason));
                if answer.is_some() && self.admit(&inbound.source) != Admission::Allowed {
                    // A source over its rate gets no 400s either: no reflection.
                    METRICS
                        .messages_dropped
                        .with_label_values(&["rate_limited"])
                        .inc();
                    return;
                }
                match answer {
                    Some(bytes) => {
                        let method = error
                            .head
                            .as_ref()
                            .and_then(|h| h.method())
                            .unwrap_or("UNKNOWN");
                        METRICS.response_sent(method, error.status);
                        let to = error
                            .head
                            .as_ref()
                            .and_then(|h| h.get("Via"))
                            .map(|via| reply_address_raw(via, &inbound.source))
                            .unwrap_or(inbound.source);
                        self.ctx.wire.send(&to, bytes);
                    }
                    None => METRICS
                        .messages_dropped
                        .with_label_values(&["unparseable"])
                        .inc(),
                }
            }
        }
    }

    fn reject(&self, request: &Request, to: &Destination, code: u16, reason: &str) {
        debug!(method = %request.method, code, reason, "request rejected");
        if request.method == Method::Ack {
            METRICS
                .messages_dropped
                .with_label_values(&["invalid_ack"])
                .inc();
            return;
        }
        let mut response = response_to(request, code, Some(&crate::sip::random_token(10)));
        response.headers.push(reason_header(code, reason));
        METRICS.response_sent(&request.method.to_string(), code);
        self.ctx.wire.send(to, to_bytes(response));
    }

    /// 503 with Retry-After to a source over its rate, without a transaction: a
    /// retransmission is refused again the same way while the source stays over.
    fn refuse_over_rate(&self, request: &Request, to: &Destination, wait: std::time::Duration) {
        debug!(method = %request.method, source = %to.addr.ip(), "source over its rate");
        let method = request.method.to_string();
        METRICS
            .rate_limited
            .with_label_values(&["source", &method])
            .inc();
        let mut response = response_to(request, 503, Some(&crate::sip::random_token(10)));
        response
            .headers
            .push(reason_header(503, "too many requests from this address"));
        response.headers.push(Header::RetryAfter(
            retry_after_seconds(wait).to_string().into(),
        ));
        METRICS.response_sent(&method, 503);
        self.ctx.wire.send(to, to_bytes(response));
    }

    fn receive_request(&self, mut request: Request, source: Destination) {
        METRICS
            .sip_requests
            .with_label_values(&[request.method.to_string().as_str()])
            .inc();
        let reply_to = mark_received(&mut request, &source);
        if request.call_id().is_err() {
            // A response must echo the Call-ID (RFC 3261 §8.2.6.2): without one there is
            // nothing valid to send back.
            METRICS
                .messages_dropped
                .with_label_values(&["missing_call_id"])
                .inc();
            return;
        }
        if let Err(problem) = check_request(&request) {
            return self.reject(&request, &reply_to, 400, &problem);
        }
        if request.method != Method::Options
            && request
                .header_value("Max-Forwards")
                .is_some_and(|mf| mf.trim() == "0")
        {
            return self.reject(&request, &reply_to, 483, "Max-Forwards reached 0");
        }
        let Ok(branch) = request.branch() else {
            return self.reject(&request, &reply_to, 400, "the top Via has no branch");
        };
        trace!(method = %request.method, %branch, "request");

        match request.method {
            Method::Ack => {
                let Ok(key) = TransactionKey::server(&request, &Method::Ack) else {
                    return; // an ACK is never answered
                };
                let Delivery::NoMatch(ack) = self.ctx.table.deliver_request(&key, request) else {
                    return;
                };
                let id = match (ack.call_id(), ack.cseq()) {
                    (Ok(call_id), Ok((seq, _))) => (call_id, seq),
                    _ => return,
                };
                if let Delivery::NoMatch(ack) = self.ctx.table.deliver_2xx_ack(&id, ack) {
                    tokio::spawn(self.app.clone().stray_ack(ack, reply_to));
                }
            }
            Method::Cancel => {
                let (Ok(invite), Ok(own)) = (
                    TransactionKey::server(&request, &Method::Invite),
                    TransactionKey::server(&request, &Method::Cancel),
                ) else {
                    return self.reject(&request, &reply_to, 400, "the top Via has no sent-by");
                };
                if let Delivery::NoMatch(cancel) = self.ctx.table.deliver_request(&own, request) {
                    // 200 to the CANCEL first, then the INVITE's 487 (RFC 3261 §9.2).
                    let found = self.ctx.table.contains(&invite);
                    let code = if found { 200 } else { 481 };
                    let mut response =
                        response_to(&cancel, code, Some(&crate::sip::random_token(10)));
                    if !found {
                        response.headers.push(reason_header(
                            481,
                            "no INVITE transaction matches this CANCEL",
                        ));
                    }
                    match ServerTransaction::start_answered(&self.ctx, cancel, reply_to, response) {
                        Ok(_) if found => {
                            self.ctx.table.cancel(&invite);
                        }
                        Ok(_) => {}
                        Err(e) => debug!(%e, "CANCEL without a usable Via"),
                    }
                }
            }
            _ => {
                let Ok(key) = TransactionKey::server(&request, &request.method) else {
                    return self.reject(&request, &reply_to, 400, "the top Via has no sent-by");
                };
                let Delivery::NoMatch(request) = self.ctx.table.deliver_request(&key, request)
                else {
                    return; // a retransmission, absorbed by its transaction
                };
                match self.admit(&source) {
                    Admission::Allowed => {}
                    Admission::Limited { retry_after } => {
                        return self.refuse_over_rate(&request, &reply_to, retry_after);
                    }
                    Admission::Shed => {
                        METRICS
                            .messages_dropped
                            .with_label_values(&["rate_limited"])
                            .inc();
                        return;
                    }
                }
                match ServerTransaction::start(&self.ctx, request, reply_to) {
                    Ok(tx) => {
                        tokio::spawn(self.app.clone().request(tx));
                    }
                    Err(e) => debug!(%e, "request without a usable Via"),
                }
            }
        }
    }

    fn receive_response(&self, response: Response, source: Destination) {
        let (Ok(branch), Ok((_, method))) = (response.branch(), response.cseq()) else {
            METRICS
                .messages_dropped
                .with_label_values(&["invalid_response"])
                .inc();
            return;
        };
        let key = TransactionKey::new(Role::Client, &branch, &method);
        if let Delivery::NoMatch(response) = self.ctx.table.deliver_response(&key, response) {
            let code = response.status_code.code();
            if method == Method::Invite && (200..300).contains(&code) {
                tokio::spawn(self.app.clone().stray_2xx(response, source));
            } else {
                METRICS
                    .messages_dropped
                    .with_label_values(&["stray_response"])
                    .inc();
            }
        }
    }
}

/// The headers every request needs to be handled at all (RFC 3261 §8.1.1).
pub fn check_request(request: &Request) -> Result<(), String> {
    request.call_id().map_err(|e| e.to_string())?;
    let (_, method) = request.cseq().map_err(|e| e.to_string())?;
    if method != request.method {
        return Err(format!(
            "CSeq method {method} does not match the request method {}",
            request.method
        ));
    }
    request.tag_from().map_err(|e| e.to_string())?;
    request.tag_to().map_err(|e| e.to_string())?;
    request.top_via().map_err(|e| e.to_string())?;
    Ok(())
}

/// Adds `received` (when the source differs from sent-by, or the phone asked for
/// `rport`) and fills `rport` (RFC 3581 §4) on the top Via; returns where responses go
/// (RFC 3261 §18.2.2).
///
/// The Via is rewritten as text: rsip's typed Via loses every parameter after one whose
/// value holds a colon (`;x=2001:db8::1;branch=…`, found by fuzzing), and a rewrite that
/// dropped the branch would break the transaction the request belongs to.
pub fn mark_received(request: &mut Request, source: &Destination) -> Destination {
    let Some(via) = request.headers.iter_mut().find_map(|h| match h {
        Header::Via(v) => Some(v),
        _ => None,
    }) else {
        return *source;
    };
    let marked = mark_via(via.value(), source.addr);
    *via = rsip::headers::Via::new(marked.value);
    reply_address(source, marked.rport, marked.sent_by_port)
}

/// Where responses go (RFC 3261 §18.2.2): the connection's source over TCP and when the
/// phone asked for `rport`; otherwise the source IP with the sent-by port (5060 if none).
fn reply_address(source: &Destination, rport: bool, sent_by_port: Option<u16>) -> Destination {
    if source.protocol == Protocol::Tcp || rport {
        return *source;
    }
    Destination {
        addr: SocketAddr::new(source.addr.ip(), sent_by_port.unwrap_or(5060)),
        ..*source
    }
}

/// A top Via value after [`mark_via`].
#[derive(Debug, PartialEq)]
struct MarkedVia {
    value: String,
    /// The phone asked for `rport`: answer to the source port.
    rport: bool,
    sent_by_port: Option<u16>,
}

fn mark_via(value: &str, source: SocketAddr) -> MarkedVia {
    let (head, params) = value.split_once(';').unwrap_or((value, ""));
    let (sent_by_host, sent_by_port) = sent_by_host_port(head);
    let mut marked = head.trim_end().to_owned();
    let mut rport = false;
    for param in params.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let name = param.split('=').next().unwrap_or_default().trim();
        if name.eq_ignore_ascii_case("received") {
            continue;
        }
        marked.push(';');
        if name.eq_ignore_ascii_case("rport") {
            rport = true;
            marked.push_str(&format!("rport={}", source.port()));
        } else {
            marked.push_str(param);
        }
    }
    if rport || sent_by_host.and_then(host_ip) != Some(source.ip()) {
        marked.push_str(&format!(";received={}", source.ip()));
    }
    MarkedVia {
        value: marked,
        rport,
        sent_by_port,
    }
}

/// The host and port of a Via's sent-by.
fn sent_by_host_port(via: &str) -> (Option<&str>, Option<u16>) {
    let Some(host_port) = via_sent_by(via) else {
        return (None, None);
    };
    let (host, port) = match host_port.find(']') {
        Some(close) if host_port.starts_with('[') => {
            let port = host_port[close + 1..].trim_start();
            (&host_port[..=close], port.strip_prefix(':').unwrap_or(port))
        }
        _ => host_port.rsplit_once(':').unwrap_or((host_port, "")),
    };
    (Some(host.trim()), port.trim().parse().ok())
}

/// Where to answer a message rsip could not parse: `rport` means the source; otherwise
/// the source IP with the sent-by port.
pub fn reply_address_raw(via: &str, source: &Destination) -> Destination {
    let rport = via.to_ascii_lowercase().contains("rport");
    reply_address(source, rport, sent_by_host_port(via).1)
}

/// Sends a message outside any transaction (an ACK for a 2xx, a stateless answer).
pub fn send_stateless(wire: &Arc<dyn Wire>, to: &Destination, message: impl Into<SipMessage>) {
    wire.send(to, to_bytes(message));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marked(value: &str, source: &str) -> MarkedVia {
        mark_via(value, source.parse().expect("a socket address"))
    }

    #[test]
    fn received_is_added_when_the_source_differs_from_sent_by() {
        let via = marked(
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1",
            "192.0.2.7:6000",
        );
        assert_eq!(
            via.value,
            "SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1;received=192.0.2.7"
        );
        assert_eq!((via.rport, via.sent_by_port), (false, Some(5070)));
        let same = marked("SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1", "192.0.2.7:6000");
        assert_eq!(same.value, "SIP/2.0/UDP 192.0.2.7;branch=z9hG4bK1");
        assert_eq!(same.sent_by_port, None);
    }

    #[test]
    fn rport_is_filled_and_received_always_added_with_it() {
        let via = marked(
            "SIP/2.0/UDP 192.0.2.7:5060;rport;branch=z9hG4bK2;received=1.2.3.4",
            "192.0.2.7:40000",
        );
        assert_eq!(
            via.value,
            "SIP/2.0/UDP 192.0.2.7:5060;rport=40000;branch=z9hG4bK2;received=192.0.2.7"
        );
        assert!(via.rport);
    }

    #[test]
    fn unparseable_messages_are_answered_at_the_sent_by_port_or_the_source() {
        let udp = Destination::udp("192.0.2.7:6000".parse().expect("an address"));
        let port = |via: &str| reply_address_raw(via, &udp).addr.port();
        assert_eq!(port("SIP/2.0/UDP 10.0.0.5:5070;branch=z9hG4bK1"), 5070);
        assert_eq!(
            port("SIP / 2.0 / UDP 10.0.0.5 : 5071 ;branch=z9hG4bK1"),
            5071
        );
        assert_eq!(port("SIP/2.0/UDP [2001:db8::9]:5072;branch=z9hG4bK1"), 5072);
        assert_eq!(port("SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1"), 5060);
        assert_eq!(port("SIP/2.0/UDP 10.0.0.5:5070;rport"), 6000);
        assert_eq!(port("garbage"), 5060);
        assert_eq!(reply_address_raw("garbage", &udp).addr.ip(), udp.addr.ip());
    }

    #[test]
    fn parameters_with_colons_and_spaced_sent_by_survive() {
        let via = marked(
            "SIP / 2.0 / UDP [2001:db8::9] : 5062 ; maddr=2001:db8::1 ;branch=z9hG4bK3",
            "[2001:db8::9]:5062",
        );
        assert_eq!(
            via.value,
            "SIP / 2.0 / UDP [2001:db8::9] : 5062;maddr=2001:db8::1;branch=z9hG4bK3"
        );
        assert_eq!(via.sent_by_port, Some(5062));
        let encoded = marked(
            "SIP/2.0/TCP v6-2001-db8--9.ipv6.invalid:5063;branch=z9hG4bK4",
            "[2001:db8::9]:1",
        );
        assert!(!encoded.value.contains("received"), "{}", encoded.value);
        assert_eq!(encoded.sent_by_port, Some(5063));
    }
}
