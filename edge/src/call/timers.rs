//! Call timers that must fire even if the process that set them dies.
//!
//! Every edge process polls the store's timer set. A due timer is handled by the process
//! that holds (or can take) the call's ownership lease:
//! - an answered call whose Dial `timeLimit` is reached is hung up;
//! - a call still being set up whose owner's lease ran out (the owner died mid-Dial) is
//!   adopted: the callee's INVITE is cancelled and the caller gets 480, then the call ends.
//!
//! The owner of a call in set-up handles its own Dial timeout locally and clears the timer;
//! the poller never touches a call this process is still driving.

use std::sync::Arc;
use std::time::Duration;

use rsip::SipMessage;
use tracing::{Instrument, info, info_span, warn};

use crate::call::in_dialog::{hang_up, load, update};
use crate::call::record::{CallState, ENDED_TTL, now_ms};
use crate::call::{Services, refusal};
use crate::metrics::METRICS;
use crate::sip::endpoint::send_stateless;
use crate::sip::message::parse;
use crate::sip::transaction::client::cancel_for;
use crate::store::{CallStore, Op};

/// How often the timer set is polled.
const POLL: Duration = Duration::from_millis(500);
/// How long a process may hold a call to handle one of its timers.
const HANDLING_LEASE: Duration = Duration::from_secs(10);

/// Polls the timer set until the process exits.
pub async fn run(services: Arc<Services>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Ok(due) = services.store.due_timers(now_ms(), 64).await else {
            continue; // Redis unavailable: the next tick tries again
        };
        for sid in due {
            tokio::spawn(fire(services.clone(), sid));
        }
    }
}

async fn fire(services: Arc<Services>, sid: String) {
    let span = info_span!("timer", %sid);
    async move {
        let Some((_, record)) = load(&services, &sid).await else {
            // Expired or never written: nothing to do but forget the timer.
            let _ = update(&services, &sid, ENDED_TTL, &[Op::CancelTimer], |_| {}).await;
            return;
        };
        if record.state == CallState::Setup && record.owner == services.pod {
            return; // this process drives the set-up and its Dial timer
        }
        if !services
            .store
            .claim(&sid, &services.pod, HANDLING_LEASE)
            .await
            .unwrap_or(false)
        {
            return; // the owner is alive (holds the lease), or another process handles it
        }
        match record.state {
            CallState::Answered
                if record
                    .transfer
                    .as_ref()
                    .is_some_and(|t| t.owner != services.pod) =>
            {
                abandon_transfer(&services, &sid).await;
            }
            CallState::Answered => {
                let limit = record.dial.as_ref().and_then(|d| d.hangup_at_ms);
                match limit {
                    Some(at) if at <= now_ms() => {
                        info!("Dial timeLimit reached");
                        hang_up(&services, &sid, "Dial timeLimit reached").await;
                    }
                    Some(at) => {
                        let _ = update(
                            &services,
                            &sid,
                            crate::call::record::LIVE_TTL,
                            &[Op::ScheduleTimer { due_ms: at }],
                            |_| {},
                        )
                        .await;
                    }
                    None => {
                        let _ = update(
                            &services,
                            &sid,
                            crate::call::record::LIVE_TTL,
                            &[Op::CancelTimer],
                            |_| {},
                        )
                        .await;
                    }
                }
            }
            CallState::Setup => adopt(&services, &sid).await,
            CallState::Ended => {
                let _ = update(&services, &sid, ENDED_TTL, &[Op::CancelTimer], |_| {}).await;
            }
        }
        let _ = services.store.release(&sid, &services.pod).await;
    }
    .instrument(span)
    .await
}

/// The process setting the call up died: cancel the callee, refuse the caller, end it.
async fn adopt(services: &Services, sid: &str) {
    let Some((_, record)) = load(services, sid).await else {
        return;
    };
    warn!(owner = %record.owner, "adopting a call whose set-up owner stopped: cancelling it");
    // The CANCEL must carry the INVITE's Via (the callee matches it by branch and
    // sent-by), so its answers go to the dead process: it is sent once, statelessly.
    if let Some(out) = &record.outbound
        && let Some(Ok(SipMessage::Request(invite))) =
            out.invite.as_deref().map(|t| parse(t.as_bytes()))
    {
        send_stateless(
            &services.sip.wire,
            &out.peer.destination(),
            cancel_for(&invite),
        );
    }
    if let Some(Ok(SipMessage::Request(invite))) = record
        .inbound
        .invite
        .as_deref()
        .map(|t| parse(t.as_bytes()))
    {
        let response = refusal(
            &invite,
            480,
            "the edge setting up this call stopped; the call was abandoned",
            None,
        );
        send_stateless(
            &services.sip.wire,
            &record.inbound.peer.destination(),
            response,
        );
    }
    let ops = record.closing_ops();
    if update(services, sid, ENDED_TTL, &ops, |r| {
        r.state = CallState::Ended
    })
    .await
    .is_some()
    {
        METRICS
            .calls
            .with_label_values(&["adopted_and_abandoned"])
            .inc();
    }
}

/// The process running a transfer died (its lease ran out): cancel the target it was
/// dialling and end the call cleanly rather than leave it half-bridged.
async fn abandon_transfer(services: &Services, sid: &str) {
    let Some((_, record)) = load(services, sid).await else {
        return;
    };
    warn!("adopting a call whose transfer owner stopped: ending it cleanly");
    if let Some(target) = record.transfer.as_ref().and_then(|t| t.target.as_ref())
        && let Some(Ok(SipMessage::Request(invite))) =
            target.invite.as_deref().map(|t| parse(t.as_bytes()))
    {
        send_stateless(
            &services.sip.wire,
            &target.peer.destination(),
            cancel_for(&invite),
        );
    }
    let _ = update(services, sid, crate::call::record::LIVE_TTL, &[], |r| {
        r.transfer = None
    })
    .await;
    hang_up(
        services,
        sid,
        "the edge running this call's transfer stopped",
    )
    .await;
    METRICS
        .transfers
        .with_label_values(&["failed", "owner_lost"])
        .inc();
}
