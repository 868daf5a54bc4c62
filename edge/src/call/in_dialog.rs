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
use crate::store::{CallStore, Commit, Op, dialog_id};

/// How long a relayed request may take before the requester gets 408.
const RELAY_TIMEOUT: Duration = Duration::from_secs(34);

/// Loads a call and its version.
pub async fn load(services: &Services, sid: &str) -> Option<(u64, CallRecord)> {
    let (version, data) = services.store.load(sid).await.ok()??;
    CallRecord::from_json(&data).ok().map(|r| (version, r))
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
    for _ in 0..5 {
        let (version, mut record) = load(services, sid).await?;
        change(&mut record);
        match services
            .store
            .commit(sid, version, &record.to_json(), ttl, ops)
            .await
        {
            Ok(Commit::Committed { .. }) => return Some(record),
            Ok(Commit::Conflict { .. }) => continue,
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
        let sid = match services
            .store
            .find_dialog(&dialog_id(&sip_call_id, &our_tag))
            .await
        {
            Ok(Some(sid)) => sid,
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
        let Some((_, record)) = load(&services, &sid).await else {
            return tx.respond(refusal(request, 481, "no such call", None));
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
            Method::Bye => bye(&services, tx, &record, &leg, other.as_ref()).await,
            Method::Refer => {
                crate::call::transfer::refer(services.clone(), tx, record.clone(), leg.name.clone())
                    .await
            }
            Method::Options => {
                let response = crate::app::options_response(request);
                tx.respond(response);
            }
            Method::Invite | Method::Update | Method::Info | Method::Message => {
                relay(&services, tx, &sid, &leg, other.as_ref()).await
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
    record: &CallRecord,
    leg: &Leg,
    other: Option<&Leg>,
) {
    tx.respond(response_to(&tx.request, 200, None));
    if let Some(transfer) = &record.transfer
        && transfer.transferor == leg.name
    {
        info!(leg = %leg.name, "transferor hung up; the transfer goes on");
        let (name, index) = (leg.name.clone(), leg.index.clone());
        let ops = [Op::ForgetDialog { sip_call_id: index }];
        update(services, &record.sid, LIVE_TTL, &ops, move |r| {
            if let Some(l) = r.leg_mut(&name) {
                l.dialog = None;
            }
        })
        .await;
        return;
    }
    info!(from_leg = %leg.name, "BYE: ending the call");
    if let Some(other) = other
        && let Some(bye) = send_on_leg(services, &record.sid, other, Method::Bye, None).await
    {
        detach(bye);
    }
    end(services, record).await;
}

/// Marks the call ended, forgets its dialogs and reports the Dial outcome to `action`.
async fn end(services: &Services, record: &CallRecord) {
    let ops = record.closing_ops();
    let Some(ended) = update(services, &record.sid, ENDED_TTL, &ops, |r| {
        r.state = CallState::Ended
    })
    .await
    else {
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
        let base = ended.route.voice.url.clone();
        let url = crate::rcml::resolve(&base, &action.url).unwrap_or_else(|_| action.url.clone());
        if let Err(error) = services
            .fetcher
            .fetch(&url, action.method, &params, Purpose::DialAction)
            .await
        {
            warn!(%url, %error, "Dial action after the call failed");
        }
    }
}

/// Relays a request to the other leg and its final response back.
async fn relay(
    services: &Services,
    tx: ServerTransaction,
    sid: &str,
    leg: &Leg,
    other: Option<&Leg>,
) {
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
        let (from, to) = (leg.name.clone(), other.name.clone());
        let (offer, answer_sdp) = (body_text(&request.body), body_text(&answer.body));
        update(services, sid, LIVE_TTL, &[], move |r| {
            if let Some(l) = r.leg_mut(&from)
                && offer.is_some()
            {
                l.sdp = offer.clone();
            }
            if let Some(l) = r.leg_mut(&to)
                && answer_sdp.is_some()
            {
                l.sdp = answer_sdp.clone();
            }
        })
        .await;
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

fn body_text(body: &[u8]) -> Option<String> {
    (!body.is_empty()).then(|| String::from_utf8_lossy(body).into_owned())
}

/// Ends a call from the edge's side: BYE to every answered leg.
pub async fn hang_up(services: &Services, sid: &str, reason: &str) {
    let Some((_, record)) = load(services, sid).await else {
        return;
    };
    if record.state == CallState::Ended {
        return;
    }
    info!(reason, "hanging up the call");
    for leg in std::iter::once(&record.inbound).chain(record.outbound.as_ref()) {
        if let Some(bye) = send_on_leg(services, sid, leg, Method::Bye, None).await {
            detach(bye);
        }
    }
    end(services, &record).await;
}

/// A 2xx retransmitted by a callee whose ACK was lost: ACK it again from the stored
/// dialog (any edge process can).
pub async fn stray_2xx(services: Arc<Services>, response: Response, source: Destination) {
    let Ok(call_id) = response.call_id() else {
        return;
    };
    let our_tag = response.tag_from().ok().flatten().unwrap_or_default();
    let Ok(Some(sid)) = services
        .store
        .find_dialog(&dialog_id(&call_id, &our_tag))
        .await
    else {
        return;
    };
    let Some((_, record)) = load(&services, &sid).await else {
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
