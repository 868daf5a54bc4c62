//! Requests inside an answered call, handled by whichever edge process receives them.
//!
//! The call is found through the dialog index (SIP Call-ID → call), loaded from the store,
//! and the request is relayed to the other leg using that leg's stored dialog: a BYE ends
//! both legs; a re-INVITE (hold, codec change), UPDATE or INFO is relayed and its answer
//! relayed back. Every change to the record is a compare-and-set, so two processes
//! handling requests of one call at once cannot overwrite each other.

use std::sync::Arc;
use std::time::Duration;

use rsip::{Header, Method, Request, Response};
use tracing::{Instrument, info, info_span, warn};

use crate::call::record::{CallRecord, CallState, ENDED_TTL, LIVE_TTL, Leg, now_ms};
use crate::call::{Services, refusal};
use crate::metrics::METRICS;
use crate::rcml::Purpose;
use crate::sip::endpoint::send_stateless;
use crate::sip::message::{SipHeaders, response_to};
use crate::sip::transaction::{ClientEvent, ClientTransaction, ServerTransaction};
use crate::sip::transport::Destination;
use crate::store::{CallStore, Commit, FoundCall, Op, dialog_id};

/// How long a relayed request may take before the requester gets 408.
const RELAY_TIMEOUT: Duration = Duration::from_secs(34);

/// Loads a call and its version.
pub async fn load(services: &Services, sid: &str) -> Option<(u64, CallRecord)> {
    let (version, data) = services.store.load(sid).await.ok()??;
    CallRecord::from_json(sid, &data).ok().map(|r| (version, r))
}

/// Applies `change` to the stored call with compare-and-set, retrying on conflicts.
/// Returns the record as committed.
pub async fn update(
    services: &Services,
    sid: &str,
    ttl: Duration,
    ops: &[Op],
    change: impl Fn(&mut CallRecord),
) -> Option<CallRecord> {
    update_from(services, sid, None, ttl, ops, change)
        .await
        .map(|(record, _)| record)
}

/// [`update`] starting from a version the caller has just read (one round trip fewer
/// when nobody changed the call since), and returning the CSeqs the ops allocated.
pub async fn update_from(
    services: &Services,
    sid: &str,
    mut known: Option<(u64, CallRecord)>,
    ttl: Duration,
    ops: &[Op],
    change: impl Fn(&mut CallRecord),
) -> Option<(CallRecord, Vec<u32>)> {
    for _ in 0..5 {
        let (version, mut record) = match known.take() {
            Some(known) => known,
            None => load(services, sid).await?,
        };
        change(&mut record);
        let ops = record.with_dialog_upkeep(ops);
        match services
            .store
            .commit(sid, version, &record.to_json(), ttl, &ops)
            .await
        {
            Ok(Commit::Committed { cseqs, .. }) => return Some((record, cseqs)),
            Ok(Commit::Conflict { current }) => {
                known = current.and_then(|(version, data)| {
                    CallRecord::from_json(sid, &data).ok().map(|r| (version, r))
                });
            }
            Err(error) => {
                warn!(%error, "cannot update the call");
                return None;
            }
        }
    }
    None
}

/// Sends a request on a leg's dialog with a CSeq allocated in the store, and returns the
/// client transaction.
pub(crate) async fn send_on_leg(
    services: &Services,
    sid: &str,
    leg: &Leg,
    method: Method,
    body: Option<(&str, &[u8])>,
) -> Option<ClientTransaction> {
    send_on_leg_with(services, sid, leg, method, body, Vec::new()).await
}

/// [`send_on_leg`] with extra headers (Event, Subscription-State for NOTIFY).
pub(crate) async fn send_on_leg_with(
    services: &Services,
    sid: &str,
    leg: &Leg,
    method: Method,
    body: Option<(&str, &[u8])>,
    extra: Vec<Header>,
) -> Option<ClientTransaction> {
    let dialog = leg.dialog.as_ref()?;
    let cseq = services
        .store
        .next_cseq(sid, &leg.name, dialog.local_cseq)
        .await
        .ok()?;
    request_on_leg(services, leg, method, cseq, body, extra)
}

