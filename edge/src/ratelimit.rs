//! Rate limits: per source address (in memory, per edge process) and per call (REFER
//! storms, counted in the call record so every edge process sees the same count).
//!
//! The per-source limiter is a token bucket per source IP: `rate` requests a second on
//! average, bursts of up to `burst`. It runs in the SIP core before a request gets a
//! transaction, so a flood costs neither Redis nor RCML work. Its memory is bounded: at
//! most `max_sources` buckets; when the table is full, buckets that have refilled (their
//! source has been quiet long enough to be forgotten without changing any answer) are
//! swept, and if it is still full, the new sources share one overflow bucket, so a flood
//! from many (perhaps spoofed) addresses is limited as a whole while the sources already
//! tracked keep their own buckets.
//!
//! A source over its rate is answered 503 with Retry-After, but only a few times a
//! second (`REFUSALS_PER_SECOND`, bursts of `REFUSAL_BURST`): past that its packets are
//! dropped before they are even parsed ([`SourceLimiter::shedding`]), so a flooder that
//! ignores Retry-After costs a table lookup per packet and gets silence, and the edge's
//! queue stays short for everyone else.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::cidr::{Cidr, any_contains};

/// How often a full table may be swept (a sweep walks every bucket).
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);
/// 503 answers a source over its rate gets a second, and at once.
const REFUSALS_PER_SECOND: f64 = 1.0;
const REFUSAL_BURST: f64 = 5.0;

/// Configuration of the per-source limiter.
#[derive(Debug, Clone)]
pub struct SourceLimits {
    /// Requests a second a source may send on average.
    pub rate: f64,
    /// Requests a source may send at once.
    pub burst: f64,
    /// Most sources tracked at once.
    pub max_sources: usize,
    /// Sources never limited (a trunk, the load balancer's health checks).
    pub exempt: Vec<Cidr>,
}

/// The limiter's answer for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    Allowed,
    /// Refused: answer 503; a token is available again after this long.
    Limited {
        retry_after: Duration,
    },
    /// Refused, and the source has had its share of 503s: drop the request unanswered.
    Shed,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    /// 503 answers left (refilled at `REFUSALS_PER_SECOND`).
    refusals: f64,
    updated: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Bucket {
            tokens: burst,
            refusals: REFUSAL_BURST,
            updated: now,
        }
    }

    fn refill(&mut self, now: Instant, limits: &SourceLimits) {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * limits.rate).min(limits.burst);
        self.refusals = (self.refusals + elapsed * REFUSALS_PER_SECOND).min(REFUSAL_BURST);
        self.updated = now;
    }

    fn take(&mut self, now: Instant, limits: &SourceLimits) -> Admission {
        self.refill(now, limits);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Admission::Allowed
        } else if self.refusals >= 1.0 {
            self.refusals -= 1.0;
            Admission::Limited {
                retry_after: Duration::from_secs_f64((1.0 - self.tokens) / limits.rate),
            }
        } else {
            Admission::Shed
        }
    }

    /// Whether a request now would be dropped unanswered (nothing is taken).
    fn sheds(&self, now: Instant, limits: &SourceLimits) -> bool {
        let mut probe = *self;
        probe.refill(now, limits);
        probe.tokens < 1.0 && probe.refusals < 1.0
    }

    /// Whether the bucket would be full by `now`: forgetting it changes nothing.
    fn refilled_by(&self, now: Instant, limits: &SourceLimits) -> bool {
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens + elapsed * limits.rate >= limits.burst
            && self.refusals + elapsed * REFUSALS_PER_SECOND >= REFUSAL_BURST
    }
}

struct Buckets {
    by_source: HashMap<IpAddr, Bucket>,
    /// Shared by the sources that found the table full.
    overflow: Bucket,
    last_sweep: Option<Instant>,
}

/// Token buckets per source address, bounded in number.
pub struct SourceLimiter {
    limits: SourceLimits,
    buckets: Mutex<Buckets>,
}

impl SourceLimiter {
    /// `None` when the limits are off (`rate` 0).
    pub fn new(limits: SourceLimits) -> Option<Self> {
        if limits.rate <= 0.0 {
            return None;
        }
        let now = Instant::now();
        Some(SourceLimiter {
            buckets: Mutex::new(Buckets {
                by_source: HashMap::new(),
                overflow: Bucket::full(limits.burst, now),
                last_sweep: None,
            }),
            limits,
        })
    }

    /// Takes a token for one request from `source`.
    pub fn admit(&self, source: IpAddr) -> Admission {
        self.admit_at(source, Instant::now())
    }

    /// Whether a message from `source` would be dropped unanswered now: checked before
    /// parsing, so a flood costs a lookup per packet. Takes nothing (a source only seen
    /// here is not tracked).
    pub fn shedding(&self, source: IpAddr) -> bool {
        self.shedding_at(source, Instant::now())
    }

