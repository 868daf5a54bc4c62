//! Blind transfer (RFC 5589 flow 6.1, as Restcomm's "SIP Refer support" runs it).
//!
//! A party of an answered call sends REFER (Refer-To: the target). The edge:
//! 1. checks it (refusals carry a status code and a `Reason`, and change nothing);
//! 2. records the transfer with compare-and-set, so of two REFERs racing on one call,
//!    through any edge processes, exactly one wins (the other gets 491);
//! 3. answers 202 and NOTIFYs `100 Trying` (unless `Refer-Sub: false`, RFC 4488);
//! 4. fetches the number's `referUrl` with `Transferor`, `Transferee`, `ReferTarget`,
//!    `ReferredBy` and `ReferTransferTarget`, and runs it;
//! 5. bridges the transferee to the Dial target by third-party call control (RFC 3725):
//!    INVITE the target without SDP, re-INVITE the transferee with the target's offer,
//!    ACK the target with the transferee's answer;
//! 6. NOTIFYs the outcome (`200 OK`, or the failure) and BYEs the transferor's leg if it
//!    is still up. On failure the Dial `action` decides, e.g. dialling the transferor
//!    again, which reconnects the two parties (the seed's fallback).
//!
//! The transferee stays connected throughout, even when the transferor hangs up right
//! after 202 (see `in_dialog::bye`).

use std::sync::Arc;
use std::time::Duration;

use rsip::{Header, Method};
use tokio::time::{Instant, sleep_until};
use tracing::{Instrument, info, info_span, warn};

use crate::call::in_dialog::{detach, hang_up, load, send_on_leg, send_on_leg_with, update};
use crate::call::record::{
    CallRecord, CallState, DialRecord, DialStatus, LIVE_TTL, Leg, TransferRecord, now_ms,
};
use crate::call::setup::{resolved_action, user_of};
use crate::call::targets::{request_uri, resolve};
use crate::call::{NewInvite, Services};
use crate::metrics::METRICS;
use crate::rcml::{Dial, Fetched, Purpose, Verb, resolve as resolve_url};
use crate::sip::dialog::{Dialog, uri_of};
use crate::sip::endpoint::send_stateless;
use crate::sip::message::{SipHeaders, parse_uri, response_to, to_bytes};
use crate::sip::random_token;
use crate::sip::transaction::client::cancel_for;
use crate::sip::transaction::{ClientEvent, ClientTransaction, ServerTransaction};
use crate::store::{CallStore, Commit, Op, edge_call_id, new_call_sid, tag_for_sip_call_id};

/// How long the transferee's re-INVITE may take.
const REINVITE_TIMEOUT: Duration = Duration::from_secs(32);
/// Margin on the transfer lease beyond the Dial timeout.
const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// What the Refer-To header asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferTo {
    /// The full URI (`ReferTransferTarget`).
    pub uri: String,
    /// Its user part (`ReferTarget`): the number or name the transferor typed.
    pub target: String,
}

/// Why a REFER is refused: a status code and the `Reason` text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub reason: &'static str,
    /// The metric label.
    pub label: &'static str,
}

const fn refuse(code: u16, reason: &'static str, label: &'static str) -> Refusal {
    Refusal {
        code,
        reason,
        label,
    }
}

/// Parses and checks a Refer-To value.
pub fn parse_refer_to(value: Option<&str>) -> Result<ReferTo, Refusal> {
    let value = value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or(refuse(400, "REFER without Refer-To", "missing_refer_to"))?;
    let uri = uri_of(value);
    let (scheme, rest) =
        uri.split_once(':')
            .ok_or(refuse(400, "Refer-To is not a URI", "bad_refer_to"))?;
    let scheme = scheme.trim().to_ascii_lowercase();
    if scheme.is_empty()
        || !scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        || rest.is_empty()
    {
        return Err(refuse(400, "Refer-To is not a URI", "bad_refer_to"));
    }
    if !matches!(scheme.as_str(), "sip" | "sips" | "tel") {
        return Err(refuse(
            403,
            "Refer-To scheme not allowed (sip, sips, tel only)",
            "scheme_not_allowed",
        ));
    }
    if uri.to_ascii_lowercase().contains("replaces=") {
        return Err(refuse(
            501,
            "attended transfer (Replaces) is not supported",
            "replaces",
        ));
    }
    let target = user_of(&uri);
    if target.is_empty() {
        return Err(refuse(400, "Refer-To has no user part", "bad_refer_to"));
    }
    if scheme != "tel" && parse_uri(&uri).is_none() {
        return Err(refuse(
            400,
            "Refer-To is not a valid SIP URI",
            "bad_refer_to",
        ));
    }
    Ok(ReferTo { uri, target })
}

