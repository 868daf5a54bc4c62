//! Client transactions (RFC 3261 §17.1, with RFC 6026's Accepted state for INVITE).

use std::time::Duration;

use rsip::{Header, Method, Request, Response};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::server::far_future;
use super::{Context, Input, Role, TransactionKey, send};
use crate::metrics::METRICS;
use crate::sip::message::{HeaderError, SipHeaders, to_bytes};
use crate::sip::transport::Destination;

/// What a client transaction tells the TU.
#[derive(Debug)]
pub enum ClientEvent {
    Provisional(Box<Response>),
    /// A final response. For INVITE, every 2xx is passed up (retransmissions and other
    /// forks included), so the TU can ACK each; a non-2xx has been ACKed already.
    Final(Box<Response>),
    /// No final response within 64·T1 (Timer B or F).
    Timeout,
}

/// The TU's handle on a client transaction.
pub struct ClientTransaction {
    pub key: TransactionKey,
    events: mpsc::UnboundedReceiver<ClientEvent>,
}

impl ClientTransaction {
    /// Sends `request` (which carries its own top Via with a fresh branch) to
    /// `destination` and follows it to its final response. The request is on the wire
    /// when this returns, so requests leave in the order the TU starts them (a NOTIFY
    /// started before a BYE of the same dialog is sent before it, whichever worker the
    /// transactions' tasks run on).
    pub fn start(
        ctx: &Context,
        request: Request,
        destination: Destination,
    ) -> Result<Self, HeaderError> {
        let key = TransactionKey::new(Role::Client, &request.branch()?, &request.method);
        let (input, inbox) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        ctx.table.insert(key.clone(), input);
        // Only an INVITE needs its request again (for the ACK of a non-2xx), and only
        // until its final response.
        let invite = request.method == Method::Invite;
        let (bytes, invite_request) = if invite {
            (to_bytes(request.clone()), Some(request))
        } else {
            (to_bytes(request), None)
        };
        send(ctx, &destination, &bytes);
        let machine = Machine {
            ctx: ctx.clone(),
            key: key.clone(),
            destination,
            events: events_tx,
        };
        tokio::spawn(machine.run(inbox, bytes, invite, invite_request));
        Ok(ClientTransaction { key, events })
    }

    /// The next event; `None` once the transaction has ended.
    pub async fn event(&mut self) -> Option<ClientEvent> {
        self.events.recv().await
    }
}

struct Machine {
    ctx: Context,
    key: TransactionKey,
    destination: Destination,
    events: mpsc::UnboundedSender<ClientEvent>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Calling,
    Proceeding,
    Accepted,
    Completed,
}

impl Machine {
    /// Follows the transaction after `start` sent `bytes`; `request` is the INVITE
    /// (none for other methods), kept for the ACK of a non-2xx final response.
    async fn run(
        self,
        mut inbox: mpsc::UnboundedReceiver<Input>,
        mut bytes: Vec<u8>,
        invite: bool,
        mut request: Option<Request>,
    ) {
        let timers = self.ctx.timers;
        let reliable = self.destination.protocol.is_reliable();

        let mut state = State::Calling;
        let mut interval = timers.t1;
        let mut retransmit_at = (!reliable).then(|| Instant::now() + interval);
        let mut end_at = Instant::now() + timers.timeout();
        let mut ack: Option<Vec<u8>> = None;

        loop {
            let input = tokio::select! {
                input = inbox.recv() => input,
                _ = sleep_until(retransmit_at.unwrap_or_else(far_future)), if retransmit_at.is_some() => {
                    send(&self.ctx, &self.destination, &bytes);
                    // Timer A doubles without bound; Timer E doubles up to T2, and stays at
                    // T2 once a provisional response arrived.
                    interval = if invite { interval * 2 } else { (interval * 2).min(timers.t2) };
                    if state == State::Proceeding && !invite {
                        interval = timers.t2;
                    }
                    retransmit_at = Some(Instant::now() + interval);
                    continue;
                }
                _ = sleep_until(end_at) => {
                    if matches!(state, State::Calling | State::Proceeding) {
                        let (kind, timer) = if invite { ("invite_client", "B") } else { ("non_invite_client", "F") };
                        METRICS.transaction_timeouts.with_label_values(&[kind, timer]).inc();
                        debug!(branch = %self.key.branch, method = %self.key.method, "no final response (Timer {timer})");
                        let _ = self.events.send(ClientEvent::Timeout);
                    }
                    break;
                }
            };
            let Some(input) = input else { break };
            let Input::Response(response) = input else {
                continue;
            };
            let code = response.status_code.code();
            match (state, code) {
                (State::Calling | State::Proceeding, 100..=199) => {
                    if state == State::Calling {
                        state = State::Proceeding;
                        if invite {
                            retransmit_at = None; // Timer A stops
                        } else if !reliable {
                            interval = timers.t2;
                            retransmit_at = Some(Instant::now() + interval);
                        }
                    }
                    let _ = self.events.send(ClientEvent::Provisional(response));
                }
                (State::Calling | State::Proceeding, 200..=299) if invite => {
                    state = State::Accepted;
                    retransmit_at = None;
                    end_at = Instant::now() + timers.timeout(); // Timer M
                    // Accepted only passes 2xx up for 64·T1: nothing to retransmit or ACK
                    // here, so the request and its bytes go now rather than at Timer M
                    // (one such transaction per call set up in the last 32 s).
                    request = None;
                    bytes = Vec::new();
                    let _ = self.events.send(ClientEvent::Final(response));
                }
                (State::Accepted, 200..=299) => {
                    let _ = self.events.send(ClientEvent::Final(response));
                }
                (State::Calling | State::Proceeding, _) => {
                    state = State::Completed;
                    retransmit_at = None;
                    let linger = match (reliable, invite) {
                        (true, _) => Duration::ZERO,
                        (false, true) => Duration::from_secs(32), // Timer D
                        (false, false) => timers.t4,              // Timer K
                    };
                    end_at = Instant::now() + linger;
                    if let Some(request) = request.as_ref().filter(|_| code >= 300) {
                        let bytes = to_bytes(ack_for_non_2xx(request, &response));
                        send(&self.ctx, &self.destination, &bytes);
                        ack = Some(bytes);
                    }
                    let _ = self.events.send(ClientEvent::Final(response));
                }
                (State::Completed, 300..) => {
                    // A retransmitted final response: repeat the ACK (INVITE only).
                    if let Some(ack) = &ack {
                        send(&self.ctx, &self.destination, ack);
                    }
                }
                _ => {}
            }
        }
        self.ctx.table.remove(&self.key);
    }
}