/// Sends a request on a leg's dialog with a CSeq already allocated.
fn request_on_leg(
    services: &Services,
    leg: &Leg,
    method: Method,
    cseq: u32,
    body: Option<(&str, &[u8])>,
    extra: Vec<Header>,
) -> Option<ClientTransaction> {
    let dialog = leg.dialog.as_ref()?;
    let mut request = dialog.request(method, cseq, &services.identity(leg.peer.protocol));
    request.headers.extend(extra);
    if let Some((content_type, bytes)) = body {
        request
            .headers
            .push(Header::ContentType(content_type.to_owned().into()));
        request.body = bytes.to_vec();
    }
    ClientTransaction::start(&services.sip, request, leg.peer.destination()).ok()
}

/// Lets a transaction run to its end without anyone waiting on it.
pub(crate) fn detach(mut tx: ClientTransaction) {
    tokio::spawn(async move { while tx.event().await.is_some() {} });
}

/// Handles a request that carries a To tag.
pub async fn request(services: Arc<Services>, tx: ServerTransaction) {
    let sip_call_id = tx.request.call_id().unwrap_or_default();
    let span = info_span!("call", call_id = %sip_call_id, method = %tx.request.method);
    async move {
        let request = &tx.request;
        let our_tag = request.tag_to().ok().flatten().unwrap_or_default();
        let (sid, version, record) = match services
            .store
            .find_call(&dialog_id(&sip_call_id, &our_tag))
            .await
        {
            Ok(Some(FoundCall { sid, version, data })) => {
                match CallRecord::from_json(&sid, &data) {
                    Ok(record) => (sid, version, record),
                    Err(error) => {
                        warn!(%sid, %error, "unreadable call record");
                        return tx.respond(refusal(request, 481, "no such call", None));
                    }
                }
            }
            Ok(None) => return tx.respond(refusal(request, 481, "no such call", None)),
            Err(error) => {
                warn!(%error, "call store unavailable");
                return tx.respond(refusal(
                    request,
                    500,
                    "call state store unavailable",
                    Some(5),
                ));
            }
        };
        let Some((leg, other)) = record.legs_for(&sip_call_id) else {
            return tx.respond(refusal(request, 481, "no such dialog", None));
        };
        let ours = leg.dialog.as_ref().map(|d| d.local_tag.clone());
        if ours.is_none()
            || ours != request.tag_to().ok().flatten()
            || record.state == CallState::Ended
        {
            let reason = if record.state == CallState::Ended {
                "the call has ended"
            } else {
                "no such dialog"
            };
            return tx.respond(refusal(request, 481, reason, None));
        }
        // Only the party of this leg may send in its dialog: its From tag must be the
        // remote tag the dialog was set up with (RFC 3261 §12.2.2). The Call-ID and our
        // tag are in every message of the call, so whoever saw one could otherwise forge
        // a BYE or a REFER.
        let from_tag = request.tag_from().ok().flatten().unwrap_or_default();
        if leg
            .dialog
            .as_ref()
            .is_some_and(|d| d.remote_tag != from_tag)
        {
            let method = request.method.to_string();
            warn!(%method, "From tag is not the dialog's: refused");
            METRICS
                .dialog_mismatches
                .with_label_values(&[&method])
                .inc();
            return tx.respond(refusal(
                request,
                481,
                "the From tag does not match the dialog",
                None,
            ));
        }
        let (leg, other) = (leg.clone(), other.cloned());
        tracing::Span::current().record("sid", sid.as_str());
        match request.method {
            Method::Bye => bye(&services, tx, version, &record, &leg, other.as_ref()).await,
            Method::Refer => {
                crate::call::transfer::refer(services.clone(), tx, record.clone(), leg.name.clone())
                    .await
            }
            Method::Options => {
                let response = crate::app::options_response(request);
                tx.respond(response);
            }
            Method::Invite | Method::Update | Method::Info | Method::Message => {
                relay(&services, tx, &sid, other.as_ref()).await
            }
            _ => {
                let mut response = refusal(
                    request,
                    501,
                    "not supported inside a call by this build",
                    None,
                );
                response
                    .headers
                    .push(Header::Allow(crate::app::ALLOWED_METHODS.into()));
                tx.respond(response);
            }
        }
    }
    .instrument(span)
    .await
}

