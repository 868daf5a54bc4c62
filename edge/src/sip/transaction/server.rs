//! Server transactions (RFC 3261 §17.2), INVITE and non-INVITE.
//!
//! The INVITE server transaction also retransmits its 2xx until the ACK arrives (the UAS
//! core's duty in RFC 3261 §13.3.1.4, kept here so every 2xx the edge sends is covered)
//! and answers a matched CANCEL with 487 Request Terminated.

use std::time::Duration;

use rsip::{Method, Request, Response};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use super::{Context, Input, TransactionKey, send};
use crate::metrics::METRICS;
use crate::sip::message::{SipHeaders, response_to, to_bytes};
use crate::sip::transport::Destination;

/// What a server transaction tells the TU after the request.
#[derive(Debug)]
pub enum ServerEvent {
    /// A CANCEL matched this INVITE before its final response; 487 has been sent.
    Cancelled,
    /// The ACK for the 2xx arrived (the dialog is confirmed).
    Acked(Box<Request>),
    /// No ACK for the final response within 64·T1 (Timer H).
    AckTimeout,
}

/// The TU's handle on a server transaction.
pub struct ServerTransaction {
    pub request: Request,
    pub source: Destination,
    input: mpsc::UnboundedSender<Input>,
    events: mpsc::UnboundedReceiver<ServerEvent>,
    wire: std::sync::Arc<dyn crate::sip::transport::Wire>,
}

impl ServerTransaction {
    /// Starts a transaction for a new request. INVITEs get 100 Trying at once (§17.2.1:
    /// the TU is not known to answer within 200 ms: it may be fetching RCML).
    pub fn start(
        ctx: &Context,
        request: Request,
        source: Destination,
    ) -> Result<Self, super::super::message::HeaderError> {
        Self::start_with(ctx, request, source, None)
    }

    /// Starts a non-INVITE transaction whose final response is sent right away, on the
    /// caller's task: the 200 to a CANCEL must reach the wire before the 487 that the
    /// CANCEL makes the INVITE's transaction send (RFC 3261 §9.2 orders them so).
    pub fn start_answered(
        ctx: &Context,
        request: Request,
        source: Destination,
        response: Response,
    ) -> Result<Self, super::super::message::HeaderError> {
        Self::start_with(ctx, request, source, Some(response))
    }

    fn start_with(
        ctx: &Context,
        request: Request,
        source: Destination,
        answered: Option<Response>,
    ) -> Result<Self, super::super::message::HeaderError> {
        let key = TransactionKey::server(&request, &request.method)?;
        let (input, inbox) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        ctx.table.insert(key.clone(), input.clone());
        let mut machine = Machine {
            ctx: ctx.clone(),
            key,
            destination: source,
            invite: request.method == Method::Invite,
            events: events_tx,
            input: input.clone(),
            last_response: None,
            ack_id: None,
        };
        if machine.invite {
            machine.send(response_to(&request, 100, None));
        }
        let answered = answered.filter(|_| !machine.invite).map(|response| {
            machine.last_response = Some(machine.send(response));
        });
        tokio::spawn(machine.run(inbox, request.clone(), answered.is_some()));
        Ok(ServerTransaction {
            request,
            source,
            input,
            events,
            wire: ctx.wire.clone(),
        })
    }

    /// Sends a final response to a non-INVITE request on the caller's task, so that it is
    /// on the wire before anything the caller does next (the NOTIFY that follows a 202
    /// must not overtake it); the transaction then absorbs retransmissions as usual.
    pub fn respond_now(&self, response: Response) {
        METRICS.response_sent(
            &self.request.method.to_string(),
            response.status_code.code(),
        );
        let bytes = to_bytes(response.clone());
        self.wire.send(&self.source, bytes.clone());
        let _ = self.input.send(Input::Sent(Box::new(response), bytes));
    }

    /// Sends a response (provisional or final) through the transaction.
    pub fn respond(&self, response: Response) {
        let _ = self.input.send(Input::Respond(Box::new(response)));
    }

    /// The next event; `None` once the transaction has ended.
    pub async fn event(&mut self) -> Option<ServerEvent> {
        self.events.recv().await
    }
}

