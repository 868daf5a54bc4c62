//! A new call: the INVITE to a number, its RCML, and `<Dial>`.
//!
//! The process that receives the INVITE drives the set-up: it owns the caller's INVITE
//! server transaction and the callee's INVITE client transaction. Each step is committed
//! to the call store first, so that requests reaching other processes (and another
//! process adopting the call if this one dies) see the call as it is.

use std::sync::Arc;
use std::time::Duration;

use rsip::{Header, Method, Request, Response};
use switchyard_routing::{AppUrl, HttpMethod, Route};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, info, info_span, warn};

use crate::call::record::{
    CallRecord, CallRoute, CallState, DialRecord, DialStatus, ENDED_TTL, LIVE_TTL, Leg, Peer,
    now_ms,
};
use crate::call::targets::{request_uri, resolve};
use crate::call::{NewInvite, Services, refusal};
use crate::metrics::METRICS;
use crate::rcml::{Dial, Document, Fetched, Purpose, Verb, resolve as resolve_url};
use crate::sip::dialog::Dialog;
use crate::sip::endpoint::send_stateless;
use crate::sip::message::{SipHeaders, response_to};
use crate::sip::random_token;
use crate::sip::transaction::client::cancel_for;
use crate::sip::transaction::{ClientEvent, ClientTransaction, ServerEvent, ServerTransaction};
use crate::store::{
    CallStore, Commit, Op, StoreError, dialog_id, edge_call_id, new_call_sid, tag_for_sip_call_id,
};

/// How long the caller may wait for its final response after a CANCEL to the callee.
const CANCEL_GRACE: Duration = Duration::from_secs(4);
/// Margin on the set-up lease beyond the Dial timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(2);

/// Handles an INVITE that opens a new call.
pub async fn new_call(services: Arc<Services>, tx: ServerTransaction) {
    let sip_call_id = tx.request.call_id().unwrap_or_default();
    let span = info_span!("call", call_id = %sip_call_id, sid = tracing::field::Empty);
    async move {
        let request = tx.request.clone();
        if services.is_draining() {
            tx.respond(refusal(&request, 503, "edge is shutting down", Some(1)));
            return;
        }
        let dialled = request.uri.user().unwrap_or_default().to_owned();
        let Some(route) = services.routes.lookup(&dialled) else {
            info!(%dialled, "no route for the dialled number");
            METRICS.calls.with_label_values(&["no_route"]).inc();
            tx.respond(refusal(
                &request,
                404,
                "no PhoneNumber matches the dialled number",
                None,
            ));
            return;
        };
        if request.header_value("Contact").is_none() {
            tx.respond(refusal(&request, 400, "INVITE without Contact", None));
            return;
        }
        let mut setup = match Setup::create(services.clone(), tx, (*route).clone(), &dialled).await
        {
            Ok(setup) => setup,
            Err((tx, error)) => {
                warn!(%error, "call store unavailable: refusing the call");
                METRICS
                    .calls
                    .with_label_values(&["store_unavailable"])
                    .inc();
                tx.respond(refusal(
                    &request,
                    503,
                    "call state store unavailable",
                    Some(5),
                ));
                return;
            }
        };
        tracing::Span::current().record("sid", setup.record.sid.as_str());
        info!(%dialled, owner = %setup.route.owner, "new call");
        setup.run().await;
        if setup.record.state == CallState::Answered {
            // The caller's ACK confirms its dialog; without it the call cannot go on.
            match setup.tx.event().await {
                Some(ServerEvent::AckTimeout) => {
                    warn!("no ACK from the caller: ending the call");
                    crate::call::in_dialog::hang_up(
                        &services,
                        &setup.record.sid,
                        "no ACK from the caller",
                    )
                    .await;
                }
                Some(ServerEvent::Acked(caller_ack)) => {
                    if let Some((mut ack, destination, cell)) = setup.deferred_ack.take() {
                        if !caller_ack.body.is_empty() {
                            let content_type = caller_ack
                                .header_value("Content-Type")
                                .unwrap_or_else(|| "application/sdp".into());
                            ack.headers.push(Header::ContentType(content_type.into()));
                            ack.body = caller_ack.body.clone();
                        }
                        send_stateless(&services.sip.wire, &destination, ack.clone());
                        *cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(ack);
                    }
                }
                _ => {}
            }
        }
    }
    .instrument(span)
    .await
}