/// The REFER target policy (toll fraud: a transferor must not make the edge dial any
/// number it likes). The number's own `referTargetAllow` applies when it has one,
/// otherwise the install-wide `--refer-target-allow`; neither: every target is allowed.
/// A target is allowed when a pattern matches the whole ReferTarget (the user part) or
/// the whole Refer-To URI. A route pattern that does not compile (the operator validates
/// them, so only a hand-written Redis entry can have one) matches nothing: fail closed.
pub fn target_allowed(refer_to: &ReferTo, route: &[String], default: &[regex::Regex]) -> bool {
    let matches = |re: &regex::Regex| re.is_match(&refer_to.target) || re.is_match(&refer_to.uri);
    if route.is_empty() {
        return default.is_empty() || default.iter().any(matches);
    }
    route.iter().any(
        |pattern| match switchyard_routing::validate::compile_pattern(pattern) {
            Ok(re) => matches(&re),
            Err(error) => {
                warn!(%pattern, %error, "referTargetAllow pattern does not compile: ignored");
                false
            }
        },
    )
}

fn reject(tx: &ServerTransaction, refusal: &Refusal) {
    info!(
        code = refusal.code,
        reason = refusal.reason,
        "REFER refused"
    );
    METRICS
        .transfers
        .with_label_values(&["rejected", refusal.label])
        .inc();
    tx.respond(crate::call::refusal(
        &tx.request,
        refusal.code,
        refusal.reason,
        None,
    ));
}

/// Handles a REFER inside an answered call, sent on leg `from_leg`.
pub async fn refer(
    services: Arc<Services>,
    tx: ServerTransaction,
    record: CallRecord,
    from_leg: String,
) {
    let request = tx.request.clone();
    if !within_refer_limit(&services, &tx, &record).await {
        return;
    }
    let refer_to = match parse_refer_to(request.header_value("Refer-To").as_deref()) {
        Ok(refer_to) => refer_to,
        Err(refusal) => return reject(&tx, &refusal),
    };
    if record.route.refer.is_none() {
        return reject(
            &tx,
            &refuse(
                403,
                "the number has no referUrl: transfers are not allowed",
                "no_refer_url",
            ),
        );
    }
    if !target_allowed(
        &refer_to,
        &record.route.refer_target_allow,
        &services.refer_target_allow,
    ) {
        return reject(
            &tx,
            &refuse(
                403,
                "transfer target not allowed by referTargetAllow",
                "target_not_allowed",
            ),
        );
    }
    if record.state != CallState::Answered {
        return reject(
            &tx,
            &refuse(491, "the call is not in progress", "not_in_progress"),
        );
    }
    let Some(transferee) = std::iter::once(&record.inbound)
        .chain(record.outbound.as_ref())
        .find(|l| l.name != from_leg && l.dialog.is_some())
        .map(|l| l.name.clone())
    else {
        return reject(
            &tx,
            &refuse(491, "the other party is not connected", "not_in_progress"),
        );
    };
    let notify = !request
        .header_value("Refer-Sub")
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("false"));

    // Exactly one transfer per call: compare-and-set on the record.
    let transfer = TransferRecord {
        transferor: from_leg.clone(),
        transferee: transferee.clone(),
        refer_to: refer_to.uri.clone(),
        notify,
        started_ms: now_ms(),
        owner: services.pod.clone(),
        target: None,
    };
    match claim_transfer(&services, &record.sid, transfer).await {
        Claim::Won => {}
        Claim::Busy => {
            return reject(
                &tx,
                &refuse(
                    491,
                    "a transfer of this call is already in progress",
                    "in_progress",
                ),
            );
        }
        Claim::Gone => return reject(&tx, &refuse(481, "the call has ended", "not_in_progress")),
        Claim::Unavailable => {
            return tx.respond(crate::call::refusal(
                &request,
                500,
                "call state store unavailable",
                Some(5),
            ));
        }
    }

    let mut accepted = response_to(&request, 202, None);
    accepted
        .headers
        .push(Header::Contact(services.contact().into()));
    if !notify {
        accepted
            .headers
            .push(Header::Other("Refer-Sub".into(), "false".into()));
    }
    // On the wire before the first NOTIFY, which the transfer task sends next.
    tx.respond_now(accepted);
    METRICS.transfers_active.inc();

    let referred_by = request.header_value("Referred-By").map(|v| uri_of(&v));
    let transfer = Transfer {
        services: services.clone(),
        sid: record.sid.clone(),
        transferor: from_leg,
        transferee,
        refer_to,
        referred_by,
        notify,
        started: std::time::Instant::now(),
        notified_final: false,
        transferor_leg: None,
        replaced_leg_up: false,
    };
    let span = info_span!("transfer", sid = %record.sid, target = %transfer.refer_to.target);
    tokio::spawn(transfer.run().instrument(span));
}