struct Machine {
    ctx: Context,
    key: TransactionKey,
    destination: Destination,
    invite: bool,
    events: mpsc::UnboundedSender<ServerEvent>,
    input: mpsc::UnboundedSender<Input>,
    last_response: Option<Vec<u8>>,
    ack_id: Option<(String, u32)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No final response yet (Trying/Proceeding).
    Proceeding,
    /// INVITE: 2xx sent, retransmitting it until the ACK (RFC 6026 "Accepted").
    Accepted,
    /// Final non-2xx sent (INVITE: waiting for ACK; non-INVITE: absorbing retransmissions).
    Completed,
    /// INVITE: ACK received, absorbing ACK retransmissions (Timer I).
    Confirmed,
}

impl Machine {
    /// Sends a response and returns its bytes, to be kept for retransmissions: each
    /// response is serialised once.
    fn send(&self, response: Response) -> Vec<u8> {
        METRICS.response_sent(&self.key.method, response.status_code.code());
        let bytes = to_bytes(response);
        send(&self.ctx, &self.destination, &bytes);
        bytes
    }

    fn resend_last(&self) {
        if let Some(bytes) = &self.last_response {
            send(&self.ctx, &self.destination, bytes);
        }
    }

    fn reliable(&self) -> bool {
        self.destination.protocol.is_reliable()
    }

    /// `answered`: a non-INVITE final response was already sent (`start_answered`).
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Input>,
        request: Request,
        answered: bool,
    ) {
        let timers = self.ctx.timers;
        let mut state = if answered {
            State::Completed
        } else {
            State::Proceeding
        };
        // Retransmission timer (G, or the 2xx retransmission) and its current interval.
        let mut retransmit_at: Option<Instant> = None;
        let mut interval = timers.t1;
        // Timer H / J / I / 2xx give-up: when the transaction ends.
        let mut end_at: Option<Instant> = answered.then(|| {
            Instant::now()
                + if self.reliable() {
                    Duration::ZERO
                } else {
                    timers.timeout()
                }
        });

        loop {
            let input = tokio::select! {
                input = inbox.recv() => input,
                _ = sleep_until(retransmit_at.unwrap_or_else(far_future)), if retransmit_at.is_some() => {
                    self.resend_last();
                    interval = (interval * 2).min(timers.t2);
                    retransmit_at = Some(Instant::now() + interval);
                    continue;
                }
                _ = sleep_until(end_at.unwrap_or_else(far_future)), if end_at.is_some() => {
                    if matches!(state, State::Accepted | State::Completed) && self.invite {
                        METRICS.transaction_timeouts.with_label_values(&["invite_server", "H"]).inc();
                        debug!(branch = %self.key.branch, "no ACK for the final response (Timer H)");
                        let _ = self.events.send(ServerEvent::AckTimeout);
                    }
                    break;
                }
            };
            let Some(input) = input else { break };
            let (input, sent) = match input {
                Input::Sent(response, bytes) => (Input::Respond(response), Some(bytes)),
                other => (other, None),
            };
            match input {
                Input::Respond(response) => {
                    if !matches!(state, State::Proceeding) {
                        continue; // a final response was already sent
                    }
                    let code = response.status_code.code();
                    if self.invite && (200..300).contains(&code) {
                        // Before the 2xx leaves: its ACK (a new branch, matched by Call-ID
                        // and CSeq) can be back and handled on another worker before this
                        // task runs again. Unregistered, it was dropped as stray, and
                        // Timer H then hung up a call that was fine (seen under the
                        // transfer benchmark's load).
                        if let (Ok(call_id), Ok((seq, _))) = (request.call_id(), request.cseq()) {
                            let id = (call_id, seq);
                            self.ctx.table.expect_ack(id.clone(), self.input.clone());
                            self.ack_id = Some(id);
                        }
                    }
                    self.last_response = Some(match sent {
                        Some(bytes) => bytes,
                        None => self.send(*response),
                    });
                    match (self.invite, code) {
                        (_, 100..=199) => {}
                        (true, 200..=299) => {
                            state = State::Accepted;
                            interval = timers.t1;
                            retransmit_at = (!self.reliable()).then(|| Instant::now() + interval);
                            end_at = Some(Instant::now() + timers.timeout());
                        }
                        (true, _) => {
                            state = State::Completed;
                            interval = timers.t1;
                            retransmit_at = (!self.reliable()).then(|| Instant::now() + interval);
                            end_at = Some(Instant::now() + timers.timeout());
                        }
                        (false, _) => {
                            state = State::Completed;
                            let j = if self.reliable() {
                                Duration::ZERO
                            } else {
                                timers.timeout()
                            };
                            end_at = Some(Instant::now() + j);
                        }
                    }
                }
                Input::Request(incoming) if incoming.method == Method::Ack => match state {
                    State::Accepted => {
                        let _ = self.events.send(ServerEvent::Acked(incoming));
                        break;
                    }
                    State::Completed if self.invite => {
                        state = State::Confirmed;
                        retransmit_at = None;
                        let i = if self.reliable() {
                            Duration::ZERO
                        } else {
                            timers.t4
                        };
                        end_at = Some(Instant::now() + i);
                    }
                    _ => {} // ACK retransmissions are absorbed
                },
                // A retransmission of the request: repeat the last response, if any.
                Input::Request(_) => self.resend_last(),
                Input::Cancel => {
                    if self.invite && state == State::Proceeding {
                        let terminated =
                            response_to(&request, 487, Some(&crate::sip::random_token(10)));
                        self.last_response = Some(self.send(terminated));
                        state = State::Completed;
                        interval = timers.t1;
                        retransmit_at = (!self.reliable()).then(|| Instant::now() + interval);
                        end_at = Some(Instant::now() + timers.timeout());
                        let _ = self.events.send(ServerEvent::Cancelled);
                    }
                }
                Input::Response(_) | Input::Sent(..) => {}
            }
        }
        self.ctx.table.remove(&self.key);
        if let Some(id) = &self.ack_id {
            self.ctx.table.forget_ack(id);
        }
    }
}