enum DialResult {
    /// The callee answered and the legs are bridged: the set-up is over.
    Bridged,
    /// The caller cancelled: nothing more to run.
    CallerGone,
    /// The callee did not answer: the RCML goes on.
    NotConnected(DialStatus),
}

struct Setup {
    s: Arc<Services>,
    tx: ServerTransaction,
    /// Our To tag towards the caller.
    local_tag: String,
    /// The route the call came in on (the record keeps what transfers need of it).
    route: Route,
    record: CallRecord,
    version: u64,
    legs_dialled: u32,
    /// The callee's ACK waiting for the caller's answer (delayed offer), with where it
    /// goes and the cell the retransmission task reads.
    deferred_ack: Option<(Request, crate::sip::transport::Destination, AckCell)>,
}

type AckCell = Arc<std::sync::Mutex<Option<Request>>>;

impl Setup {
    async fn create(
        s: Arc<Services>,
        tx: ServerTransaction,
        route: Route,
        dialled: &str,
    ) -> Result<Self, (ServerTransaction, StoreError)> {
        let request = &tx.request;
        let sip_call_id = request.call_id().unwrap_or_default();
        let tag = tag_for_sip_call_id(&sip_call_id);
        let local_tag = random_token(10);
        let sid = new_call_sid(&tag);
        let from = request.header_value("From").unwrap_or_default();
        let caller = crate::sip::dialog::uri_of(&from);
        let caller_name = from
            .split('<')
            .next()
            .map(|n| n.trim().trim_matches('"').to_owned())
            .unwrap_or_default();
        let record = CallRecord {
            sid: sid.clone(),
            account_sid: s.account_sid.clone(),
            state: CallState::Setup,
            route: CallRoute::from(&route),
            from: user_of(&caller),
            to: dialled.to_owned(),
            caller_name,
            inbound: Leg {
                name: "a".into(),
                sip_call_id: sip_call_id.clone(),
                local_tag: local_tag.clone(),
                peer: Peer {
                    protocol: tx.source.protocol,
                    addr: tx.source.addr,
                },
                dialog: None,
                party: caller,
                invite: Some(
                    String::from_utf8_lossy(&crate::sip::message::to_bytes(request.clone()))
                        .into_owned(),
                ),
            },
            outbound: None,
            dial: None,
            created_ms: now_ms(),
            owner: s.pod.clone(),
            transfer: None,
            refers: Default::default(),
        };
        let ops = [Op::IndexDialog {
            dialog_id: record.inbound.index(),
        }];
        if let Err(error) = s
            .store
            .create(&sid, &record.to_json(), LIVE_TTL, &ops)
            .await
        {
            return Err((tx, error));
        }
        METRICS.calls_active.inc();
        Ok(Setup {
            s,
            tx,
            local_tag,
            route,
            record,
            version: 1,
            legs_dialled: 0,
            deferred_ack: None,
        })
    }

    /// Commits the record; on a conflict (another process changed the call), takes the
    /// stored version and writes again unless the call has ended meanwhile.
    async fn commit(&mut self, ttl: Duration, ops: &[Op]) -> Result<(), StoreError> {
        for _ in 0..3 {
            match self
                .s
                .store
                .commit(
                    &self.record.sid,
                    self.version,
                    &self.record.to_json(),
                    ttl,
                    &self.record.with_dialog_upkeep(ops),
                )
                .await?
            {
                Commit::Committed { version, .. } => {
                    self.version = version;
                    return Ok(());
                }
                Commit::Conflict { current } => {
                    let Some((version, data)) = current else {
                        return Err(StoreError::NotFound(self.record.sid.clone()));
                    };
                    if CallRecord::from_json(&self.record.sid, &data)
                        .is_ok_and(|r| r.state == CallState::Ended)
                    {
                        self.record.state = CallState::Ended;
                        return Ok(());
                    }
                    self.version = version;
                }
            }
        }
        Err(StoreError::NotFound(self.record.sid.clone()))
    }