/// BYE from one leg: answer it, BYE the other, end the call. During a transfer, a BYE
/// from the transferor only ends its leg: the transferee stays while the refer
/// application runs (most desk phones hang up right after 202).
async fn bye(
    services: &Services,
    tx: ServerTransaction,
    version: u64,
    record: &CallRecord,
    leg: &Leg,
    other: Option<&Leg>,
) {
    tx.respond(response_to(&tx.request, 200, None));
    if let Some(transfer) = &record.transfer
        && transfer.transferor == leg.name
    {
        info!(leg = %leg.name, "transferor hung up; the transfer goes on");
        let name = leg.name.clone();
        let ops = [Op::ForgetDialog {
            dialog_id: leg.index(),
        }];
        let known = Some((version, record.clone()));
        update_from(services, &record.sid, known, LIVE_TTL, &ops, move |r| {
            if let Some(l) = r.leg_mut(&name) {
                l.dialog = None;
            }
        })
        .await;
        return;
    }
    info!(from_leg = %leg.name, "BYE: ending the call");
    end(
        services,
        (version, record.clone()),
        other.into_iter().collect(),
    )
    .await;
}

/// Marks the call ended, forgets its dialogs, sends BYE on `bye_legs` with CSeqs
/// allocated in the same commit, and reports the Dial outcome to `action`.
async fn end(services: &Services, known: (u64, CallRecord), bye_legs: Vec<&Leg>) {
    let record = &known.1;
    let mut ops = record.closing_ops();
    ops.extend(bye_legs.iter().map(|leg| Op::NextCseq {
        leg: leg.name.clone(),
        floor: leg.dialog.as_ref().map_or(0, |d| d.local_cseq),
    }));
    let sid = record.sid.clone();
    let committed = update_from(services, &sid, Some(known.clone()), ENDED_TTL, &ops, |r| {
        r.state = CallState::Ended
    })
    .await;
    let cseqs = match &committed {
        Some((_, cseqs)) => cseqs.clone(),
        // The store failed: the other party is still told, with the next CSeq the
        // record knows of (right unless a request relayed on the leg took it).
        None => bye_legs
            .iter()
            .map(|leg| leg.dialog.as_ref().map_or(1, |d| d.local_cseq + 1))
            .collect(),
    };
    for (leg, cseq) in bye_legs.iter().zip(cseqs) {
        if let Some(bye) = request_on_leg(services, leg, Method::Bye, cseq, None, Vec::new()) {
            detach(bye);
        }
    }
    let Some((ended, _)) = committed else {
        return;
    };
    METRICS.calls.with_label_values(&["completed"]).inc();
    METRICS.calls_active.dec();
    if let Some(dial) = &ended.dial
        && let Some(action) = &dial.action
    {
        // The app learns how the bridged Dial ended. The caller's leg has ended with it:
        // continuing an answered call after the callee leaves needs the transfer
        // machinery (re-INVITE of the caller), not the set-up path.
        let duration = dial
            .answered_ms
            .map(|a| (now_ms().saturating_sub(a)) / 1000)
            .unwrap_or(0);
        let params = vec![
            ("CallSid".to_owned(), ended.sid.clone()),
            ("AccountSid".to_owned(), ended.account_sid.clone()),
            ("From".to_owned(), ended.from.clone()),
            ("To".to_owned(), ended.to.clone()),
            ("CallStatus".to_owned(), "completed".to_owned()),
            ("ApiVersion".to_owned(), "2012-04-24".to_owned()),
            ("Direction".to_owned(), "inbound".to_owned()),
            ("DialCallStatus".to_owned(), "completed".to_owned()),
            ("DialCallSid".to_owned(), dial.dial_call_sid.clone()),
            ("DialCallDuration".to_owned(), duration.to_string()),
        ];
        // Resolved against its document when the Dial ran.
        let url = &action.url;
        if let Err(error) = services
            .fetcher
            .fetch(url, action.method, &params, Purpose::DialAction)
            .await
        {
            warn!(%url, %error, "Dial action after the call failed");
        }
    }
}