/// Counts the REFER in the call's window (in the record, so every edge process counts
/// the same REFERs) before anything else is done with it. Past `--refer-limit-per-call`
/// it is answered 503 with Retry-After (the end of the window) and `false` returned: a
/// REFER storm, or a transferor trying target after target against referTargetAllow.
async fn within_refer_limit(
    services: &Services,
    tx: &ServerTransaction,
    record: &CallRecord,
) -> bool {
    let limit = services.refer_limit;
    if limit.is_off() {
        return true;
    }
    let now = now_ms();
    let counted = update(services, &record.sid, LIVE_TTL, &[], move |r| {
        // Over the limit is read from the committed record below.
        let _ = r.refers.count(now, limit.per_window, limit.window);
    })
    .await;
    let Some(counted) = counted else {
        tx.respond(crate::call::refusal(
            &tx.request,
            500,
            "call state store unavailable",
            Some(5),
        ));
        return false;
    };
    let Some(wait) = counted
        .refers
        .over_limit(limit.per_window, now, limit.window)
    else {
        return true;
    };
    info!(
        refers = counted.refers.count,
        "REFER storm: refused until the window ends"
    );
    METRICS
        .rate_limited
        .with_label_values(&["call", "REFER"])
        .inc();
    METRICS
        .transfers
        .with_label_values(&["rejected", "rate_limited"])
        .inc();
    tx.respond(crate::call::refusal(
        &tx.request,
        503,
        "too many REFERs in this call",
        Some(crate::ratelimit::retry_after_seconds(wait)),
    ));
    false
}

enum Claim {
    Won,
    Busy,
    Gone,
    Unavailable,
}

async fn claim_transfer(services: &Services, sid: &str, transfer: TransferRecord) -> Claim {
    for _ in 0..5 {
        let Some((version, mut record)) = load(services, sid).await else {
            return Claim::Gone;
        };
        if record.state != CallState::Answered {
            return Claim::Gone;
        }
        if record.transfer.is_some() {
            return Claim::Busy;
        }
        record.transfer = Some(transfer.clone());
        match services
            .store
            .commit(
                sid,
                version,
                &record.to_json(),
                LIVE_TTL,
                &record.with_dialog_upkeep(&[]),
            )
            .await
        {
            Ok(Commit::Committed { .. }) => return Claim::Won,
            Ok(Commit::Conflict { .. }) => continue,
            Err(_) => return Claim::Unavailable,
        }
    }
    Claim::Busy
}

/// How a 3PCC connection attempt ended.
enum Connect {
    Connected,
    NotConnected(DialStatus),
    /// The transferee left (or the call ended) meanwhile.
    CallGone,
}

