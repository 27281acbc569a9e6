//! Deadlines for long time limits, kept by one helper thread instead of the async
//! runtime's timer wheel.
//!
//! A tokio timer costs more than its own registration: while any timer is registered,
//! every worker that goes idle parks with a timeout (a kernel timer armed and cancelled
//! on every park, dear on virtual machines), and registering a timer earlier than the
//! sleeping driver's wake-up unparks it. Measured on the pools' benchmarks, the timeout's
//! timer was 5–9 % of a Redis `GET` and 2–3 % of an HTTP request on loopback. Limits of
//! [`MIN_LIMIT`] or more therefore go to this module instead: an attempt that waits
//! takes a slot (from a per-thread cache), puts its waker and deadline in it and marks it
//! new; an attempt that finishes first takes the slot back, and if the helper thread has
//! not looked at it yet, nothing else happens. The thread looks over the slots every
//! [`CADENCE`] (while any are armed), queues the new ones by deadline, and wakes those
//! whose deadline passes. It sleeps without a timeout while nothing is armed. A look
//! reads one word per slot ever allocated (slots are never freed: their number is the
//! most attempts that waited at once, in chunks of 256).
//!
//! Under tokio's paused test clock (`tokio::time::pause`) time is the runtime's, not the
//! thread's: [`arm`] notices (two readings of tokio's clock agree) and declines, and the
//! caller uses a tokio timer.
//!
//! The slot protocol (owner against helper thread) is model-checked with loom.

use std::task::{Context, Waker};
use std::time::Duration;

use crate::sync::{lock, AtomicUsize, Mutex, Ordering};

/// The shortest limit kept here; shorter ones use tokio's timer (a new deadline earlier
/// than the thread's next look would need the thread woken for it).
pub(crate) const MIN_LIMIT: Duration = Duration::from_millis(100);

/// How often the helper thread looks for newly armed slots while any are armed; at most
/// half of [`MIN_LIMIT`], so that it queues every slot before its deadline. (Unused under
/// loom, where no limit is kept here.)
#[cfg_attr(resilience_loom, allow(dead_code))]
pub(crate) const CADENCE: Duration = Duration::from_millis(40);

/// Free: in a cache or the shared free list.
const FREE: usize = 0;
/// Armed, not yet seen by the helper thread: its owner may free it at once.
const NEW: usize = 1;
/// Armed and queued by the helper thread.
const SEEN: usize = 2;
/// Queued, and its owner is gone: the helper thread frees it when it takes it off the queue.
const CANCELLED: usize = 3;
/// The deadline passed and the owner was woken: the owner frees it.
const FIRED: usize = 4;

/// One armed deadline's shared state.
#[repr(align(64))] // one per cache line: the slots of different workers do not share one
pub(crate) struct Slot {
    state: AtomicUsize,
    /// Nanoseconds since [`base`]; written by the owner before the slot is marked `NEW`.
    deadline: crate::sync::AtomicU64,
    waker: Mutex<Option<Waker>>,
}

/// What the helper thread found in a queued slot whose deadline came.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// Its owner was woken; the owner frees the slot.
    Fired,
    /// Its owner was gone; the thread frees the slot.
    Cancelled,
}

impl Slot {
    /// A free slot.
    pub(crate) fn new() -> Self {
        Self { state: AtomicUsize::new(FREE), deadline: crate::sync::AtomicU64::new(0), waker: Mutex::new(None) }
    }

    /// Arms this free slot (its owner's) for `deadline` with `waker`.
    pub(crate) fn arm(&self, deadline: u64, waker: &Waker) {
        *lock(&self.waker) = Some(waker.clone());
        self.deadline.store(deadline, Ordering::Relaxed);
        // SeqCst: ordered with the helper thread's idle flag (see `Clock::announce`).
        self.state.store(NEW, Ordering::SeqCst);
    }

