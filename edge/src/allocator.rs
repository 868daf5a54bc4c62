//! The process's allocator (mimalloc, set in `main.rs`) and when it hands freed memory
//! back to the operating system.
//!
//! A call's set-up leaves about 7 KB in its INVITE transactions for 32 s (64·T1, RFC
//! 6026's Accepted state), then frees it; what stays per held call is ~150 bytes (call
//! state is in Redis). mimalloc returns free pages to the OS only when a thread runs its
//! collection, which it does while allocating: a worker that goes quiet once its
//! transactions have expired kept those pages, and the edge's RSS stayed at the set-up
//! peak (about 98 MiB for 10,000 calls held, with 2.2 MB of it in use; bench/profile.md).
//! Collecting when a worker parks, at most every [`COLLECT_EVERY`], gives them back.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How often a worker may collect; a collection walks the thread's pages, so it is not
/// done on every park (a loaded worker parks thousands of times a second).
pub const COLLECT_EVERY: Duration = Duration::from_millis(250);

thread_local! {
    static LAST_COLLECT: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// For tokio's `on_thread_park`: frees the calling thread's empty pages and purges the
/// allocator's free memory, unless this thread did so within [`COLLECT_EVERY`].
pub fn collect_when_idle() {
    let now = Instant::now();
    let due = LAST_COLLECT.with(|last| match last.get() {
        Some(at) if now.duration_since(at) < COLLECT_EVERY => false,
        _ => {
            last.set(Some(now));
            true
        }
    });
    if due {
        // SAFETY: mi_collect takes no pointers and may be called from any thread at any
        // time; `false` asks for the cheap, non-forced collection.
        unsafe { libmimalloc_sys::mi_collect(false) };
    }
}
