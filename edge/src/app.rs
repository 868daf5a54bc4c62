//! The edge's transaction user: what it does with each request the SIP core hands up.
//!
//! Today it answers OPTIONS (phones and load balancers probe with it), refuses requests
//! it does not implement with 501, and answers INVITEs for unknown numbers with 404. The
//! B2BUA that runs RCML plugs in here.

use std::sync::Arc;

use rsip::{Header, Method, Request, Response};
use switchyard_routing::RouteLookup;
use tracing::{Instrument, info, info_span};

use crate::sip::endpoint::Application;
use crate::sip::message::{SipHeaders, reason_header, response_to};
use crate::sip::random_token;
use crate::sip::transaction::ServerTransaction;
use crate::sip::transport::Destination;

/// Methods this build of the edge handles (the `Allow` header).
pub const ALLOWED_METHODS: &str = "OPTIONS, ACK, CANCEL";

pub struct EdgeApp {
    routes: Arc<dyn RouteLookup>,
}

impl EdgeApp {
    pub fn new(routes: Arc<dyn RouteLookup>) -> Arc<Self> {
        Arc::new(EdgeApp { routes })
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

fn refusal(request: &Request, code: u16, reason: &str) -> Response {
    let mut response = response_to(request, code, Some(&random_token(10)));
    response.headers.push(reason_header(code, reason));
    if code == 501 || code == 405 {
        response.headers.push(Header::Allow(ALLOWED_METHODS.into()));
    }
    response
}

impl Application for EdgeApp {
    async fn request(self: Arc<Self>, tx: ServerTransaction) {
        let call_id = tx.request.call_id().unwrap_or_default();
        let span = info_span!("sip", %call_id, method = %tx.request.method);
        async move {
            let request = &tx.request;
            let response = match request.method {
                Method::Options => options_response(request),
                Method::Invite if request.tag_to().ok().flatten().is_none() => {
                    let dialled = request.uri.user().unwrap_or_default().to_owned();
                    match self.routes.lookup(&dialled) {
                        None => {
                            info!(%dialled, "no route for the dialled number");
                            refusal(request, 404, "no PhoneNumber matches the dialled number")
                        }
                        Some(route) => {
                            info!(%dialled, owner = %route.owner, "call handling is not available in this build");
                            refusal(request, 501, "calls are not implemented in this build")
                        }
                    }
                }
                _ if request.tag_to().ok().flatten().is_some() => {
                    refusal(request, 481, "no such dialog")
                }
                _ => refusal(request, 501, "method not implemented"),
            };
            tx.respond(response);
        }
        .instrument(span)
        .await
    }

    async fn stray_ack(self: Arc<Self>, _ack: Request, _source: Destination) {}

    async fn stray_2xx(self: Arc<Self>, _response: Response, _source: Destination) {}
}