    /// The owner's check on a later poll: whether the deadline passed, after making sure
    /// `waker` is the one woken when it does.
    pub(crate) fn poll_fired(&self, cx: &Context<'_>) -> bool {
        {
            let mut waker = lock(&self.waker);
            match &*waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        // Stored before the thread took the waker, so a firing after the lock above is
        // seen here, and one before it woke (or will wake) the waker just stored.
        self.state.load(Ordering::Acquire) == FIRED
    }

    /// The owner lets go of its slot; `true` when the owner must free it (the helper
    /// thread never saw it, or already woke it), `false` when the thread will.
    pub(crate) fn release(&self) -> bool {
        // The waker first: once the slot is marked cancelled the thread may free it and a
        // new owner arm it, whose waker this must not take.
        drop(lock(&self.waker).take());
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let (to, owner_frees) = match state {
                NEW => (FREE, true),
                SEEN => (CANCELLED, false),
                FIRED => (FREE, true),
                _ => unreachable!("a slot released in state {state}"),
            };
            match self.state.compare_exchange(state, to, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return owner_frees,
                Err(now) => state = now,
            }
        }
    }

    /// The helper thread's look at this slot: its deadline if it is newly armed (now
    /// queued by the caller), else `None`.
    pub(crate) fn take_new(&self) -> Option<u64> {
        if self.state.load(Ordering::Relaxed) != NEW {
            return None;
        }
        self.state.compare_exchange(NEW, SEEN, Ordering::AcqRel, Ordering::Relaxed).ok()?;
        Some(self.deadline.load(Ordering::Relaxed))
    }

    /// The helper thread takes this queued slot off its queue at its deadline (or, with
    /// `only_cancelled`, before it, to drop cancelled ones: `None` for a live one).
    pub(crate) fn expire(&self, only_cancelled: bool) -> Option<Expired> {
        loop {
            match self.state.load(Ordering::Acquire) {
                CANCELLED => {
                    self.state.store(FREE, Ordering::Relaxed);
                    return Some(Expired::Cancelled);
                }
                SEEN if only_cancelled => return None,
                SEEN => {
                    if self.state.compare_exchange(SEEN, FIRED, Ordering::AcqRel, Ordering::Acquire).is_err() {
                        continue; // cancelled meanwhile
                    }
                    let waker = lock(&self.waker).take();
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                    return Some(Expired::Fired);
                }
                state => unreachable!("a queued slot in state {state}"),
            }
        }
    }
}

#[cfg(not(resilience_loom))]
pub(crate) use keeper::{arm, Armed};

/// Under loom, every limit uses tokio's timer: the model checks the slots, not the thread.
#[cfg(resilience_loom)]
#[derive(Debug)]
pub(crate) enum Armed {}

#[cfg(resilience_loom)]
impl Armed {
    pub(crate) fn poll_fired(&self, _: &Context<'_>) -> bool {
        match *self {}
    }

    pub(crate) fn start(&self) -> std::time::Instant {
        match *self {}
    }
}

/// Under loom: declined (see [`Armed`]).
#[cfg(resilience_loom)]
pub(crate) fn arm(_: Duration, _: &Context<'_>) -> Option<Armed> {
    None
}

#[cfg(not(resilience_loom))]
mod keeper {
    //! The slots, their free lists and the helper thread.

    use std::cell::RefCell;
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::num::NonZeroU32;
    use std::sync::atomic::{AtomicBool, AtomicPtr};
    use std::sync::{LazyLock, OnceLock};
    use std::task::Context;
    use std::thread::Thread;
    use std::time::{Duration, Instant};

    use super::{Expired, Slot, CADENCE};
    use crate::clock::duration_nanos;
    use crate::sync::{lock, AtomicUsize, Mutex, Ordering};

    /// Slots per chunk; chunks are allocated as needed and never freed (their number is
    /// the most attempts ever waiting at once, in chunks).
    const CHUNK: usize = 256;
    /// At most this many chunks (about a million waiting attempts); past it, attempts
    /// use tokio's timer.
    const CHUNKS: usize = 4096;
    /// Slots a thread's cache takes from, or gives back to, the shared free list at once.
    const BATCH: usize = 64;