    fn shedding_at(&self, source: IpAddr, now: Instant) -> bool {
        let source = source.to_canonical();
        if any_contains(&self.limits.exempt, source) {
            return false;
        }
        let buckets = self.lock();
        match buckets.by_source.get(&source) {
            Some(bucket) => bucket.sheds(now, &self.limits),
            None if buckets.by_source.len() >= self.limits.max_sources => {
                buckets.overflow.sheds(now, &self.limits)
            }
            None => false,
        }
    }

    /// How many sources have a bucket now.
    pub fn tracked(&self) -> usize {
        self.lock().by_source.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buckets> {
        // A panic while holding the lock cannot leave the buckets inconsistent (each
        // update is a plain assignment), so a poisoned lock is used as it is.
        self.buckets.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admit_at(&self, source: IpAddr, now: Instant) -> Admission {
        let source = source.to_canonical();
        if any_contains(&self.limits.exempt, source) {
            return Admission::Allowed;
        }
        let limits = &self.limits;
        let mut buckets = self.lock();
        if let Some(bucket) = buckets.by_source.get_mut(&source) {
            return bucket.take(now, limits);
        }
        if buckets.by_source.len() >= limits.max_sources {
            let due = buckets
                .last_sweep
                .is_none_or(|last| now.saturating_duration_since(last) >= SWEEP_INTERVAL);
            if due {
                buckets.last_sweep = Some(now);
                buckets
                    .by_source
                    .retain(|_, bucket| !bucket.refilled_by(now, limits));
            }
            if buckets.by_source.len() >= limits.max_sources {
                return buckets.overflow.take(now, limits);
            }
        }
        let mut bucket = Bucket::full(limits.burst, now);
        let admission = bucket.take(now, limits);
        buckets.by_source.insert(source, bucket);
        admission
    }
}

/// `Retry-After` seconds for a wait: whole seconds, at least 1.
pub fn retry_after_seconds(wait: Duration) -> u32 {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    u32::try_from(seconds.max(1)).unwrap_or(u32::MAX)
}

/// Requests of one kind counted in a fixed window, kept in the call record (REFERs per
/// call): every edge process that gets a request of the call counts in the same window.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestWindow {
    /// When the current window began (ms since the epoch).
    pub started_ms: u64,
    /// Requests counted in it.
    pub count: u32,
}

impl RequestWindow {
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Counts one request at `now_ms`; a window older than `window` starts over. Past
    /// `limit` in the window: `Err` with how long until the window ends (the request is
    /// counted all the same: a storm does not get through by insisting).
    pub fn count(&mut self, now_ms: u64, limit: u32, window: Duration) -> Result<(), Duration> {
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        if self.count == 0 || now_ms.saturating_sub(self.started_ms) >= window_ms {
            *self = RequestWindow {
                started_ms: now_ms,
                count: 0,
            };
        }
        self.count = self.count.saturating_add(1);
        match self.over_limit(limit, now_ms, window) {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// When more than `limit` requests are counted: how long until the window ends.
    pub fn over_limit(&self, limit: u32, now_ms: u64, window: Duration) -> Option<Duration> {
        if self.count <= limit {
            return None;
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let ends_ms = self.started_ms.saturating_add(window_ms);
        Some(Duration::from_millis(ends_ms.saturating_sub(now_ms)))
    }
}

/// How many requests of a kind one call may send per window (REFERs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallLimit {
    /// 0: no limit.
    pub per_window: u32,
    pub window: Duration,
}

impl CallLimit {
    pub const OFF: CallLimit = CallLimit {
        per_window: 0,
        window: Duration::ZERO,
    };

    pub fn is_off(&self) -> bool {
        self.per_window == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(rate: f64, burst: f64, max_sources: usize, exempt: &[&str]) -> SourceLimiter {
        SourceLimiter::new(SourceLimits {
            rate,
            burst,
            max_sources,
            exempt: exempt.iter().map(|c| c.parse().unwrap()).collect(),
        })
        .unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn allowed(limiter: &SourceLimiter, source: &str, now: Instant, n: usize) -> usize {
        (0..n)
            .filter(|_| limiter.admit_at(ip(source), now) == Admission::Allowed)
            .count()
    }

    #[test]
    fn a_source_gets_its_burst_then_the_rate_and_others_are_not_affected() {
        let limiter = limiter(10.0, 5.0, 100, &[]);
        let start = Instant::now();
        assert_eq!(allowed(&limiter, "192.0.2.1", start, 5), 5);
        match limiter.admit_at(ip("192.0.2.1"), start) {
            Admission::Limited { retry_after } => {
                assert_eq!(retry_after, Duration::from_millis(100), "one token at 10/s")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            allowed(&limiter, "192.0.2.2", start, 3),
            3,
            "another source"
        );
        // Half a second later: five more tokens, no more.
        let later = start + Duration::from_millis(500);
        assert_eq!(allowed(&limiter, "192.0.2.1", later, 20), 5);
    }

    #[test]
    fn past_a_few_503s_a_source_is_shed_until_it_slows_down() {
        let limiter = limiter(1.0, 2.0, 100, &[]);
        let start = Instant::now();
        let source = ip("192.0.2.1");
        let answers: Vec<Admission> = (0..10).map(|_| limiter.admit_at(source, start)).collect();
        let count = |f: fn(&Admission) -> bool| answers.iter().filter(|a| f(a)).count();
        assert_eq!(count(|a| *a == Admission::Allowed), 2);
        assert_eq!(
            count(|a| matches!(a, Admission::Limited { .. })),
            5,
            "REFUSAL_BURST"
        );
        assert_eq!(count(|a| *a == Admission::Shed), 3);
        assert!(limiter.shedding_at(source, start));
        assert!(
            !limiter.shedding_at(ip("192.0.2.2"), start),
            "another source"
        );
        // A second later: a token and a refusal are back.
        let later = start + Duration::from_secs(1);
        assert!(!limiter.shedding_at(source, later));
        assert_eq!(limiter.admit_at(source, later), Admission::Allowed);
        assert!(matches!(
            limiter.admit_at(source, later),
            Admission::Limited { .. }
        ));
        assert_eq!(limiter.admit_at(source, later), Admission::Shed);
    }

    #[test]
    fn exempt_ranges_are_never_limited_and_not_tracked() {
        let limiter = limiter(1.0, 1.0, 100, &["10.0.0.0/8"]);
        let now = Instant::now();
        assert_eq!(allowed(&limiter, "10.1.2.3", now, 50), 50);
        assert_eq!(limiter.tracked(), 0);
        assert_eq!(
            allowed(&limiter, "::ffff:10.1.2.3", now, 5),
            5,
            "mapped IPv4"
        );
    }

    #[test]
    fn the_table_is_bounded_and_new_sources_share_the_overflow_bucket_when_full() {
        let limiter = limiter(1.0, 2.0, 3, &[]);
        let now = Instant::now();
        for i in 1..=3 {
            assert_eq!(allowed(&limiter, &format!("192.0.2.{i}"), now, 1), 1);
        }
        assert_eq!(limiter.tracked(), 3);
        // The table is full of sources that are not quiet: newcomers share one bucket
        // (burst 2), whatever their number.
        let newcomers: usize = (10..60)
            .map(|i| allowed(&limiter, &format!("198.51.100.{i}"), now, 1))
            .sum();
        assert_eq!(newcomers, 2);
        assert_eq!(limiter.tracked(), 3, "bounded");
        // Tracked sources keep their own buckets meanwhile.
        assert_eq!(allowed(&limiter, "192.0.2.1", now, 5), 1);
    }

    #[test]
    fn quiet_sources_are_swept_to_make_room() {
        let limiter = limiter(1.0, 2.0, 2, &[]);
        let start = Instant::now();
        assert_eq!(allowed(&limiter, "192.0.2.1", start, 1), 1);
        assert_eq!(allowed(&limiter, "192.0.2.2", start, 2), 2);
        // 1.5 s later the first has refilled (1 + 1.5 >= 2), the second not (0 + 1.5).
        let later = start + Duration::from_millis(1500);
        assert_eq!(allowed(&limiter, "192.0.2.3", later, 1), 1);
        assert_eq!(limiter.tracked(), 2);
        let buckets = limiter.lock();
        assert!(buckets.by_source.contains_key(&ip("192.0.2.2")));
        assert!(buckets.by_source.contains_key(&ip("192.0.2.3")));
    }

    #[test]
    fn no_limiter_when_the_rate_is_zero() {
        assert!(
            SourceLimiter::new(SourceLimits {
                rate: 0.0,
                burst: 10.0,
                max_sources: 10,
                exempt: Vec::new(),
            })
            .is_none()
        );
    }

    #[test]
    fn retry_after_is_whole_seconds_and_at_least_one() {
        assert_eq!(retry_after_seconds(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(30)), 30);
    }

    #[test]
    fn a_request_window_counts_up_to_its_limit_then_refuses_until_it_ends() {
        let mut window = RequestWindow::default();
        let minute = Duration::from_secs(60);
        for i in 0..3 {
            assert_eq!(window.count(1_000 + i, 3, minute), Ok(()));
        }
        assert_eq!(
            window.count(11_000, 3, minute),
            Err(Duration::from_millis(50_000))
        );
        assert!(window.count(12_000, 3, minute).is_err());
        // A new window.
        assert_eq!(window.count(61_000, 3, minute), Ok(()));
        assert_eq!(window.count, 1);
        assert_eq!(window.started_ms, 61_000);
    }
}
