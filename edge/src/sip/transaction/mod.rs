//! RFC 3261 §17 transactions, with RFC 6026's corrections for INVITE 2xx handling.
//!
//! Each transaction is a small tokio task owning its state machine and timers; the core
//! routes messages to it through the [`TransactionTable`]. Transactions are local to the
//! process that created them (retransmissions arrive where the first copy did); dialogs
//! and calls, which must survive a pod, live in shared storage above this layer.
//!
//! | kind              | timers (unreliable transport)                          |
//! |-------------------|--------------------------------------------------------|
//! | INVITE client     | A (retransmit, T1 doubling), B (64·T1 timeout), D (32 s), M (64·T1) |
//! | non-INVITE client | E (T1 doubling to T2), F (64·T1 timeout), K (T4)       |
//! | INVITE server     | G (T1 doubling to T2), H (64·T1 timeout), I (T4), 2xx retransmission until ACK (T1 doubling to T2, 64·T1) |
//! | non-INVITE server | J (64·T1)                                              |
//!
//! On a reliable transport the retransmission timers are off and D, I, J, K are zero.

pub mod client;
pub mod server;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rsip::{Method, Request, Response};
use tokio::sync::mpsc;

use crate::sip::message::{HeaderError, SipHeaders};
use crate::sip::transport::{Destination, Wire};

pub use client::{ClientEvent, ClientTransaction};
pub use server::{ServerEvent, ServerTransaction};

/// RFC 3261's timer base values, configurable per deployment.
#[derive(Debug, Clone, Copy)]
pub struct TimerConfig {
    /// Round-trip estimate (default 500 ms).
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4 s).
    pub t2: Duration,
    /// Longest time a message stays in the network (5 s).
    pub t4: Duration,
}

