//! The edge's transaction user: what it does with each request the SIP core hands up.
//!
//! - with `--auth-credentials`: new calls (INVITE) and REFERs from untrusted sources
//!   must carry digest credentials first ([`crate::auth`]): 401 with a challenge, 403
//!   for wrong ones. Before routing, so a scanner gets the same answer for numbers that
//!   exist and numbers that do not;
//! - OPTIONS: 200 with what the edge supports (phones and load balancers probe with it);
//! - an INVITE opening a call: [`crate::call::setup`] (route, RCML, Dial);
//! - requests inside a call: [`crate::call::in_dialog`], on whichever edge process they
//!   reach;
//! - anything else: 501 with `Allow`.

use std::sync::Arc;

use rsip::{Header, Method, Request, Response};
use tracing::{debug, info};

use crate::auth::{Authenticator, Verdict};
use crate::call::{Services, in_dialog, refusal, setup};
use crate::metrics::METRICS;
use crate::sip::endpoint::Application;
use crate::sip::message::{SipHeaders, response_to};
use crate::sip::random_token;
use crate::sip::transaction::ServerTransaction;
use crate::sip::transport::Destination;

/// Methods this build of the edge handles (the `Allow` header).
pub const ALLOWED_METHODS: &str =
    "INVITE, ACK, CANCEL, BYE, OPTIONS, UPDATE, INFO, MESSAGE, REFER, NOTIFY";

pub struct EdgeApp {
    services: Arc<Services>,
    /// Digest authentication; `None`: off.
    auth: Option<Authenticator>,
}

impl EdgeApp {
    pub fn new(services: Arc<Services>, auth: Option<Authenticator>) -> Arc<Self> {
        Arc::new(EdgeApp { services, auth })
    }

    /// Whether the request may go on; otherwise it has been answered 401 or 403.
    fn authenticated(&self, tx: &ServerTransaction, in_dialog: bool) -> bool {
        let Some(auth) = &self.auth else {
            return true;
        };
        let request = &tx.request;
        let verdict = auth.check(request, tx.source.addr.ip(), in_dialog);
        if verdict == Verdict::NotRequired {
            return true;
        }
        let method = request.method.to_string();
        METRICS
            .auth
            .with_label_values(&[method.as_str(), verdict.label()])
            .inc();
        let call_id = request.call_id().unwrap_or_default();
        match verdict {
            Verdict::NotRequired | Verdict::Trusted => true,
            Verdict::Authenticated { user } => {
                debug!(%call_id, %method, %user, "authenticated");
                true
            }
            Verdict::Challenge { stale, reason } => {
                debug!(%call_id, %method, reason, "challenged");
                tx.respond(auth.challenge(request, stale, reason));
                false
            }
            Verdict::Refused { reason } => {
                info!(%call_id, %method, source = %tx.source.addr.ip(), reason, "authentication failed");
                tx.respond(refusal(request, 403, reason, None));
                false
            }
        }
    }
}

/// 200 to OPTIONS with what the edge supports (RFC 3261 §11.2).
pub fn options_response(request: &Request) -> Response {
    let mut response = response_to(request, 200, Some(&random_token(10)));
    response.headers.push(Header::Allow(ALLOWED_METHODS.into()));
    response
        .headers
        .push(Header::Accept("application/sdp".into()));
    response
}

impl Application for EdgeApp {
    async fn request(self: Arc<Self>, tx: ServerTransaction) {
        let in_dialog = tx.request.tag_to().ok().flatten().is_some();
        if !self.authenticated(&tx, in_dialog) {
            return;
        }
        match tx.request.method {
            Method::Options if !in_dialog => {
                let response = options_response(&tx.request);
                tx.respond(response);
            }
            _ if in_dialog => in_dialog::request(self.services.clone(), tx).await,
            Method::Invite => setup::new_call(self.services.clone(), tx).await,
            Method::Bye | Method::Refer | Method::Update | Method::Info => {
                let response = refusal(&tx.request, 481, "request outside a dialog", None);
                tx.respond(response);
            }
            _ => {
                let mut response = refusal(&tx.request, 501, "method not implemented", None);
                response.headers.push(Header::Allow(ALLOWED_METHODS.into()));
                tx.respond(response);
            }
        }
    }

    async fn stray_ack(self: Arc<Self>, _ack: Request, _source: Destination) {
        // The ACK of a 2xx the edge sent from another process, or after its
        // retransmissions stopped: the callee leg was ACKed when it answered, so there is
        // nothing to relay.
    }

    async fn stray_2xx(self: Arc<Self>, response: Response, source: Destination) {
        in_dialog::stray_2xx(self.services.clone(), response, source).await;
    }
}