/// Relays a request to the other leg and its final response back.
async fn relay(services: &Services, tx: ServerTransaction, sid: &str, other: Option<&Leg>) {
    let request = tx.request.clone();
    let Some(other) = other.filter(|o| o.dialog.is_some()) else {
        return tx.respond(refusal(
            &request,
            481,
            "the other party is not connected",
            None,
        ));
    };
    let content_type = request.header_value("Content-Type");
    let body = content_type
        .as_deref()
        .map(|ct| (ct, request.body.as_slice()))
        .filter(|(_, b)| !b.is_empty());
    let Some(mut client) = send_on_leg(services, sid, other, request.method, body).await else {
        return tx.respond(refusal(
            &request,
            500,
            "cannot reach the other party",
            Some(1),
        ));
    };
    let outcome = tokio::time::timeout(RELAY_TIMEOUT, async {
        loop {
            match client.event().await {
                Some(ClientEvent::Provisional(_)) => continue,
                Some(ClientEvent::Final(response)) => return Some(*response),
                Some(ClientEvent::Timeout) | None => return None,
            }
        }
    })
    .await
    .ok()
    .flatten();
    let Some(answer) = outcome else {
        return tx.respond(refusal(
            &request,
            408,
            "the other party did not answer",
            None,
        ));
    };
    let code = answer.status_code.code();
    if request.method == Method::Invite && (200..300).contains(&code) {
        // ACK the other leg at once (its answer is in hand); the requester's ACK ends at
        // this edge's server transaction.
        if let Some(dialog) = &other.dialog
            && let Ok((cseq, _)) = answer.cseq()
        {
            let ack = dialog.request(Method::Ack, cseq, &services.identity(other.peer.protocol));
            send_stateless(&services.sip.wire, &other.peer.destination(), ack);
        }
        detach(client);
    }
    tx.respond(relayed_response(&request, &answer, code, services));
}

fn relayed_response(
    request: &Request,
    answer: &Response,
    code: u16,
    services: &Services,
) -> Response {
    let mut response = response_to(request, code, None);
    if (200..300).contains(&code) && request.method == Method::Invite {
        response
            .headers
            .push(Header::Contact(services.contact().into()));
    }
    if !answer.body.is_empty() {
        let content_type = answer
            .header_value("Content-Type")
            .unwrap_or_else(|| "application/sdp".into());
        response
            .headers
            .push(Header::ContentType(content_type.into()));
        response.body = answer.body.clone();
    }
    response
}

/// Ends a call from the edge's side: BYE to every answered leg.
pub async fn hang_up(services: &Services, sid: &str, reason: &str) {
    let Some((version, record)) = load(services, sid).await else {
        return;
    };
    if record.state == CallState::Ended {
        return;
    }
    info!(reason, "hanging up the call");
    let answered = std::iter::once(&record.inbound)
        .chain(record.outbound.as_ref())
        .filter(|leg| leg.dialog.is_some())
        .collect();
    end(services, (version, record.clone()), answered).await;
}

/// A 2xx retransmitted by a callee whose ACK was lost: ACK it again from the stored
/// dialog (any edge process can).
pub async fn stray_2xx(services: Arc<Services>, response: Response, source: Destination) {
    let Ok(call_id) = response.call_id() else {
        return;
    };
    let our_tag = response.tag_from().ok().flatten().unwrap_or_default();
    let Ok(Some(found)) = services
        .store
        .find_call(&dialog_id(&call_id, &our_tag))
        .await
    else {
        return;
    };
    let Ok(record) = CallRecord::from_json(&found.sid, &found.data) else {
        return;
    };
    let Some((leg, _)) = record.legs_for(&call_id) else {
        return;
    };
    let (Some(dialog), Ok((cseq, _))) = (&leg.dialog, response.cseq()) else {
        return;
    };
    let ack = dialog.request(Method::Ack, cseq, &services.identity(leg.peer.protocol));
    send_stateless(
        &services.sip.wire,
        &Destination {
            connection: source.connection,
            ..leg.peer.destination()
        },
        ack,
    );
}