pub(crate) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::transaction::testing::*;
    use crate::sip::transaction::{Delivery, TransactionKey};
    use crate::sip::transport::Destination;
    use rsip::SipMessage;

    fn udp() -> Destination {
        Destination::udp("10.0.0.1:5060".parse().unwrap())
    }

    fn code(message: &SipMessage) -> u16 {
        match message {
            SipMessage::Response(r) => r.status_code.code(),
            SipMessage::Request(_) => 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn invite_server_sends_trying_and_retransmits_non_2xx_on_timer_g_until_h() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKg");
        let mut tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        let (at, trying) = h.next_sent().await;
        assert_eq!((at, code(&trying)), (ms(0), 100));

        tx.respond(reply(&invite, 486, "t"));
        let times = h.drain_times().await;
        // 486 at 0, then Timer G: 0.5, 1.5, 3.5, 7.5, 11.5, ... (capped at T2 = 4 s) until
        // Timer H at 32 s.
        let expected: Vec<_> = [
            0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500,
        ]
        .into_iter()
        .map(ms)
        .collect();
        assert_eq!(times, expected);
        assert!(matches!(tx.event().await, Some(ServerEvent::AckTimeout)));
        assert!(h.ctx.table.is_empty(), "Timer H ends the transaction");
    }

    #[tokio::test(start_paused = true)]
    async fn invite_server_absorbs_the_ack_then_ends_after_timer_i() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKi");
        let tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        h.next_sent().await; // 100
        tx.respond(reply(&invite, 404, "t"));
        h.next_sent().await; // 404
        let key = TransactionKey::server(&invite, &Method::Ack).unwrap();
        let ack = request(
            "ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKi\r\nFrom: <sip:alice@a>;tag=al\r\nTo: <sip:bob@b>;tag=t\r\nCall-ID: call-z9hG4bKi\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        );
        assert!(matches!(
            h.ctx.table.deliver_request(&key, ack.clone()),
            Delivery::Delivered
        ));
        tokio::time::sleep(ms(1)).await;
        // ACK retransmissions are absorbed during Timer I (T4 = 5 s)...
        assert!(matches!(
            h.ctx.table.deliver_request(&key, ack.clone()),
            Delivery::Delivered
        ));
        tokio::time::sleep(ms(4_900)).await;
        assert!(h.ctx.table.contains(&key));
        // ...and the transaction ends when it fires; nothing more was sent.
        tokio::time::sleep(ms(200)).await;
        assert!(!h.ctx.table.contains(&key));
        assert!(
            h.sent.try_recv().is_err(),
            "no retransmission after the ACK"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_retransmitted_invite_gets_the_last_response_again() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKr");
        let tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        h.next_sent().await; // 100
        tx.respond(reply(&invite, 180, "t"));
        let (_, ringing) = h.next_sent().await;
        assert_eq!(code(&ringing), 180);
        let key = TransactionKey::server(&invite, &Method::Invite).unwrap();
        assert!(matches!(
            h.ctx.table.deliver_request(&key, invite.clone()),
            Delivery::Delivered
        ));
        let (_, again) = h.next_sent().await;
        assert_eq!(code(&again), 180);
    }

    #[tokio::test(start_paused = true)]
    async fn a_2xx_is_retransmitted_until_its_ack_arrives() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKok");
        let mut tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        h.next_sent().await; // 100
        tx.respond(reply(&invite, 200, "t"));
        let (t0, ok) = h.next_sent().await;
        assert_eq!((t0, code(&ok)), (ms(0), 200));
        assert_eq!(h.next_sent().await.0, ms(500));
        assert_eq!(h.next_sent().await.0, ms(1500));
        // The ACK for a 2xx has its own branch: matched by Call-ID and CSeq number.
        let ack = request(
            "ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKnew\r\nFrom: <sip:alice@a>;tag=al\r\nTo: <sip:bob@b>;tag=t\r\nCall-ID: call-z9hG4bKok\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        );
        let id = ("call-z9hG4bKok".to_owned(), 1);
        assert!(matches!(
            h.ctx.table.deliver_2xx_ack(&id, ack),
            Delivery::Delivered
        ));
        assert!(matches!(tx.event().await, Some(ServerEvent::Acked(_))));
        assert!(
            h.drain_times().await.is_empty(),
            "retransmission stops at the ACK"
        );
        assert!(h.ctx.table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_2xx_without_ack_gives_up_after_64_t1() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKnoack");
        let mut tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        h.next_sent().await;
        tx.respond(reply(&invite, 200, "t"));
        assert!(matches!(tx.event().await, Some(ServerEvent::AckTimeout)));
        assert_eq!(tokio::time::Instant::now() - h.start, ms(32_000), "64·T1");
        let times = h.sent_so_far();
        assert_eq!(times.first(), Some(&ms(0)));
        assert_eq!(times.last(), Some(&ms(31_500)));
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_before_the_final_response_ends_the_invite_with_487() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKc");
        let mut tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        h.next_sent().await;
        let key = TransactionKey::server(&invite, &Method::Invite).unwrap();
        assert!(h.ctx.table.cancel(&key));
        let (_, terminated) = h.next_sent().await;
        assert_eq!(code(&terminated), 487);
        assert!(matches!(tx.event().await, Some(ServerEvent::Cancelled)));
        // The TU's late 200 is not sent: the transaction already has its final response.
        tx.respond(reply(&invite, 200, "t"));
        let (_, next) = h.next_sent().await;
        assert_eq!(code(&next), 487, "only 487 retransmissions follow");
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_racing_a_200_leaves_the_200() {
        let mut h = Harness::new();
        let invite = invite("z9hG4bKrace");
        let tx = ServerTransaction::start(&h.ctx, invite.clone(), udp()).unwrap();
        h.next_sent().await;
        tx.respond(reply(&invite, 200, "t"));
        let key = TransactionKey::server(&invite, &Method::Invite).unwrap();
        assert!(
            h.ctx.table.cancel(&key),
            "the INVITE transaction still exists: CANCEL gets 200"
        );
        let (_, first) = h.next_sent().await;
        let (_, second) = h.next_sent().await;
        assert_eq!(
            (code(&first), code(&second)),
            (200, 200),
            "no 487 after a 200"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn non_invite_server_absorbs_retransmissions_and_ends_on_timer_j() {
        let mut h = Harness::new();
        let options = non_invite("OPTIONS", "z9hG4bKj");
        let tx = ServerTransaction::start(&h.ctx, options.clone(), udp()).unwrap();
        let key = TransactionKey::server(&options, &Method::Options).unwrap();
        // A retransmission before the TU answers is absorbed silently.
        assert!(matches!(
            h.ctx.table.deliver_request(&key, options.clone()),
            Delivery::Delivered
        ));
        tokio::time::sleep(ms(10)).await;
        assert!(h.sent.try_recv().is_err());
        tx.respond(reply(&options, 200, "t"));
        assert_eq!(code(&h.next_sent().await.1), 200);
        tokio::time::sleep(ms(10_000)).await;
        assert!(matches!(
            h.ctx.table.deliver_request(&key, options.clone()),
            Delivery::Delivered
        ));
        assert_eq!(
            code(&h.next_sent().await.1),
            200,
            "a late retransmission gets the response again"
        );
        tokio::time::sleep(ms(22_100)).await;
        assert!(!h.ctx.table.contains(&key), "Timer J (32 s) ended it");
    }

    #[tokio::test(start_paused = true)]
    async fn respond_now_puts_the_response_on_the_wire_before_returning() {
        let mut h = Harness::new();
        let refer = non_invite("REFER", "z9hG4bKnow");
        let tx = ServerTransaction::start(&h.ctx, refer.clone(), udp()).unwrap();
        tx.respond_now(reply(&refer, 202, "t"));
        // Already sent: no task had to run for it.
        let (_, _, bytes) = h.sent.try_recv().expect("sent synchronously");
        assert!(bytes.starts_with(b"SIP/2.0 202 Accepted"));
        tokio::time::sleep(ms(1)).await;
        assert!(
            h.sent.try_recv().is_err(),
            "the transaction does not send it again"
        );
        // A retransmitted REFER still gets the 202 from the transaction.
        let key = TransactionKey::server(&refer, &Method::Refer).unwrap();
        assert!(matches!(
            h.ctx.table.deliver_request(&key, refer.clone()),
            Delivery::Delivered
        ));
        assert_eq!(code(&h.next_sent().await.1), 202);
    }

    #[tokio::test(start_paused = true)]
    async fn over_tcp_nothing_is_retransmitted_and_timer_j_is_zero() {
        let mut h = Harness::new();
        let options = non_invite("OPTIONS", "z9hG4bKtcp");
        let tcp = Destination::tcp("10.0.0.1:5060".parse().unwrap());
        let tx = ServerTransaction::start(&h.ctx, options.clone(), tcp).unwrap();
        tx.respond(reply(&options, 200, "t"));
        assert_eq!(code(&h.next_sent().await.1), 200);
        tokio::time::sleep(ms(1)).await;
        assert!(h.ctx.table.is_empty());

        let invite = invite("z9hG4bKtcpi");
        let _tx = ServerTransaction::start(&h.ctx, invite.clone(), tcp).unwrap();
        h.next_sent().await;
        _tx.respond(reply(&invite, 486, "t"));
        let times = h.drain_times().await;
        assert_eq!(times.len(), 1, "one 486, no Timer G over TCP: {times:?}");
    }

    /// A peer so quick that its ACK is handled while the 2xx is still being sent (as on a
    /// loaded box, where another worker takes the ACK before this task runs again).
    struct AckingWire {
        table: std::sync::Arc<crate::sip::transaction::TransactionTable>,
        ack: Request,
    }

    impl crate::sip::transport::Wire for AckingWire {
        fn send(&self, _to: &Destination, bytes: Vec<u8>) {
            if bytes.starts_with(b"SIP/2.0 200") {
                let delivered = self
                    .table
                    .deliver_2xx_ack(&("call-z9hG4bKq".into(), 1), self.ack.clone());
                assert!(matches!(delivered, Delivery::Delivered), "ACK not matched");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ack_arriving_while_the_2xx_is_sent_confirms_the_transaction() {
        let table = std::sync::Arc::new(crate::sip::transaction::TransactionTable::default());
        let invite = invite("z9hG4bKq");
        let ack = request(
            "ACK sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa2\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a>;tag=al\r\nTo: <sip:bob@b>;tag=t\r\nCall-ID: call-z9hG4bKq\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        );
        let ctx = crate::sip::transaction::Context {
            wire: std::sync::Arc::new(AckingWire {
                table: table.clone(),
                ack,
            }),
            timers: crate::sip::transaction::TimerConfig::default(),
            table,
        };
        let mut tx = ServerTransaction::start(&ctx, invite.clone(), udp()).unwrap();
        tx.respond(reply(&invite, 200, "t"));
        assert!(
            matches!(tx.event().await, Some(ServerEvent::Acked(_))),
            "the ACK confirmed the transaction (not Timer H)"
        );
    }
}
