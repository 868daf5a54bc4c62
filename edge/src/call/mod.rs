//! Calls: the B2BUA that runs RCML.
//!
//! - [`record`]: the call record kept in the call store;
//! - [`setup`]: a new INVITE: route, fetch RCML, run its verbs, `<Dial>` the callee;
//! - [`in_dialog`]: requests inside an answered call (BYE, re-INVITE, ...), handled by
//!   whichever edge process receives them;
//! - [`targets`]: turning Dial nouns into a Request-URI and a next hop;
//! - [`timers`]: timers that fire even if the process that set them died;
//! - [`transfer`]: blind transfer (REFER) of an answered call.
//!
//! The process that receives a call's INVITE drives its set-up (the INVITE transactions
//! live there); every state change is committed to the store, so once the call is up any
//! process can carry it on.

pub mod in_dialog;
pub mod record;
pub mod setup;
pub mod targets;
pub mod timers;
pub mod transfer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rsip::{Header, Request, Response};
use switchyard_routing::RouteLookup;

use crate::ratelimit::CallLimit;
use crate::rcml::Fetcher;
use crate::sip::dialog::LocalIdentity;
use crate::sip::message::{reason_header, response_to};
use crate::sip::transaction::Context;
use crate::sip::transport::Protocol;
use crate::store::AnyCallStore;

/// What every call handler shares.
pub struct Services {
    pub sip: Context,
    /// `host:port` of this process for Via (so responses come back here).
    pub local_sent_by: String,
    /// `host:port` phones reach the edge at, for Contact.
    pub advertise: String,
    pub fetcher: Fetcher,
    pub store: AnyCallStore,
    pub routes: Arc<dyn RouteLookup>,
    /// Where `<Number>` dials go (`host:port`).
    pub outbound_proxy: String,
    /// This process's name (owner of the calls it sets up).
    pub pod: String,
    pub account_sid: String,
    /// Install-wide REFER target policy (`--refer-target-allow`), for numbers without
    /// their own `referTargetAllow`. Empty: every target is allowed.
    pub refer_target_allow: Vec<regex::Regex>,
    /// REFERs a call may send per window (`--refer-limit-per-call`): REFER storms.
    pub refer_limit: CallLimit,
    draining: AtomicBool,
}

impl Services {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sip: Context,
        local_sent_by: String,
        advertise: String,
        fetcher: Fetcher,
        store: AnyCallStore,
        routes: Arc<dyn RouteLookup>,
        outbound_proxy: String,
        pod: String,
        account_sid: String,
        refer_target_allow: Vec<regex::Regex>,
        refer_limit: CallLimit,
    ) -> Arc<Self> {
        Arc::new(Services {
            sip,
            local_sent_by,
            advertise,
            fetcher,
            store,
            routes,
            outbound_proxy,
            pod,
            account_sid,
            refer_target_allow,
            refer_limit,
            draining: AtomicBool::new(false),
        })
    }

    pub fn identity(&self, protocol: Protocol) -> LocalIdentity {
        LocalIdentity {
            via_sent_by: self.local_sent_by.clone(),
            protocol,
            contact: self.advertise.clone(),
        }
    }

    /// The Contact header value of the edge.
    pub fn contact(&self) -> String {
        format!("<sip:switchyard@{}>", self.advertise)
    }

    /// On SIGTERM: new calls are refused; calls in progress go on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// A refusal with a `Reason` header (and `Retry-After` when the refusal is temporary).
pub fn refusal(request: &Request, code: u16, reason: &str, retry_after: Option<u32>) -> Response {
    let mut response = response_to(request, code, Some(&crate::sip::random_token(10)));
    response.headers.push(reason_header(code, reason));
    if let Some(seconds) = retry_after {
        response
            .headers
            .push(Header::RetryAfter(seconds.to_string().into()));
    }
    response
}

/// What a new INVITE from the edge (a Dial, or a transfer's call to its target) carries.
pub struct NewInvite<'a> {
    pub uri: &'a str,
    pub peer: &'a record::Peer,
    pub call_id: &'a str,
    /// `From` user and display name (empty: none), and our tag.
    pub from_user: &'a str,
    pub display_name: &'a str,
    pub from_tag: &'a str,
    pub max_forwards: u32,
    /// `(Content-Type, body)`; `None`: an INVITE without offer (third-party call control).
    pub body: Option<(String, Vec<u8>)>,
}

impl Services {
    /// Builds an out-of-dialog INVITE with this process in Via and the advertised address
    /// in Contact. `None` when the URI is not a valid SIP URI.
    pub fn new_invite(&self, invite: NewInvite<'_>) -> Option<Request> {
        let display = if invite.display_name.is_empty() {
            String::new()
        } else {
            format!("\"{}\" ", invite.display_name.replace('"', ""))
        };
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(
            format!(
                "SIP/2.0/{} {};branch={};rport",
                invite.peer.protocol.via_token(),
                self.local_sent_by,
                crate::sip::transaction::new_branch()
            )
            .into(),
        ));
        headers.push(Header::MaxForwards(invite.max_forwards.to_string().into()));
        headers.push(Header::From(
            format!(
                "{display}<sip:{}@{}>;tag={}",
                invite.from_user, self.advertise, invite.from_tag
            )
            .into(),
        ));
        headers.push(Header::To(format!("<{}>", invite.uri).into()));
        headers.push(Header::CallId(invite.call_id.to_owned().into()));
        headers.push(Header::CSeq("1 INVITE".into()));
        headers.push(Header::Contact(self.contact().into()));
        headers.push(Header::Allow(crate::app::ALLOWED_METHODS.into()));
        let body = match invite.body {
            Some((content_type, body)) => {
                headers.push(Header::ContentType(content_type.into()));
                body
            }
            None => Vec::new(),
        };
        Some(Request {
            method: rsip::Method::Invite,
            uri: crate::sip::message::parse_uri(invite.uri)?,
            version: rsip::Version::V2,
            headers,
            body,
        })
    }
}