/// The ACK a client INVITE transaction sends for a non-2xx final response (§17.1.1.3).
pub fn ack_for_non_2xx(invite: &Request, response: &Response) -> Request {
    let mut headers = rsip::Headers::default();
    if let Some(via) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(via.clone());
    }
    for header in invite.headers.iter() {
        match header {
            Header::From(_) | Header::CallId(_) | Header::Route(_) | Header::MaxForwards(_) => {
                headers.push(header.clone())
            }
            _ => {}
        }
    }
    if let Some(to) = response.headers.iter().find(|h| matches!(h, Header::To(_))) {
        headers.push(to.clone());
    }
    let seq = invite.cseq().map(|(seq, _)| seq).unwrap_or(1);
    headers.push(Header::CSeq(format!("{seq} ACK").into()));
    Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

/// The CANCEL for a pending INVITE (RFC 3261 §9.1): same Request-URI, Call-ID, From, To,
/// Route and top Via (so it matches the INVITE's transaction), CSeq method CANCEL.
pub fn cancel_for(invite: &Request) -> Request {
    let mut headers = rsip::Headers::default();
    if let Some(via) = invite.headers.iter().find(|h| matches!(h, Header::Via(_))) {
        headers.push(via.clone());
    }
    for header in invite.headers.iter() {
        match header {
            Header::From(_)
            | Header::To(_)
            | Header::CallId(_)
            | Header::Route(_)
            | Header::MaxForwards(_) => headers.push(header.clone()),
            _ => {}
        }
    }
    let seq = invite.cseq().map(|(seq, _)| seq).unwrap_or(1);
    headers.push(Header::CSeq(format!("{seq} CANCEL").into()));
    Request {
        method: Method::Cancel,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::Delivery;
    use crate::sip::transaction::testing::*;
    use rsip::SipMessage;

    fn udp() -> Destination {
        Destination::udp("10.0.0.2:5060".parse().unwrap())
    }

    fn deliver(h: &Harness, tx: &ClientTransaction, response: Response) {
        assert!(matches!(
            h.ctx.table.deliver_response(&tx.key, response),
            Delivery::Delivered
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn invite_client_retransmits_on_timer_a_and_times_out_on_timer_b() {
        let mut h = Harness::new();
        let mut tx = ClientTransaction::start(&h.ctx, invite("z9hG4bKa"), udp()).unwrap();
        assert!(matches!(tx.event().await, Some(ClientEvent::Timeout)));
        assert_eq!(Instant::now() - h.start, ms(32_000), "Timer B = 64·T1");
        let times = h.sent_so_far();
        // Timer A doubles without a cap: 0, 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 s.
        let expected: Vec<_> = [0, 500, 1500, 3500, 7500, 15500, 31500]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(times, expected);
        assert!(tx.event().await.is_none(), "the transaction ended");
        assert!(h.ctx.table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_provisional_response_stops_timer_a() {
        let mut h = Harness::new();
        let request = invite("z9hG4bKprov");
        let mut tx = ClientTransaction::start(&h.ctx, request.clone(), udp()).unwrap();
        h.next_sent().await;
        deliver(&h, &tx, reply(&request, 180, "b"));
        assert!(matches!(
            tx.event().await,
            Some(ClientEvent::Provisional(_))
        ));
        tokio::time::sleep(ms(10_000)).await;
        assert!(h.sent.try_recv().is_err(), "no retransmission after 180");
    }

    #[tokio::test(start_paused = true)]
    async fn a_non_2xx_final_is_acked_by_the_transaction_and_its_retransmission_reacked() {
        let mut h = Harness::new();
        let request = invite("z9hG4bKbusy");
        let mut tx = ClientTransaction::start(&h.ctx, request.clone(), udp()).unwrap();
        h.next_sent().await;
        let busy = reply(&request, 486, "b");
        deliver(&h, &tx, busy.clone());
        assert!(
            matches!(tx.event().await, Some(ClientEvent::Final(r)) if r.status_code.code() == 486)
        );
        let (_, ack) = h.next_sent().await;
        let SipMessage::Request(ack) = ack else {
            panic!("an ACK")
        };
        assert_eq!(ack.method, Method::Ack);
        assert_eq!(
            ack.branch().unwrap(),
            "z9hG4bKbusy",
            "same branch as the INVITE"
        );
        assert_eq!(
            ack.tag_to().unwrap().as_deref(),
            Some("b"),
            "To from the response"
        );
        assert_eq!(ack.cseq().unwrap(), (1, Method::Ack));

        deliver(&h, &tx, busy);
        let (_, again) = h.next_sent().await;
        assert!(matches!(again, SipMessage::Request(r) if r.method == Method::Ack));
        // Timer D (32 s) ends the transaction.
        tokio::time::sleep(ms(32_001)).await;
        assert!(h.ctx.table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn every_2xx_reaches_the_tu_during_timer_m() {
        let mut h = Harness::new();
        let request = invite("z9hG4bKok");
        let mut tx = ClientTransaction::start(&h.ctx, request.clone(), udp()).unwrap();
        h.next_sent().await;
        let ok = reply(&request, 200, "b");
        deliver(&h, &tx, ok.clone());
        assert!(matches!(tx.event().await, Some(ClientEvent::Final(_))));
        // The callee retransmits its 200 (our ACK was lost): the TU hears it again.
        tokio::time::sleep(ms(500)).await;
        deliver(&h, &tx, ok.clone());
        assert!(matches!(tx.event().await, Some(ClientEvent::Final(_))));
        assert!(
            h.sent.try_recv().is_err(),
            "the transaction itself does not ACK a 2xx"
        );
        tokio::time::sleep(ms(32_000)).await;
        assert!(h.ctx.table.is_empty(), "Timer M ended it");
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_client_uses_timer_e_capped_at_t2_then_timer_f() {
        let mut h = Harness::new();
        let mut tx =
            ClientTransaction::start(&h.ctx, non_invite("BYE", "z9hG4bKe"), udp()).unwrap();
        assert!(matches!(tx.event().await, Some(ClientEvent::Timeout)));
        assert_eq!(Instant::now() - h.start, ms(32_000), "Timer F = 64·T1");
        let times = h.sent_so_far();
        let expected: Vec<_> = [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(times, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_final_then_timer_k_absorbs_retransmissions() {
        let mut h = Harness::new();
        let request = non_invite("NOTIFY", "z9hG4bKk");
        let mut tx = ClientTransaction::start(&h.ctx, request.clone(), udp()).unwrap();
        h.next_sent().await;
        deliver(&h, &tx, reply(&request, 200, "b"));
        assert!(matches!(tx.event().await, Some(ClientEvent::Final(_))));
        tokio::time::sleep(ms(1_000)).await;
        deliver(&h, &tx, reply(&request, 200, "b"));
        tokio::time::sleep(ms(1)).await;
        assert!(
            h.sent.try_recv().is_err(),
            "a retransmitted final is absorbed"
        );
        tokio::time::sleep(ms(4_100)).await;
        assert!(h.ctx.table.is_empty(), "Timer K (T4) ended it");
        assert!(tx.event().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn over_tcp_nothing_is_retransmitted() {
        let mut h = Harness::new();
        let tcp = Destination::tcp("10.0.0.2:5060".parse().unwrap());
        let mut tx = ClientTransaction::start(&h.ctx, invite("z9hG4bKt"), tcp).unwrap();
        assert!(matches!(tx.event().await, Some(ClientEvent::Timeout)));
        let mut count = 0;
        while h.sent.try_recv().is_ok() {
            count += 1;
        }
        assert_eq!(count, 1);
    }
}