    /// Every chunk, in order; `ALLOCATED` counts the slots in them.
    static DIRECTORY: [AtomicPtr<Slot>; CHUNKS] = [const { AtomicPtr::new(std::ptr::null_mut()) }; CHUNKS];
    static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
    /// Free slots not in any thread's cache (and the lock chunks are allocated under).
    static FREE_LIST: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    /// The helper thread is asleep without a timeout: arming a slot must wake it.
    static IDLE: AtomicBool = AtomicBool::new(false);
    /// The helper thread, `None` if it could not be started.
    static KEEPER: OnceLock<Option<Thread>> = OnceLock::new();
    /// What deadlines are measured from.
    static BASE: LazyLock<Instant> = LazyLock::new(Instant::now);

    thread_local! {
        /// This thread's free slots.
        static CACHE: RefCell<Cache> = const { RefCell::new(Cache(Vec::new())) };
    }

    /// A thread's free slots; given back to the shared list when the thread ends.
    struct Cache(Vec<u32>);

    impl Drop for Cache {
        fn drop(&mut self) {
            give_back(&mut self.0, 0);
        }
    }

    /// Moves all but `keep` of `slots` to the shared free list.
    fn give_back(slots: &mut Vec<u32>, keep: usize) {
        if slots.len() > keep {
            let mut free = lock(&FREE_LIST);
            free.extend(slots.drain(keep..));
        }
    }