struct Transfer {
    services: Arc<Services>,
    sid: String,
    transferor: String,
    transferee: String,
    refer_to: ReferTo,
    referred_by: Option<String>,
    notify: bool,
    started: std::time::Instant,
    /// Whether the final NOTIFY (subscription terminated) was sent.
    notified_final: bool,
    /// The transferor's leg as it was at REFER: NOTIFYs go on its dialog even after the
    /// target has replaced it in the call.
    transferor_leg: Option<Leg>,
    /// Set once the target replaced the transferor: whether the transferor's leg was
    /// still up then (it gets BYE after the final NOTIFY).
    replaced_leg_up: bool,
}

impl Transfer {
    fn params(&self, record: &CallRecord) -> Vec<(String, String)> {
        let party = |name: &str| {
            record
                .leg(name)
                .map(|l| user_of(&l.party))
                .unwrap_or_default()
        };
        let mut params: Vec<(String, String)> = [
            ("CallSid", record.sid.clone()),
            ("AccountSid", record.account_sid.clone()),
            ("From", record.from.clone()),
            ("To", record.to.clone()),
            ("CallStatus", "in-progress".to_owned()),
            ("ApiVersion", "2012-04-24".to_owned()),
            ("Direction", "inbound".to_owned()),
            ("CallerName", record.caller_name.clone()),
            ("Transferor", party(&self.transferor)),
            ("Transferee", party(&self.transferee)),
            ("ReferTarget", self.refer_to.target.clone()),
            ("ReferTransferTarget", self.refer_to.uri.clone()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        if let Some(by) = &self.referred_by {
            params.push(("ReferredBy".into(), by.clone()));
        }
        params
    }

    /// A NOTIFY to the transferor with the progress as a sipfrag (RFC 3515 §2.4.5).
    async fn notify(&mut self, code: u16, last: bool) {
        if !self.notify || self.notified_final {
            return;
        }
        self.notified_final = last;
        let Some((_, record)) = load(&self.services, &self.sid).await else {
            return;
        };
        if record
            .leg(&self.transferor)
            .is_some_and(|l| l.dialog.is_none())
        {
            return; // the transferor hung up: nobody to tell
        }
        let Some(leg) = self.transferor_leg.clone() else {
            return;
        };
        let state = if last {
            "terminated;reason=noresource"
        } else {
            "active;expires=60"
        };
        let body = format!(
            "SIP/2.0 {code} {}\r\n",
            crate::sip::message::reason_phrase(code)
        );
        let headers = vec![
            Header::Event("refer".into()),
            Header::SubscriptionState(state.into()),
        ];
        if let Some(tx) = send_on_leg_with(
            &self.services,
            &self.sid,
            &leg,
            Method::Notify,
            Some(("message/sipfrag;version=2.0", body.as_bytes())),
            headers,
        )
        .await
        {
            // 481 from a transferor that already hung up is fine: nothing waits on it.
            detach(tx);
        }
    }

    async fn run(mut self) {
        let Some((_, record)) = load(&self.services, &self.sid).await else {
            return;
        };
        self.transferor_leg = record.leg(&self.transferor).cloned();
        self.notify(100, false).await;
        let Some(refer_app) = record.route.refer.clone() else {
            return;
        };
        let params = self.params(&record);
        let transferor_party = record
            .leg(&self.transferor)
            .map(|l| user_of(&l.party))
            .unwrap_or_default();
        info!(transferor = %transferor_party, refer_to = %self.refer_to.uri, "transfer accepted: fetching the refer application");
        let fetched = match self
            .services
            .fetcher
            .fetch(&refer_app.url, refer_app.method, &params, Purpose::Refer)
            .await
        {
            Ok(fetched) => fetched,
            Err(error) => {
                warn!(url = %refer_app.url, %error, "referUrl failed: the transfer fails, the call stays up");
                self.notify(503, true).await;
                return self.finish("failed", "app_unavailable").await;
            }
        };
        self.run_document(fetched, params).await;
    }

    async fn run_document(mut self, mut fetched: Fetched, params: Vec<(String, String)>) {
        let mut first_dial = true;
        'documents: loop {
            for verb in fetched.document.verbs.clone() {
                match verb {
                    Verb::Dial(dial) => {
                        let outcome = self.connect(&dial, &fetched.url, first_dial).await;
                        let was_first = first_dial;
                        first_dial = false;
                        match outcome {
                            Connect::Connected => {
                                if was_first {
                                    self.notify(200, true).await;
                                    return self.finish("succeeded", "connected").await;
                                }
                                return self.finish("failed", "reconnected_by_action").await;
                            }
                            Connect::CallGone => {
                                self.notify(487, true).await;
                                return self.finish("failed", "transferee_left").await;
                            }
                            Connect::NotConnected(status) => {
                                if was_first {
                                    self.notify(DialStatus::caller_code(status).max(400), true)
                                        .await;
                                    info!(
                                        dial_call_status = status.as_str(),
                                        "transfer target not connected"
                                    );
                                }
                                if let Some(action) = &dial.action {
                                    let Ok(url) = resolve_url(&fetched.url, action) else {
                                        return self.end("failed", "rcml_error").await;
                                    };
                                    let mut params = params.clone();
                                    params.push(("DialCallStatus".into(), status.as_str().into()));
                                    params.push(("DialCallDuration".into(), "0".into()));
                                    match self
                                        .services
                                        .fetcher
                                        .fetch(&url, dial.method, &params, Purpose::DialAction)
                                        .await
                                    {
                                        Ok(next) => {
                                            fetched = next;
                                            continue 'documents;
                                        }
                                        Err(error) => {
                                            warn!(%url, %error, "Dial action of the refer application failed");
                                            return self.end("failed", "app_unavailable").await;
                                        }
                                    }
                                }
                            }
                        }
                    }
                    Verb::Pause { length } => tokio::time::sleep(length).await,
                    Verb::Redirect { url, method } => {
                        let Ok(url) = resolve_url(&fetched.url, &url) else {
                            return self.end("failed", "rcml_error").await;
                        };
                        match self
                            .services
                            .fetcher
                            .fetch(&url, method, &params, Purpose::Redirect)
                            .await
                        {
                            Ok(next) => {
                                fetched = next;
                                continue 'documents;
                            }
                            Err(_) => return self.end("failed", "app_unavailable").await,
                        }
                    }
                    Verb::Hangup | Verb::Reject { .. } => {
                        self.notify(603, true).await;
                        return self.end("failed", "hung_up_by_application").await;
                    }
                }
            }
            // The refer application ended without connecting the transferee.
            self.notify(480, true).await;
            return self.end("failed", "not_connected").await;
        }
    }

    /// Clears the transfer from the record, BYEs the replaced transferor's leg if it is
    /// still up (after the final NOTIFY, which must reach it first), and counts the
    /// outcome.
    async fn finish(self, result: &'static str, reason: &'static str) {
        update(&self.services, &self.sid, LIVE_TTL, &[], |r| {
            r.transfer = None
        })
        .await;
        if self.replaced_leg_up
            && let Some(leg) = &self.transferor_leg
            && let Some(bye) = send_on_leg(&self.services, &self.sid, leg, Method::Bye, None).await
        {
            detach(bye);
        }
        self.count(result, reason);
    }

    /// The transfer failed and nothing reconnects the transferee: end the call.
    async fn end(self, result: &'static str, reason: &'static str) {
        update(&self.services, &self.sid, LIVE_TTL, &[], |r| {
            r.transfer = None
        })
        .await;
        hang_up(
            &self.services,
            &self.sid,
            "transfer failed and the refer application ended",
        )
        .await;
        self.count(result, reason);
    }

    fn count(&self, result: &'static str, reason: &'static str) {
        METRICS.transfers.with_label_values(&[result, reason]).inc();
        METRICS.transfers_active.dec();
        info!(
            transferor = %self.transferor,
            target = %self.refer_to.uri,
            outcome = result,
            reason,
            elapsed_ms = self.started.elapsed().as_millis() as u64,
            "transfer ended"
        );
    }

    /// Connects the transferee to the Dial's first noun by third-party call control.
    async fn connect(&mut self, dial: &Dial, base: &str, report_progress: bool) -> Connect {
        let services = self.services.clone();
        let Some(target) = dial.targets.first() else {
            return Connect::NotConnected(DialStatus::Failed);
        };
        let Ok(uri) = request_uri(target, &services.outbound_proxy) else {
            return Connect::NotConnected(DialStatus::Failed);
        };
        let Ok(peer) = resolve(&uri).await else {
            return Connect::NotConnected(DialStatus::Failed);
        };
        let Some((_, record)) = load(&services, &self.sid).await else {
            return Connect::CallGone;
        };
        let Some(transferee) = record
            .leg(&self.transferee)
            .filter(|l| l.dialog.is_some())
            .cloned()
        else {
            return Connect::CallGone;
        };
        let tag = tag_for_sip_call_id(&record.inbound.sip_call_id);
        let leg_name = format!("t{}", random_token(4).to_lowercase());
        let host = services
            .advertise
            .split(':')
            .next()
            .unwrap_or("switchyard")
            .to_owned();
        let call_id = edge_call_id(&tag, &leg_name, &host);
        let caller = dial
            .caller_id
            .clone()
            .unwrap_or_else(|| user_of(&transferee.party));
        let from_tag = random_token(10);
        // Without an offer: the target makes it in its 200 (third-party call control).
        let invite = match services.new_invite(NewInvite {
            uri: &uri,
            peer: &peer,
            call_id: &call_id,
            from_user: &caller,
            display_name: "",
            from_tag: &from_tag,
            max_forwards: 70,
            body: None,
        }) {
            Some(invite) => invite,
            None => return Connect::NotConnected(DialStatus::Failed),
        };
        let target_leg = Leg {
            name: leg_name.clone(),
            sip_call_id: call_id.clone(),
            local_tag: from_tag.clone(),
            peer,
            dialog: None,
            party: uri.clone(),
            invite: Some(String::from_utf8_lossy(&to_bytes(invite.clone())).into_owned()),
        };
        let deadline_ms = now_ms() + dial.timeout.as_millis() as u64;
        let recorded = update(
            &services,
            &self.sid,
            LIVE_TTL,
            &[
                Op::ScheduleTimer {
                    due_ms: deadline_ms + LEASE_MARGIN.as_millis() as u64,
                },
                // While the target rings, this process holds the call; if it dies, the
                // timer lets another one clean up after the lease runs out.
                Op::Claim {
                    owner: services.pod.clone(),
                    lease: dial.timeout + LEASE_MARGIN,
                },
            ],
            {
                let target_leg = target_leg.clone();
                move |r| {
                    if let Some(t) = r.transfer.as_mut() {
                        t.target = Some(target_leg.clone());
                    }
                }
            },
        )
        .await;
        if recorded.is_none() {
            return Connect::CallGone;
        }
        info!(%uri, leg = %leg_name, "dialling the transfer target (no SDP: third-party call control)");

        let Ok(mut client) =
            ClientTransaction::start(&services.sip, invite.clone(), peer.destination())
        else {
            return Connect::NotConnected(DialStatus::Failed);
        };
        let deadline = Instant::now() + dial.timeout;
        let mut provisional = false;
        let ok = loop {
            tokio::select! {
                event = client.event() => match event {
                    Some(ClientEvent::Provisional(response)) => {
                        let code = response.status_code.code();
                        if code == 180 || code == 183 {
                            provisional = true;
                            if report_progress {
                                self.notify(180, false).await;
                            }
                        }
                    }
                    Some(ClientEvent::Final(response)) if response.status_code.code() < 300 => break *response,
                    Some(ClientEvent::Final(response)) => {
                        return self.not_connected(DialStatus::from_code(response.status_code.code())).await;
                    }
                    Some(ClientEvent::Timeout) | None => {
                        return self.not_connected(if provisional { DialStatus::NoAnswer } else { DialStatus::Failed }).await;
                    }
                },
                _ = sleep_until(deadline) => {
                    send_stateless(&services.sip.wire, &peer.destination(), cancel_for(&invite));
                    return self.not_connected(DialStatus::NoAnswer).await;
                }
            }
        };

        // The target answered with its offer: re-INVITE the transferee with it.
        info!(transferee = %transferee.name, "transfer target answered: re-INVITing the transferee with its offer");
        let Ok(target_dialog) = Dialog::as_uac(&invite, &ok) else {
            return self.not_connected(DialStatus::Failed).await;
        };
        let me = services.identity(peer.protocol);
        let offer = ok.body.clone();
        let offer_type = ok
            .header_value("Content-Type")
            .unwrap_or_else(|| "application/sdp".into());
        let answer = self.reinvite(&transferee, &offer_type, &offer).await;
        let Some(answer) = answer else {
            // The transferee did not take the new session: release the target.
            send_stateless(
                &services.sip.wire,
                &peer.destination(),
                target_dialog.request(Method::Ack, 1, &me),
            );
            if let Ok(bye) = ClientTransaction::start(
                &services.sip,
                target_dialog.request(Method::Bye, 2, &me),
                peer.destination(),
            ) {
                detach(bye);
            }
            return Connect::CallGone;
        };
        info!("transferee answered: ACKing the target with its answer");
        let mut ack = target_dialog.request(Method::Ack, 1, &me);
        ack.headers
            .push(Header::ContentType(answer.content_type.clone().into()));
        ack.body = answer.body.clone();
        send_stateless(&services.sip.wire, &peer.destination(), ack.clone());
        {
            // The target retransmits its 200 until our ACK arrives; repeat it each time.
            let wire = services.sip.wire.clone();
            let destination = peer.destination();
            tokio::spawn(async move {
                while let Some(event) = client.event().await {
                    if matches!(event, ClientEvent::Final(ref r) if r.status_code.code() < 300) {
                        send_stateless(&wire, &destination, ack.clone());
                    }
                }
            });
        }

        // The target replaces the transferor's leg.
        let transferor = self.transferor.clone();
        let connected = Leg {
            dialog: Some(target_dialog),
            invite: None,
            ..target_leg
        };
        let old_call_id = record.leg(&transferor).map(Leg::index);
        let dial_record = DialRecord {
            leg: connected.name.clone(),
            dial_call_sid: new_call_sid(&tag),
            action: resolved_action(dial, base),
            started_ms: now_ms(),
            answered_ms: Some(now_ms()),
            hangup_at_ms: None,
        };
        let mut ops = vec![
            Op::IndexDialog {
                dialog_id: connected.index(),
            },
            Op::CancelTimer,
        ];
        if let Some(old) = &old_call_id {
            ops.push(Op::ForgetDialog {
                dialog_id: old.clone(),
            });
        }
        let old_leg = record.leg(&transferor).cloned();
        let replaced = update(&services, &self.sid, LIVE_TTL, &ops, move |r| {
            if r.inbound.name == transferor {
                r.inbound = connected.clone();
            } else {
                r.outbound = Some(connected.clone());
            }
            r.dial = Some(dial_record.clone());
            if let Some(t) = r.transfer.as_mut() {
                t.target = None;
            }
        })
        .await;
        if replaced.is_none() {
            return Connect::CallGone;
        }
        METRICS
            .transfer_duration
            .observe(self.started.elapsed().as_secs_f64());
        // The replaced leg gets BYE in `finish`, after the final NOTIFY.
        self.replaced_leg_up = old_leg.is_some_and(|l| l.dialog.is_some());
        info!("transferee bridged to the transfer target");
        Connect::Connected
    }

    async fn not_connected(&self, status: DialStatus) -> Connect {
        update(&self.services, &self.sid, LIVE_TTL, &[], |r| {
            if let Some(t) = r.transfer.as_mut() {
                t.target = None;
            }
        })
        .await;
        Connect::NotConnected(status)
    }

    /// Re-INVITEs the transferee with `offer`; returns its answer.
    async fn reinvite(
        &self,
        transferee: &Leg,
        content_type: &str,
        offer: &[u8],
    ) -> Option<SessionAnswer> {
        let body = (!offer.is_empty()).then_some((content_type, offer));
        let mut tx =
            send_on_leg(&self.services, &self.sid, transferee, Method::Invite, body).await?;
        let answer = tokio::time::timeout(REINVITE_TIMEOUT, async {
            loop {
                match tx.event().await {
                    Some(ClientEvent::Provisional(_)) => continue,
                    Some(ClientEvent::Final(response)) => return Some(*response),
                    _ => return None,
                }
            }
        })
        .await
        .ok()
        .flatten()?;
        let code = answer.status_code.code();
        let dialog = transferee.dialog.as_ref()?;
        let (cseq, _) = answer.cseq().ok()?;
        if !(200..300).contains(&code) {
            warn!(code, "the transferee refused the re-INVITE");
            return None;
        }
        let ack = dialog.request(
            Method::Ack,
            cseq,
            &self.services.identity(transferee.peer.protocol),
        );
        send_stateless(&self.services.sip.wire, &transferee.peer.destination(), ack);
        detach(tx);
        Some(SessionAnswer {
            content_type: answer
                .header_value("Content-Type")
                .unwrap_or_else(|| "application/sdp".into()),
            body: answer.body,
        })
    }
}

struct SessionAnswer {
    content_type: String,
    body: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refer_to_forms_and_refusals() {
        let ok = parse_refer_to(Some("<sip:+15551230002@edge.example;user=phone>")).unwrap();
        assert_eq!(ok.target, "+15551230002");
        assert_eq!(ok.uri, "sip:+15551230002@edge.example;user=phone");
        assert_eq!(parse_refer_to(Some("sip:carol@h")).unwrap().target, "carol");
        assert_eq!(
            parse_refer_to(Some("\"Carol\" <sips:carol@h>"))
                .unwrap()
                .target,
            "carol"
        );
        assert_eq!(
            parse_refer_to(Some("<tel:+15551230002>")).unwrap().target,
            "+15551230002"
        );

        let code = |v: Option<&str>| parse_refer_to(v).unwrap_err().code;
        assert_eq!(code(None), 400);
        assert_eq!(code(Some("  ")), 400);
        assert_eq!(code(Some("<nonsense>")), 400);
        assert_eq!(code(Some("<http://evil.example/x>")), 403);
        assert_eq!(code(Some("<mailto:bob@example.com>")), 403);
        assert_eq!(
            code(Some(
                "<sip:carol@h?Replaces=abc%40h%3Bto-tag%3D1%3Bfrom-tag%3D2>"
            )),
            501
        );
    }