    /// Restcomm's parameters for RCML requests about this call.
    fn params(&self, status: &str) -> Vec<(String, String)> {
        let r = &self.record;
        [
            ("CallSid", r.sid.as_str()),
            ("AccountSid", r.account_sid.as_str()),
            ("From", r.from.as_str()),
            ("To", r.to.as_str()),
            ("CallStatus", status),
            ("ApiVersion", "2012-04-24"),
            ("Direction", "inbound"),
            ("CallerName", r.caller_name.as_str()),
            ("ForwardedFrom", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Fetches a document while watching for the caller's CANCEL. `None`: the caller left.
    async fn fetch(
        &mut self,
        app: &AppUrl,
        params: &[(String, String)],
        purpose: Purpose,
    ) -> Option<Result<Fetched, String>> {
        let s = self.s.clone();
        let fetch = s.fetcher.fetch(&app.url, app.method, params, purpose);
        tokio::pin!(fetch);
        loop {
            tokio::select! {
                fetched = &mut fetch => return Some(fetched.map_err(|e| e.to_string())),
                event = self.tx.event() => {
                    if matches!(event, Some(ServerEvent::Cancelled) | None) {
                        return None;
                    }
                }
            }
        }
    }

    async fn run(&mut self) {
        let voice = self.route.voice.clone();
        let params = self.params("ringing");
        let fetched = match self.fetch(&voice, &params, Purpose::Voice).await {
            None => return self.caller_gone().await,
            Some(Ok(fetched)) => fetched,
            Some(Err(error)) => {
                warn!(url = %voice.url, %error, "voiceUrl failed");
                match self.route.voice_fallback.clone() {
                    Some(fallback) => {
                        match self.fetch(&fallback, &params, Purpose::VoiceFallback).await {
                            None => return self.caller_gone().await,
                            Some(Ok(fetched)) => fetched,
                            Some(Err(error)) => {
                                warn!(url = %fallback.url, %error, "voiceFallbackUrl failed too");
                                return self
                                    .end_unanswered(
                                        503,
                                        "the RCML application is unavailable",
                                        "app_unavailable",
                                    )
                                    .await;
                            }
                        }
                    }
                    None => {
                        return self
                            .end_unanswered(
                                503,
                                "the RCML application is unavailable",
                                "app_unavailable",
                            )
                            .await;
                    }
                }
            }
        };
        self.run_document(fetched).await;
    }

    async fn run_document(&mut self, mut fetched: Fetched) {
        let mut last_dial: Option<DialStatus> = None;
        'documents: loop {
            let Document { verbs } = fetched.document.clone();
            for verb in verbs {
                match verb {
                    Verb::Dial(dial) => match self.dial(&dial, &fetched.url).await {
                        DialResult::Bridged => return,
                        DialResult::CallerGone => return self.caller_gone().await,
                        DialResult::NotConnected(status) => {
                            last_dial = Some(status);
                            if let Some(action) = &dial.action {
                                let Some(next) = self
                                    .dial_action(&fetched.url, action, dial.method, status)
                                    .await
                                else {
                                    return;
                                };
                                fetched = next;
                                continue 'documents;
                            }
                        }
                    },
                    Verb::Hangup => {
                        return self.end_unanswered(480, "RCML <Hangup>", "hangup").await;
                    }
                    Verb::Reject { reason } => {
                        let (code, why) = match reason {
                            crate::rcml::RejectReason::Busy => {
                                (486, "RCML <Reject reason=\"busy\">")
                            }
                            crate::rcml::RejectReason::Rejected => (603, "RCML <Reject>"),
                        };
                        return self.end_unanswered(code, why, "rejected").await;
                    }
                    Verb::Pause { length } => {
                        let until = Instant::now() + length;
                        loop {
                            tokio::select! {
                                _ = sleep_until(until) => break,
                                event = self.tx.event() => {
                                    if matches!(event, Some(ServerEvent::Cancelled) | None) {
                                        return self.caller_gone().await;
                                    }
                                }
                            }
                        }
                    }
                    Verb::Redirect { url, method } => {
                        let app = match resolve_url(&fetched.url, &url) {
                            Ok(url) => AppUrl { url, method },
                            Err(error) => {
                                warn!(%url, %error, "bad Redirect URL");
                                return self
                                    .end_unanswered(500, "bad RCML Redirect URL", "rcml_error")
                                    .await;
                            }
                        };
                        let params = self.params("ringing");
                        match self.fetch(&app, &params, Purpose::Redirect).await {
                            None => return self.caller_gone().await,
                            Some(Ok(next)) => {
                                fetched = next;
                                continue 'documents;
                            }
                            Some(Err(error)) => {
                                warn!(url = %app.url, %error, "Redirect failed");
                                return self
                                    .end_unanswered(
                                        503,
                                        "the RCML application is unavailable",
                                        "app_unavailable",
                                    )
                                    .await;
                            }
                        }
                    }
                }
            }
            // The document ended without answering the caller.
            let code = last_dial.map(DialStatus::caller_code).unwrap_or(480);
            return self
                .end_unanswered(
                    code,
                    "RCML ended without connecting the call",
                    "not_connected",
                )
                .await;
        }
    }

    /// Requests the Dial `action` with the outcome; `None` when the call ended instead.
    async fn dial_action(
        &mut self,
        base: &str,
        action: &str,
        method: HttpMethod,
        status: DialStatus,
    ) -> Option<Fetched> {
        let url = match resolve_url(base, action) {
            Ok(url) => url,
            Err(error) => {
                warn!(%action, %error, "bad Dial action URL");
                self.end_unanswered(500, "bad RCML Dial action URL", "rcml_error")
                    .await;
                return None;
            }
        };
        let mut params = self.params("ringing");
        let dial = self.record.dial.clone();
        params.push(("DialCallStatus".into(), status.as_str().into()));
        params.push((
            "DialCallSid".into(),
            dial.as_ref()
                .map(|d| d.dial_call_sid.clone())
                .unwrap_or_default(),
        ));
        params.push(("DialCallDuration".into(), "0".into()));
        info!(%url, dial_call_status = status.as_str(), "requesting the Dial action");
        match self
            .fetch(
                &AppUrl {
                    url: url.clone(),
                    method,
                },
                &params,
                Purpose::DialAction,
            )
            .await
        {
            None => {
                self.caller_gone().await;
                None
            }
            Some(Ok(fetched)) => Some(fetched),
            Some(Err(error)) => {
                warn!(%url, %error, "Dial action failed");
                self.end_unanswered(
                    503,
                    "the RCML application is unavailable",
                    "app_unavailable",
                )
                .await;
                None
            }
        }
    }

    /// Builds the INVITE to the callee.
    fn outbound_invite(
        &self,
        uri: &str,
        peer: &Peer,
        dial: &Dial,
        call_id: &str,
        from_tag: &str,
    ) -> Option<Request> {
        let caller = &self.tx.request;
        // A B2BUA still counts hops, so a call routed back through the edge cannot loop.
        let max_forwards = caller
            .header_value("Max-Forwards")
            .and_then(|m| m.trim().parse::<u32>().ok())
            .unwrap_or(70)
            .saturating_sub(1)
            .min(70);
        let from_user = dial
            .caller_id
            .clone()
            .unwrap_or_else(|| self.record.from.clone());
        let body = (!caller.body.is_empty()).then(|| {
            let content_type = caller
                .header_value("Content-Type")
                .unwrap_or_else(|| "application/sdp".into());
            (content_type, caller.body.clone())
        });
        self.s.new_invite(NewInvite {
            uri,
            peer,
            call_id,
            from_user: &from_user,
            display_name: &self.record.caller_name,
            from_tag,
            max_forwards,
            body,
        })
    }

    /// Runs one `<Dial>` of the document at `base`: calls the first noun and bridges the
    /// caller to it if it answers.
    async fn dial(&mut self, dial: &Dial, base: &str) -> DialResult {
        let Some(target) = dial.targets.first() else {
            return DialResult::NotConnected(DialStatus::Failed);
        };
        let uri = match request_uri(target, &self.s.outbound_proxy) {
            Ok(uri) => uri,
            Err(error) => {
                info!(%error, "Dial target cannot be called");
                return DialResult::NotConnected(DialStatus::Failed);
            }
        };
        let peer = match resolve(&uri).await {
            Ok(peer) => peer,
            Err(error) => {
                info!(%uri, %error, "Dial target cannot be resolved");
                return DialResult::NotConnected(DialStatus::Failed);
            }
        };
        self.legs_dialled += 1;
        let leg = format!("b{}", self.legs_dialled);
        let tag = tag_for_sip_call_id(&self.record.inbound.sip_call_id);
        let host = self
            .s
            .advertise
            .split(':')
            .next()
            .unwrap_or("switchyard")
            .to_owned();
        // Unique per call, not only per tag: a call placed by this edge to itself (a
        // <Number> through the edge) shares the tag of the call that placed it.
        let call_id = edge_call_id(
            &tag,
            &format!("{leg}.{}", random_token(6).to_lowercase()),
            &host,
        );
        let from_tag = random_token(10);
        let Some(invite) = self.outbound_invite(&uri, &peer, dial, &call_id, &from_tag) else {
            info!(%uri, "Dial target is not a valid SIP URI");
            return DialResult::NotConnected(DialStatus::Failed);
        };

        let deadline_ms = now_ms() + dial.timeout.as_millis() as u64;
        self.record.outbound = Some(Leg {
            name: leg.clone(),
            sip_call_id: call_id.clone(),
            local_tag: from_tag.clone(),
            peer,
            dialog: None,
            party: uri.clone(),
            invite: Some(
                String::from_utf8_lossy(&crate::sip::message::to_bytes(invite.clone()))
                    .into_owned(),
            ),
        });
        self.record.dial = Some(DialRecord {
            leg: leg.clone(),
            dial_call_sid: new_call_sid(&tag),
            action: None,
            started_ms: now_ms(),
            answered_ms: None,
            hangup_at_ms: None,
        });
        // The timer and the lease let another process end the call if this one dies
        // while the callee rings.
        let ops = [
            Op::IndexDialog {
                dialog_id: dialog_id(&call_id, &from_tag),
            },
            Op::ScheduleTimer {
                due_ms: deadline_ms,
            },
            Op::Claim {
                owner: self.s.pod.clone(),
                lease: dial.timeout + LEASE_MARGIN,
            },
        ];
        if let Err(error) = self.commit(LIVE_TTL, &ops).await {
            warn!(%error, "cannot record the Dial");
            return DialResult::NotConnected(DialStatus::Failed);
        }
        info!(%uri, leg = %leg, timeout = ?dial.timeout, "dialling");

        let mut client =
            match ClientTransaction::start(&self.s.sip, invite.clone(), peer.destination()) {
                Ok(client) => client,
                Err(_) => return DialResult::NotConnected(DialStatus::Failed),
            };
        let deadline = Instant::now() + dial.timeout;
        let mut provisional = false;
        let status = loop {
            tokio::select! {
                event = client.event() => match event {
                    Some(ClientEvent::Provisional(response)) => {
                        // Any provisional response means the callee is alive (a timeout
                        // is then no-answer, not failed); ringing and early media are
                        // relayed to the caller.
                        provisional = true;
                        let code = response.status_code.code();
                        if code > 100 {
                            self.tx.respond(self.relayed(&response, code));
                        }
                    }
                    Some(ClientEvent::Final(response)) if response.status_code.code() < 300 => {
                        return self.bridge(invite, *response, peer, dial, base, client).await;
                    }
                    Some(ClientEvent::Final(response)) => {
                        break DialStatus::from_code(response.status_code.code());
                    }
                    Some(ClientEvent::Timeout) => {
                        break if provisional { DialStatus::NoAnswer } else { DialStatus::Failed };
                    }
                    None => break DialStatus::Failed,
                },
                event = self.tx.event() => {
                    if matches!(event, Some(ServerEvent::Cancelled) | None) {
                        info!("caller cancelled: cancelling the callee");
                        self.cancel_callee(&invite, peer, client).await;
                        return DialResult::CallerGone;
                    }
                }
                _ = sleep_until(deadline) => {
                    info!("no answer within the Dial timeout: cancelling the callee");
                    if self.cancel_callee(&invite, peer, client).await {
                        // Answered in the race with our CANCEL: it has been hung up.
                    }
                    break DialStatus::NoAnswer;
                }
            }
        };
        info!(
            dial_call_status = status.as_str(),
            "Dial ended without a connection"
        );
        self.record.outbound = None;
        if let Some(d) = self.record.dial.as_mut() {
            d.action = resolved_action(dial, base);
        }
        let ops = [
            Op::ForgetDialog {
                dialog_id: dialog_id(&call_id, &from_tag),
            },
            Op::CancelTimer,
        ];
        if let Err(error) = self.commit(LIVE_TTL, &ops).await {
            warn!(%error, "cannot record the Dial outcome");
        }
        DialResult::NotConnected(status)
    }

    /// Sends CANCEL and waits (bounded) for the INVITE's final response. If the callee
    /// answered in the race, it is ACKed and sent BYE. Returns whether that happened.
    async fn cancel_callee(
        &self,
        invite: &Request,
        peer: Peer,
        mut client: ClientTransaction,
    ) -> bool {
        if let Ok(mut cancel) =
            ClientTransaction::start(&self.s.sip, cancel_for(invite), peer.destination())
        {
            tokio::spawn(async move { while cancel.event().await.is_some() {} });
        }
        let until = Instant::now() + CANCEL_GRACE;
        loop {
            tokio::select! {
                event = client.event() => match event {
                    Some(ClientEvent::Final(response)) if response.status_code.code() < 300 => {
                        if let Ok(dialog) = Dialog::as_uac(invite, &response) {
                            let me = self.s.identity(peer.protocol);
                            send_stateless(&self.s.sip.wire, &peer.destination(), dialog.request(Method::Ack, 1, &me));
                            let bye = dialog.request(Method::Bye, 2, &me);
                            if let Ok(mut tx) = ClientTransaction::start(&self.s.sip, bye, peer.destination()) {
                                tokio::spawn(async move { while tx.event().await.is_some() {} });
                            }
                        }
                        return true;
                    }
                    Some(ClientEvent::Final(_)) | Some(ClientEvent::Timeout) | None => return false,
                    Some(ClientEvent::Provisional(_)) => {}
                },
                _ = sleep_until(until) => return false,
            }
        }
    }

    /// A response from the callee, relayed to the caller (status, SDP, our tag/Contact).
    fn relayed(&self, from_callee: &Response, code: u16) -> Response {
        let mut response = response_to(&self.tx.request, code, Some(&self.local_tag));
        response
            .headers
            .push(Header::Contact(self.s.contact().into()));
        if !from_callee.body.is_empty() {
            let content_type = from_callee
                .header_value("Content-Type")
                .unwrap_or_else(|| "application/sdp".into());
            response
                .headers
                .push(Header::ContentType(content_type.into()));
            response.body = from_callee.body.clone();
        }
        response
    }

    /// The callee answered: ACK it, answer the caller with its SDP, record both dialogs.
    async fn bridge(
        &mut self,
        invite: Request,
        ok: Response,
        peer: Peer,
        dial: &Dial,
        base: &str,
        mut client: ClientTransaction,
    ) -> DialResult {
        let me = self.s.identity(peer.protocol);
        let Ok(callee_dialog) = Dialog::as_uac(&invite, &ok) else {
            warn!("callee answered without a usable dialog (no To tag or Contact)");
            return DialResult::NotConnected(DialStatus::Failed);
        };
        let ack = callee_dialog.request(Method::Ack, 1, &me);
        // With an offer in the caller's INVITE the callee's 200 holds the answer and is
        // ACKed now. Without one (delayed offer, e.g. third-party call control), the 200
        // holds the callee's offer: its ACK must carry the caller's answer, so it waits
        // for the caller's ACK.
        let ack_cell: AckCell = Arc::new(std::sync::Mutex::new(None));
        if self.tx.request.body.is_empty() {
            self.deferred_ack = Some((ack, peer.destination(), ack_cell.clone()));
        } else {
            send_stateless(&self.s.sip.wire, &peer.destination(), ack.clone());
            *ack_cell.lock().unwrap_or_else(|e| e.into_inner()) = Some(ack);
        }
        // The callee retransmits its 200 until our ACK arrives; repeat the ACK each time.
        {
            let wire = self.s.sip.wire.clone();
            let destination = peer.destination();
            tokio::spawn(async move {
                while let Some(event) = client.event().await {
                    let ack = ack_cell.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let (ClientEvent::Final(r), Some(ack)) = (&event, ack)
                        && r.status_code.code() < 300
                    {
                        send_stateless(&wire, &destination, ack);
                    }
                }
            });
        }

        let answer = self.relayed(&ok, 200);
        let caller_dialog = match Dialog::as_uas(&self.tx.request, &self.local_tag) {
            Ok(dialog) => dialog,
            Err(error) => {
                warn!(%error, "caller's INVITE cannot form a dialog");
                return DialResult::NotConnected(DialStatus::Failed);
            }
        };
        let answered = now_ms();
        self.record.state = CallState::Answered;
        self.record.inbound.dialog = Some(caller_dialog);
        self.record.inbound.invite = None;
        if let Some(out) = self.record.outbound.as_mut() {
            out.dialog = Some(callee_dialog);
            out.invite = None;
        }
        // Set-up is over: the timer and the lease go with it.
        let mut ops = vec![
            Op::CancelTimer,
            Op::Release {
                owner: self.s.pod.clone(),
            },
        ];
        if let Some(d) = self.record.dial.as_mut() {
            d.answered_ms = Some(answered);
            d.action = resolved_action(dial, base);
            if let Some(limit) = dial.time_limit {
                let at = answered + limit.as_millis() as u64;
                d.hangup_at_ms = Some(at);
                ops.push(Op::ScheduleTimer { due_ms: at });
            }
        }
        // Committed before the caller hears the 200: once it has, its next request may
        // reach any edge process, which must find the call answered.
        if let Err(error) = self.commit(LIVE_TTL, &ops).await {
            warn!(%error, "cannot record the answered call");
        }
        self.tx.respond(answer);
        METRICS.calls.with_label_values(&["answered"]).inc();
        info!("callee answered: call bridged");

        DialResult::Bridged
    }

    /// The caller cancelled (487 already sent by its transaction): end the call.
    async fn caller_gone(&mut self) {
        info!("caller left before the call was connected");
        self.finish(ENDED_TTL, "caller_cancelled").await;
    }

    /// Answers the caller with a final failure and ends the call.
    async fn end_unanswered(&mut self, code: u16, reason: &str, outcome: &'static str) {
        info!(code, reason, "ending the call unanswered");
        self.tx
            .respond(refusal(&self.tx.request, code, reason, None));
        self.finish(ENDED_TTL, outcome).await;
    }

    async fn finish(&mut self, ttl: Duration, outcome: &'static str) {
        self.record.state = CallState::Ended;
        let ops = [
            Op::ForgetDialog {
                dialog_id: self.record.inbound.index(),
            },
            Op::CancelTimer,
            Op::Release {
                owner: self.s.pod.clone(),
            },
        ];
        if let Err(error) = self.commit(ttl, &ops).await {
            warn!(%error, "cannot record the end of the call");
        }
        METRICS.calls.with_label_values(&[outcome]).inc();
        METRICS.calls_active.dec();
    }
}

/// A Dial's `action`, resolved against the document it came from, so whoever reports the
/// Dial's outcome later (another process, after the call) needs no base URL. An action
/// that does not resolve is kept as written: the report then fails and says so.
pub fn resolved_action(dial: &Dial, base: &str) -> Option<AppUrl> {
    dial.action.as_ref().map(|action| AppUrl {
        url: resolve_url(base, action).unwrap_or_else(|_| action.clone()),
        method: dial.method,
    })
}

/// The user part of a SIP URI (`sip:alice@host` → `alice`), or the URI itself.
pub fn user_of(uri: &str) -> String {
    uri.split_once(':')
        .map(|(_, rest)| rest)
        .unwrap_or(uri)
        .split(['@', ';', '>'])
        .next()
        .unwrap_or_default()
        .to_owned()
}