    /// Slot `index` (allocated, so its chunk exists).
    fn slot(index: u32) -> &'static Slot {
        let index = index as usize;
        let chunk = DIRECTORY[index / CHUNK].load(Ordering::Acquire);
        // SAFETY: `index` came from the free lists, which only hold slots of published
        // chunks; a chunk is `CHUNK` slots, leaked, never freed or moved.
        #[allow(unsafe_code)]
        unsafe {
            &*chunk.add(index % CHUNK)
        }
    }

    /// A free slot: from this thread's cache, the shared list, or a new chunk.
    fn take_slot() -> Option<u32> {
        let cached = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            if let Some(index) = cache.0.pop() {
                return Some(index);
            }
            refill(&mut cache.0);
            cache.0.pop()
        });
        match cached {
            Ok(index) => index,
            // The thread is ending: straight from the shared list.
            Err(_) => {
                let mut one = Vec::new();
                refill(&mut one);
                let index = one.pop();
                give_back(&mut one, 0);
                index
            }
        }
    }

    /// Fills `cache` with up to a batch of free slots, allocating a chunk if none are free.
    fn refill(cache: &mut Vec<u32>) {
        let mut free = lock(&FREE_LIST);
        if free.is_empty() {
            let allocated = ALLOCATED.load(Ordering::Relaxed);
            if allocated / CHUNK == CHUNKS {
                return;
            }
            let chunk: Box<[Slot]> = (0..CHUNK).map(|_| Slot::new()).collect();
            let chunk = Box::leak(chunk).as_mut_ptr();
            DIRECTORY[allocated / CHUNK].store(chunk, Ordering::Release);
            // Release: the thread reads the directory up to what this says.
            ALLOCATED.store(allocated + CHUNK, Ordering::Release);
            free.extend((allocated..allocated + CHUNK).rev().map(|i| i as u32));
        }
        let from = free.len().saturating_sub(BATCH);
        cache.extend(free.drain(from..));
    }

    /// Gives slot `index` back to this thread's cache.
    fn free_slot(index: u32) {
        let cached = CACHE.try_with(|cache| {
            let mut cache = cache.borrow_mut();
            cache.0.push(index);
            if cache.0.len() > 2 * BATCH {
                give_back(&mut cache.0, BATCH);
            }
        });
        if cached.is_err() {
            give_back(&mut vec![index], 0);
        }
    }

    /// Slots allocated so far (free or not).
    #[cfg(test)]
    pub(super) fn allocated() -> usize {
        ALLOCATED.load(Ordering::Relaxed)
    }

    /// The helper thread, started on first use.
    fn keeper() -> Option<&'static Thread> {
        KEEPER
            .get_or_init(|| {
                std::thread::Builder::new()
                    .name("resilience-deadlines".into())
                    .spawn(run)
                    .map(|handle| handle.thread().clone())
                    .ok()
            })
            .as_ref()
    }

    /// An attempt's armed deadline; dropping it lets go of the slot.
    #[derive(Debug)]
    pub(crate) struct Armed {
        /// The slot's index plus one (so that `Option<Armed>` is two words).
        slot: NonZeroU32,
        /// When the attempt started: nanoseconds since `BASE`.
        start: u64,
    }

    /// Arms a deadline `limit` from now for the attempt polled with `cx`; `None` when
    /// tokio's timer must be used instead (a paused test clock, no helper thread, or a
    /// million deadlines armed at once).
    pub(crate) fn arm(limit: Duration, cx: &Context<'_>) -> Option<Armed> {
        // A paused tokio clock does not move between two readings; a running one does.
        let a = tokio::time::Instant::now();
        let start = tokio::time::Instant::now();
        if a == start {
            return None;
        }
        let keeper = keeper()?;
        let start = duration_nanos(start.into_std().saturating_duration_since(*BASE));
        let deadline = start.saturating_add(duration_nanos(limit));
        let index = take_slot()?;
        slot(index).arm(deadline, cx.waker());
        if IDLE.load(Ordering::SeqCst) && IDLE.swap(false, Ordering::SeqCst) {
            keeper.unpark();
        }
        Some(Armed { slot: NonZeroU32::MIN.saturating_add(index), start })
    }

    // Carried by every timed attempt's future, armed or not.
    const _: () = assert!(std::mem::size_of::<Option<Armed>>() == 16);

    impl Armed {
        /// Whether the deadline passed (the waker of `cx` is woken when it does).
        pub(crate) fn poll_fired(&self, cx: &Context<'_>) -> bool {
            slot(self.index()).poll_fired(cx)
        }

        /// When the attempt started.
        pub(crate) fn start(&self) -> Instant {
            *BASE + Duration::from_nanos(self.start)
        }

        fn index(&self) -> u32 {
            self.slot.get() - 1
        }
    }

    impl Drop for Armed {
        fn drop(&mut self) {
            let index = self.index();
            if slot(index).release() {
                free_slot(index);
            }
        }
    }

    /// The helper thread: looks for new slots every [`CADENCE`], wakes the owners of
    /// those whose deadline passed, and sleeps without a timeout while none are armed.
    fn run() {
        // Queued slots by deadline, and how many were queued at the last sweep.
        let mut queue: BinaryHeap<Reverse<(u64, u32)>> = BinaryHeap::new();
        let mut swept = 0usize;
        let mut freed: Vec<u32> = Vec::new();
        loop {
            let found = look(&mut queue);
            let now = duration_nanos(BASE.elapsed());
            while let Some(&Reverse((deadline, index))) = queue.peek() {
                if deadline > now {
                    break;
                }
                queue.pop();
                if slot(index).expire(false) == Some(Expired::Cancelled) {
                    freed.push(index);
                }
            }
            // Cancelled slots wait in the queue for their deadlines; when they may
            // outnumber the live ones, drop them.
            if queue.len() > 2 * swept + 1024 {
                queue.retain(|Reverse((_, index))| match slot(*index).expire(true) {
                    Some(_) => {
                        freed.push(*index);
                        false
                    }
                    None => true,
                });
                swept = queue.len();
            }
            give_back(&mut freed, 0);
            if queue.is_empty() && !found {
                // Idle: say so, then look once more, for a slot armed before the flag
                // was visible to its owner.
                IDLE.store(true, Ordering::SeqCst);
                // Against the owner's SeqCst arming and then reading of the flag: one of
                // the two sees the other.
                std::sync::atomic::fence(Ordering::SeqCst);
                if look(&mut queue) {
                    IDLE.store(false, Ordering::SeqCst);
                    continue;
                }
                while IDLE.load(Ordering::SeqCst) {
                    std::thread::park();
                }
                continue;
            }
            let next = queue.peek().map_or(u64::MAX, |Reverse((deadline, _))| *deadline);
            let wait = Duration::from_nanos(next.saturating_sub(duration_nanos(BASE.elapsed()))).min(CADENCE);
            if !wait.is_zero() {
                std::thread::park_timeout(wait);
            }
        }
    }

    /// Queues every newly armed slot; whether any slot was armed.
    fn look(queue: &mut BinaryHeap<Reverse<(u64, u32)>>) -> bool {
        let allocated = ALLOCATED.load(Ordering::Acquire);
        let mut found = false;
        for index in 0..allocated as u32 {
            if let Some(deadline) = slot(index).take_new() {
                queue.push(Reverse((deadline, index)));
                found = true;
            }
        }
        found
    }
}