    #[test]
    fn refer_target_policy_route_first_then_default_then_open() {
        let refer_to = parse_refer_to(Some("<sip:+15551230002@edge.example>")).unwrap();
        let compiled = |ps: &[&str]| -> Vec<regex::Regex> {
            ps.iter()
                .map(|p| switchyard_routing::validate::compile_pattern(p).unwrap())
                .collect()
        };
        let strings = |ps: &[&str]| -> Vec<String> { ps.iter().map(|p| p.to_string()).collect() };
        // Neither: open (as before the policy existed).
        assert!(target_allowed(&refer_to, &[], &[]));
        // The default alone, on the user part or on the whole URI.
        assert!(target_allowed(&refer_to, &[], &compiled(&[r"\+1555\d{7}"])));
        assert!(target_allowed(
            &refer_to,
            &[],
            &compiled(&[r"sip:.*@edge\.example"])
        ));
        assert!(!target_allowed(&refer_to, &[], &compiled(&[r"\+1666\d+"])));
        // Anchored: a prefix is not enough.
        assert!(!target_allowed(&refer_to, &[], &compiled(&[r"\+1555"])));
        // The number's own list replaces the default.
        assert!(target_allowed(
            &refer_to,
            &strings(&[r"\+1555.*"]),
            &compiled(&["nobody"])
        ));
        assert!(!target_allowed(
            &refer_to,
            &strings(&["carol"]),
            &compiled(&[".*"])
        ));
        // A pattern that does not compile allows nothing.
        assert!(!target_allowed(&refer_to, &strings(&["(+"]), &[]));
    }
}