impl Default for TimerConfig {
    fn default() -> Self {
        TimerConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

impl TimerConfig {
    /// Timers B, F, H, J and M.
    pub fn timeout(&self) -> Duration {
        self.t1 * 64
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Client,
    Server,
}

/// Identifies a transaction: the top Via branch and the method (ACK and CANCEL are
/// matched to the INVITE by the core before lookup), and for server transactions the
/// top Via's sent-by too (RFC 3261 §17.2.3): two hosts that pick the same branch start
/// two transactions, not one and its retransmission.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TransactionKey {
    pub role: Role,
    pub branch: String,
    pub method: String,
    /// Empty for client transactions: the sent-by of their responses is our own.
    pub sent_by: String,
}

impl TransactionKey {
    pub fn new(role: Role, branch: &str, method: &Method) -> Self {
        let method = match method {
            Method::Ack => Method::Invite,
            other => *other,
        };
        TransactionKey {
            role,
            branch: branch.to_owned(),
            method: method.to_string(),
            sent_by: String::new(),
        }
    }

    /// The server transaction `request` belongs to, as `method` (the INVITE's, for its
    /// ACK and CANCEL, which carry the INVITE's top Via).
    pub fn server(request: &Request, method: &Method) -> Result<Self, HeaderError> {
        Ok(TransactionKey {
            sent_by: request.sent_by()?,
            ..Self::new(Role::Server, &request.branch()?, method)
        })
    }
}

/// What the core and the TU feed into a transaction task.
#[derive(Debug)]
pub(crate) enum Input {
    /// A request matching a server transaction (a retransmission, or the ACK).
    Request(Box<Request>),
    /// A response matching a client transaction.
    Response(Box<Response>),
    /// The TU's response for a server transaction.
    Respond(Box<Response>),
    /// A response the TU already put on the wire (`respond_now`), with the bytes sent:
    /// recorded for retransmissions, not sent (or serialised) again.
    Sent(Box<Response>, Vec<u8>),
    /// A CANCEL matched this INVITE server transaction.
    Cancel,
}

/// Routes incoming messages to live transactions.
#[derive(Default)]
pub struct TransactionTable {
    live: Mutex<HashMap<TransactionKey, mpsc::UnboundedSender<Input>>>,
    /// INVITE server transactions that sent a 2xx and wait for its ACK, which carries a
    /// new branch: keyed by (Call-ID, CSeq number).
    awaiting_ack: Mutex<HashMap<(String, u32), mpsc::UnboundedSender<Input>>>,
}

/// What a transaction needs from its surroundings.
#[derive(Clone)]
pub struct Context {
    pub wire: Arc<dyn Wire>,
    pub timers: TimerConfig,
    pub table: Arc<TransactionTable>,
}

/// Result of offering a message to the live transactions.
pub enum Delivery<T> {
    Delivered,
    NoMatch(T),
}

impl TransactionTable {
    fn lock<T>(map: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        // Each operation is a single insert, lookup or remove: consistent after a panic.
        map.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn insert(&self, key: TransactionKey, sender: mpsc::UnboundedSender<Input>) {
        Self::lock(&self.live).insert(key, sender);
    }

    pub(crate) fn remove(&self, key: &TransactionKey) {
        Self::lock(&self.live).remove(key);
    }

    pub(crate) fn expect_ack(&self, id: (String, u32), sender: mpsc::UnboundedSender<Input>) {
        Self::lock(&self.awaiting_ack).insert(id, sender);
    }

    pub(crate) fn forget_ack(&self, id: &(String, u32)) {
        Self::lock(&self.awaiting_ack).remove(id);
    }

    pub fn contains(&self, key: &TransactionKey) -> bool {
        Self::lock(&self.live).contains_key(key)
    }

    /// How many transactions are live (for metrics and tests).
    pub fn len(&self) -> usize {
        Self::lock(&self.live).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn sender(&self, key: &TransactionKey) -> Option<mpsc::UnboundedSender<Input>> {
        Self::lock(&self.live).get(key).cloned()
    }

    /// Offers a request to the server transaction it belongs to (a retransmission, or
    /// the ACK of a non-2xx final response).
    pub fn deliver_request(&self, key: &TransactionKey, request: Request) -> Delivery<Request> {
        send_request(self.sender(key), request)
    }

    /// Offers the ACK of a 2xx to the INVITE server transaction retransmitting it.
    pub fn deliver_2xx_ack(&self, id: &(String, u32), ack: Request) -> Delivery<Request> {
        let sender = Self::lock(&self.awaiting_ack).get(id).cloned();
        send_request(sender, ack)
    }

    /// Offers a response to the client transaction that sent the request.
    pub fn deliver_response(&self, key: &TransactionKey, response: Response) -> Delivery<Response> {
        let Some(sender) = self.sender(key) else {
            return Delivery::NoMatch(response);
        };
        match sender.send(Input::Response(Box::new(response))) {
            Err(mpsc::error::SendError(Input::Response(response))) => Delivery::NoMatch(*response),
            _ => Delivery::Delivered,
        }
    }

    /// Tells an INVITE server transaction that a CANCEL matched it. Returns false when
    /// there is no such transaction (the CANCEL gets 481).
    pub fn cancel(&self, key: &TransactionKey) -> bool {
        self.sender(key)
            .is_some_and(|sender| sender.send(Input::Cancel).is_ok())
    }
}

/// Hands a request to a transaction task, or back to the caller when there is none (or it
/// ended meanwhile).
fn send_request(
    sender: Option<mpsc::UnboundedSender<Input>>,
    request: Request,
) -> Delivery<Request> {
    let Some(sender) = sender else {
        return Delivery::NoMatch(request);
    };
    match sender.send(Input::Request(Box::new(request))) {
        Err(mpsc::error::SendError(Input::Request(request))) => Delivery::NoMatch(*request),
        _ => Delivery::Delivered,
    }
}

/// A fresh branch with RFC 3261's magic cookie.
pub fn new_branch() -> String {
    format!("z9hG4bK{}", crate::sip::random_token(16))
}

/// Sends `bytes` and counts what was sent.
pub(crate) fn send(ctx: &Context, to: &Destination, bytes: &[u8]) {
    ctx.wire.send(to, bytes.to_vec());
}

#[cfg(test)]
pub(crate) mod testing {
    //! A recording wire and helpers shared by the transaction tests, which run on tokio's
    //! paused clock so timer schedules are checked exactly.

    use std::sync::Arc;

    use rsip::{Request, Response, SipMessage};
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use super::*;
    use crate::sip::message::parse;

    pub struct RecordingWire {
        sent: mpsc::UnboundedSender<(Instant, Destination, Vec<u8>)>,
    }

    impl Wire for RecordingWire {
        fn send(&self, to: &Destination, bytes: Vec<u8>) {
            let _ = self.sent.send((Instant::now(), *to, bytes));
        }
    }

    pub struct Harness {
        pub ctx: Context,
        pub sent: mpsc::UnboundedReceiver<(Instant, Destination, Vec<u8>)>,
        pub start: Instant,
    }

    impl Harness {
        pub fn new() -> Self {
            let (tx, sent) = mpsc::unbounded_channel();
            Harness {
                ctx: Context {
                    wire: Arc::new(RecordingWire { sent: tx }),
                    timers: TimerConfig::default(),
                    table: Arc::new(TransactionTable::default()),
                },
                sent,
                start: Instant::now(),
            }
        }

        /// The next message sent, with the time since the harness started.
        pub async fn next_sent(&mut self) -> (std::time::Duration, SipMessage) {
            let (at, _, bytes) = self.sent.recv().await.expect("a message was sent");
            (
                at - self.start,
                parse(&bytes).expect("the edge sends parseable messages"),
            )
        }

        /// When each message sent so far left, without waiting for more.
        pub fn sent_so_far(&mut self) -> Vec<std::time::Duration> {
            let mut times = Vec::new();
            while let Ok((at, _, _)) = self.sent.try_recv() {
                times.push(at - self.start);
            }
            times
        }

        /// Every message sent until the transaction goes quiet for good.
        pub async fn drain_times(&mut self) -> Vec<std::time::Duration> {
            let mut times = Vec::new();
            while let Ok(Some((at, _, _))) =
                tokio::time::timeout(std::time::Duration::from_secs(120), self.sent.recv()).await
            {
                times.push(at - self.start);
            }
            times
        }
    }

    pub fn request(text: &str) -> Request {
        match parse(text.as_bytes()).expect("test request parses") {
            SipMessage::Request(r) => r,
            SipMessage::Response(_) => panic!("expected a request"),
        }
    }

    pub fn response(text: &str) -> Response {
        match parse(text.as_bytes()).expect("test response parses") {
            SipMessage::Response(r) => r,
            SipMessage::Request(_) => panic!("expected a response"),
        }
    }

    pub fn invite(branch: &str) -> Request {
        request(&format!(
            "INVITE sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a>;tag=al\r\nTo: <sip:bob@b>\r\nCall-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    pub fn non_invite(method: &str, branch: &str) -> Request {
        request(&format!(
            "{method} sip:bob@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@a>;tag=al\r\nTo: <sip:bob@b>\r\nCall-ID: call-{branch}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
        ))
    }

    pub fn reply(request: &Request, code: u16, to_tag: &str) -> Response {
        crate::sip::message::response_to(request, code, Some(to_tag))
    }

    pub fn ms(ms: u64) -> std::time::Duration {
        std::time::Duration::from_millis(ms)
    }
}