#[cfg(all(test, resilience_loom))]
mod loom_tests {
    //! The slot protocol under every interleaving of an owner and the helper thread.

    use std::sync::Arc;
    use std::task::{Context, Wake, Waker};

    use loom::sync::atomic::{AtomicUsize, Ordering};

    use super::{Expired, Slot};

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A slot armed for `deadline` by an owner whose waker counts its wake-ups.
    fn armed(deadline: u64) -> (Arc<Slot>, Arc<Count>, Waker) {
        let slot = Arc::new(Slot::new());
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        slot.arm(deadline, &waker);
        (slot, count, waker)
    }

    /// The helper thread's side: looks at the slot, then expires it (its deadline having
    /// come); 1 if it freed the slot.
    fn keeper(slot: Arc<Slot>) -> loom::thread::JoinHandle<(bool, usize)> {
        loom::thread::spawn(move || match slot.take_new() {
            Some(deadline) => {
                assert_eq!(deadline, 7);
                match slot.expire(false) {
                    Some(Expired::Cancelled) => (false, 1),
                    Some(Expired::Fired) => (true, 0),
                    None => unreachable!("expire(false) always decides"),
                }
            }
            None => (false, 0),
        })
    }

    /// An owner that polls and then waits is woken if its deadline passes after its
    /// poll said it had not: no wake-up is lost.
    #[test]
    fn no_lost_wakeup() {
        loom::model(|| {
            let (slot, count, waker) = armed(7);
            let keeper = keeper(Arc::clone(&slot));
            let seen = slot.poll_fired(&Context::from_waker(&waker));
            let (fired, keeper_frees) = keeper.join().expect("keeper");
            if fired && !seen {
                assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken when it fired");
            }
            assert!(slot.poll_fired(&Context::from_waker(&waker)) == fired);
            assert_eq!(usize::from(slot.release()) + keeper_frees, 1, "freed exactly once");
        });
    }

    /// An owner that lets go while the thread looks and expires: exactly one of them
    /// frees the slot.
    #[test]
    fn release_against_keeper() {
        loom::model(|| {
            let (slot, _count, _waker) = armed(7);
            let keeper = keeper(Arc::clone(&slot));
            let owner_frees = usize::from(slot.release());
            let (_, keeper_frees) = keeper.join().expect("keeper");
            assert_eq!(owner_frees + keeper_frees, 1, "freed exactly once");
        });
    }

    /// The thread's sweep of cancelled slots leaves a live one queued and frees a
    /// cancelled one, whatever the owner does meanwhile.
    #[test]
    fn sweep_against_release() {
        loom::model(|| {
            let (slot, _count, _waker) = armed(1);
            assert_eq!(slot.take_new(), Some(1));
            let owner = {
                let slot = Arc::clone(&slot);
                loom::thread::spawn(move || slot.release())
            };
            let swept = slot.expire(true);
            let owner_frees = owner.join().expect("owner");
            let keeper_frees = match swept {
                Some(Expired::Cancelled) => true,
                Some(Expired::Fired) => unreachable!("a sweep fires nothing"),
                None => slot.expire(false) == Some(Expired::Cancelled),
            };
            assert!(owner_frees ^ keeper_frees, "freed exactly once");
        });
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::sync::atomic::Ordering::Relaxed;
    use std::task::{Context, Waker};
    use std::time::{Duration, Instant};

    use super::keeper::allocated;
    use crate::timeout::{limit_nanos, Elapsed, Limited};

    /// A limit kept by the helper thread ends a future that never finishes on time: not
    /// before its deadline, and within a few cadences after it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_limit_fires_on_time() {
        let limit = Duration::from_millis(150);
        let start = Instant::now();
        let out = Limited::new(std::future::pending::<()>(), limit_nanos(Some(limit))).await;
        let took = start.elapsed();
        assert!(matches!(out, Err(Elapsed)));
        assert!(took >= limit, "fired early, after {took:?}");
        assert!(took < limit + Duration::from_secs(2), "fired late, after {took:?}");
        eprintln!("a {limit:?} limit fired after {took:?}");
    }

    /// Many attempts at once, some timing out, most finishing first, on two workers:
    /// each timed-out one gets `Elapsed`, each finished one its value, and the slots are
    /// reused (the next round allocates no new ones).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn slots_are_reused() {
        let round = || async {
            let calls: Vec<_> = (0..2_000u64)
                .map(|i| {
                    tokio::spawn(async move {
                        let hang = i % 100 == 0;
                        let body = async move {
                            if hang {
                                std::future::pending::<()>().await;
                            }
                            tokio::task::yield_now().await;
                            i
                        };
                        (hang, Limited::new(body, limit_nanos(Some(Duration::from_millis(120)))).await)
                    })
                })
                .collect();
            for call in calls {
                match call.await.expect("joined") {
                    (true, out) => assert!(matches!(out, Err(Elapsed))),
                    (false, out) => assert!(out.is_ok()),
                }
            }
        };
        round().await;
        let after_first = allocated();
        assert!(after_first > 0, "the helper thread's slots were used");
        for _ in 0..3 {
            round().await;
        }
        // Slots cached by threads other than these workers, or queued cancelled ones not
        // yet swept, may still be out; a leak would grow by thousands a round.
        assert!(
            allocated() <= after_first + 512,
            "{} slots after the first round, {} after four",
            after_first,
            allocated()
        );
    }

    /// A future dropped while armed (cancelled) gives its slot back and is never woken.
    #[test]
    fn dropped_while_armed() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        runtime.block_on(async {
            let woken = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
            struct CountWake(std::sync::Arc<std::sync::atomic::AtomicUsize>);
            impl std::task::Wake for CountWake {
                fn wake(self: std::sync::Arc<Self>) {
                    self.0.fetch_add(1, Relaxed);
                }
            }
            let waker = Waker::from(std::sync::Arc::new(CountWake(woken.clone())));
            {
                let mut limited =
                    pin!(Limited::new(std::future::pending::<()>(), limit_nanos(Some(Duration::from_millis(100)))));
                assert!(limited.as_mut().poll(&mut Context::from_waker(&waker)).is_pending());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(woken.load(Relaxed), 0);
        });
    }

    /// Under tokio's paused clock the limit is the runtime's: it ends when virtual time
    /// passes it, at once in real time.
    #[tokio::test(start_paused = true)]
    async fn paused_clock_uses_tokio_time() {
        let start = Instant::now();
        let out = Limited::new(std::future::pending::<()>(), limit_nanos(Some(Duration::from_secs(3600)))).await;
        assert!(matches!(out, Err(Elapsed)));
        assert!(start.elapsed() < Duration::from_secs(60));
    }
}
