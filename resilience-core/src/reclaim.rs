//! Deferred reclamation of values replaced at run time (a dependency's pipeline, a call
//! site's per-call settings).
//!
//! Calls read these values on every request and may hold them across `.await` points,
//! on any thread; a reconfiguration replaces them. A replaced value is freed once every
//! call that started before the replacement has ended. Readers take no lock and make no
//! atomic read-modify-write: a call costs two thread-local counter bumps.
//!
//! The scheme is sleepable RCU (Linux's SRCU) with the reader's memory barrier moved to
//! the writer:
//!
//! - A call *enters*: it reads the current parity (0 or 1), bumps its thread's lock
//!   counter for that parity (a plain load and store: only that thread writes it) and
//!   keeps the parity in its [`Guard`]. When the guard is dropped, on whatever thread
//!   the call finished on, that thread's unlock counter for the parity is bumped.
//!   Counters are only ever summed over all threads, so moving between threads is fine.
//! - A writer unlinks a value and [retires](Domain::retire) it. A grace period for the
//!   values retired so far: (1) a heavy barrier, then wait until the parity not in use
//!   has drained (its lock and unlock sums agree); (2) flip the parity, heavy barrier;
//!   (3) wait until the previous parity has drained. Every call that could have read
//!   a retired value has then ended, and the batch is dropped. Step (1) catches calls
//!   that read the parity long ago but bumped their counter only now.
//! - Waiting never blocks the writer: a grace period advances whenever values are
//!   retired, and a helper thread retries every few milliseconds while one is open,
//!   then exits.
//! - The heavy barrier is `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` on Linux, which
//!   makes every running thread of the process execute a full memory barrier, so a
//!   reader only needs a compiler fence between its counter and the pointer it then
//!   loads (liburcu's "memb" flavour). Where that call is unavailable, readers issue a
//!   `SeqCst` fence themselves and the writer a `SeqCst` fence.
//!
//! A call held open for a long time delays the freeing of everything replaced while it
//! runs (not only of what it uses); memory stays bounded by what was replaced meanwhile.

use std::any::Any;
use std::cell::Cell;
use std::sync::atomic::{compiler_fence, AtomicBool, AtomicPtr};
use std::time::Duration;

use crate::sync::{fence, lock, AtomicU64, AtomicUsize, Mutex, Ordering, Ordering::*};

/// One thread's counters (or, for [`Domain::shared`], those of threads whose own record
/// is gone). Aligned so that two threads never share a cache line.
#[repr(align(128))]
pub(crate) struct Record {
    lock: [AtomicU64; 2],
    unlock: [AtomicU64; 2],
}

impl Record {
    fn new() -> Self {
        Self { lock: [AtomicU64::new(0), AtomicU64::new(0)], unlock: [AtomicU64::new(0), AtomicU64::new(0)] }
    }
}

/// Bumps a counter that only the current thread writes.
#[inline(always)]
fn bump(counter: &AtomicU64, order: Ordering) {
    counter.store(counter.load(Relaxed).wrapping_add(1), order);
}

type Garbage = Box<dyn Any + Send>;

#[derive(Default)]
struct Collector {
    /// Retired since the open grace period began (or since the last one ended).
    pending: Vec<Garbage>,
    /// The open grace period: its batch and the step it waits at.
    open: Option<(Vec<Garbage>, Step)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Step {
    /// Waiting for the parity not in use to drain before flipping.
    Quiet,
    /// Flipped; waiting for this parity to drain.
    Drain(usize),
}

/// A reclamation domain: the parity, every thread's counters and the retired values.
pub(crate) struct Domain {
    parity: AtomicUsize,
    /// Every record handed out; records of exited threads are reused, never freed, so
    /// this holds at most as many as threads ever ran at once.
    records: Mutex<Vec<&'static Record>>,
    free: Mutex<Vec<&'static Record>>,
    /// Counters of readers whose thread has no record (its thread-locals are being torn
    /// down): bumped with read-modify-writes, since any thread may write them.
    shared: Record,
    collector: Mutex<Collector>,
}

impl Domain {
    #[cfg(not(resilience_loom))]
    const fn new() -> Self {
        Self {
            parity: AtomicUsize::new(0),
            records: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            shared: Record {
                lock: [AtomicU64::new(0), AtomicU64::new(0)],
                unlock: [AtomicU64::new(0), AtomicU64::new(0)],
            },
            collector: Mutex::new(Collector { pending: Vec::new(), open: None }),
        }
    }

    #[cfg(resilience_loom)]
    fn new() -> Self {
        Self {
            parity: AtomicUsize::new(0),
            records: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            shared: Record::new(),
            collector: Mutex::new(Collector::default()),
        }
    }

    /// A record for a new thread: a free one, or a new one (kept for the process).
    fn register(&self) -> &'static Record {
        if let Some(record) = lock(&self.free).pop() {
            return record;
        }
        let record: &'static Record = Box::leak(Box::new(Record::new()));
        lock(&self.records).push(record);
        record
    }

    /// Hands the record of an exiting thread to the next thread (its counts stay summed).
    fn unregister(&self, record: &'static Record) {
        lock(&self.free).push(record);
    }

    /// Enters a read section on the thread owning `record` (`None`: a thread without
    /// one); the returned parity must be passed to [`unlock`](Self::unlock).
    #[inline(always)]
    fn lock(&self, record: Option<&Record>) -> usize {
        let parity = self.parity.load(Relaxed) & 1;
        match record {
            Some(record) => bump(&record.lock[parity], Relaxed),
            None => {
                self.shared.lock[parity].fetch_add(1, Relaxed);
            }
        }
        reader_barrier();
        parity
    }

    /// Leaves a read section entered with `parity`, on the thread owning `record`.
    #[inline(always)]
    fn unlock(&self, record: Option<&Record>, parity: usize) {
        // Release: whatever the section read happens before the writer sees it ended.
        match record {
            Some(record) => bump(&record.unlock[parity], Release),
            None => {
                self.shared.unlock[parity].fetch_add(1, Release);
            }
        }
    }

    /// Whether every read section entered with `parity` has ended.
    fn drained(&self, parity: usize) -> bool {
        let records = lock(&self.records);
        // Unlocks first: a counted unlock's lock happened before it, so it is counted too.
        let unlocked = records
            .iter()
            .copied()
            .chain(std::iter::once(&self.shared))
            .fold(0u64, |sum, r| sum.wrapping_add(r.unlock[parity].load(Acquire)));
        fence(SeqCst);
        let locked = records
            .iter()
            .copied()
            .chain(std::iter::once(&self.shared))
            .fold(0u64, |sum, r| sum.wrapping_add(r.lock[parity].load(Acquire)));
        locked == unlocked
    }

    /// Queues `value`, already unlinked from where readers find it, to be dropped once
    /// no read section that may have seen it is open; returns whether anything is
    /// still waiting.
    pub(crate) fn retire(&self, value: Garbage) -> bool {
        lock(&self.collector).pending.push(value);
        self.advance()
    }

    /// Moves the grace period on as far as it can go now, dropping the batches whose
    /// readers are gone; returns whether anything is still waiting.
    pub(crate) fn advance(&self) -> bool {
        let mut freed = Vec::new();
        let waiting = {
            let mut collector = lock(&self.collector);
            loop {
                let step = collector.open.as_ref().map(|(_, step)| *step);
                match step {
                    None if collector.pending.is_empty() => break false,
                    None => {
                        let batch = std::mem::take(&mut collector.pending);
                        collector.open = Some((batch, Step::Quiet));
                    }
                    Some(Step::Quiet) => {
                        heavy_barrier();
                        let current = self.parity.load(Relaxed) & 1;
                        if !self.drained(current ^ 1) {
                            break true;
                        }
                        self.parity.store(current ^ 1, Relaxed);
                        heavy_barrier();
                        if let Some((_, step)) = collector.open.as_mut() {
                            *step = Step::Drain(current);
                        }
                    }
                    Some(Step::Drain(parity)) => {
                        if !self.drained(parity) {
                            break true;
                        }
                        if let Some((batch, _)) = collector.open.take() {
                            freed.push(batch);
                        }
                    }
                }
            }
        };
        // Dropped outside the lock: a value's drop may retire more values.
        drop(freed);
        waiting
    }
}

#[cfg(not(resilience_loom))]
static GLOBAL: Domain = Domain::new();

#[cfg(resilience_loom)]
static GLOBAL: std::sync::LazyLock<Domain> = std::sync::LazyLock::new(Domain::new);

/// Set when the process cannot issue the heavy barrier: readers then fence themselves.
static READERS_FENCE: AtomicBool = AtomicBool::new(cfg!(any(resilience_loom, not(target_os = "linux"))));

#[inline(always)]
fn reader_barrier() {
    if READERS_FENCE.load(Relaxed) {
        fence(SeqCst);
    } else {
        compiler_fence(SeqCst);
    }
}

#[cfg(all(target_os = "linux", not(resilience_loom)))]
mod membarrier {
    const CMD_PRIVATE_EXPEDITED: libc::c_long = 1 << 3;
    const CMD_REGISTER_PRIVATE_EXPEDITED: libc::c_long = 1 << 4;

    fn call(cmd: libc::c_long) -> bool {
        // SAFETY: membarrier takes two integer arguments and touches no memory of ours.
        #[allow(unsafe_code)]
        let result = unsafe { libc::syscall(libc::SYS_membarrier, cmd, 0 as libc::c_long, 0 as libc::c_long) };
        result == 0
    }

    /// Registers the process for expedited barriers; false when the kernel refuses.
    pub(super) fn register() -> bool {
        call(CMD_REGISTER_PRIVATE_EXPEDITED)
    }

    /// Every running thread of the process executes a full memory barrier.
    pub(super) fn barrier() -> bool {
        call(CMD_PRIVATE_EXPEDITED)
    }
}

/// Decides, once and before any reader's first section, whether readers must fence.
fn init_barrier() {
    #[cfg(all(target_os = "linux", not(resilience_loom)))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            if !membarrier::register() {
                tracing::debug!(target: "resilience::reclaim", "membarrier unavailable; read sections fence");
                READERS_FENCE.store(true, Relaxed);
            }
        });
    }
}

/// A full barrier on every thread of the process (or, where readers fence themselves,
/// on this one).
fn heavy_barrier() {
    fence(SeqCst);
    #[cfg(all(target_os = "linux", not(resilience_loom)))]
    if !READERS_FENCE.load(Relaxed) && !membarrier::barrier() {
        // Registered but refused now: cannot happen on a kernel that accepted the
        // registration. Readers fence from now on; this grace period stays correct
        // because a drained check waits for the sections that were open.
        READERS_FENCE.store(true, Relaxed);
    }
    fence(SeqCst);
}

/// What a thread knows of its record.
#[derive(Clone, Copy)]
enum Local {
    /// Not asked for one yet.
    Unset,
    Record(&'static Record),
    /// Its thread-locals are being torn down: use the shared counters.
    Gone,
}

thread_local! {
    static LOCAL: Cell<Local> = const { Cell::new(Local::Unset) };
    static RETURN: ReturnRecord = const { ReturnRecord };
}

/// Returns the thread's record to the domain when the thread exits.
struct ReturnRecord;

impl Drop for ReturnRecord {
    fn drop(&mut self) {
        if let Ok(Local::Record(record)) = LOCAL.try_with(|l| l.replace(Local::Gone)) {
            GLOBAL.unregister(record);
        }
    }
}

#[inline(always)]
fn local_record() -> Option<&'static Record> {
    match LOCAL.try_with(Cell::get) {
        Ok(Local::Record(record)) => Some(record),
        Ok(Local::Unset) => first_record(),
        _ => None,
    }
}

#[cold]
fn first_record() -> Option<&'static Record> {
    init_barrier();
    // Registering the return of the record must work, or the record would never be
    // handed back; then this thread uses the shared counters.
    if RETURN.try_with(|_| ()).is_err() {
        let _ = LOCAL.try_with(|l| l.set(Local::Gone));
        return None;
    }
    let record = GLOBAL.register();
    match LOCAL.try_with(|l| l.set(Local::Record(record))) {
        Ok(()) => Some(record),
        Err(_) => {
            GLOBAL.unregister(record);
            None
        }
    }
}

/// An open read section of the process-wide domain: values loaded from an [`RcuCell`]
/// under it stay valid until it is dropped. It may move to another thread and be
/// dropped there. Holding one for long delays the freeing of replaced values.
#[must_use = "a guard protects values only while it is held"]
pub(crate) struct Guard {
    parity: Parity,
}

#[derive(Clone, Copy)]
#[repr(u8)]
enum Parity {
    Even = 0,
    Odd = 1,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("parity", &(self.parity as u8)).finish()
    }
}

/// Opens a read section.
#[inline(always)]
pub(crate) fn enter() -> Guard {
    let parity = GLOBAL.lock(local_record());
    Guard { parity: if parity == 0 { Parity::Even } else { Parity::Odd } }
}

impl Drop for Guard {
    #[inline(always)]
    fn drop(&mut self) {
        GLOBAL.unlock(local_record(), self.parity as usize);
    }
}

/// Retires `value` in the process-wide domain (see [`Domain::retire`]) and makes sure
/// the helper thread finishes the job if a call still holds it up.
pub(crate) fn retire<T: Send + 'static>(value: Box<T>) {
    if GLOBAL.retire(value) {
        start_helper();
    }
}

/// Whether the helper thread is running (or being started).
static HELPER: AtomicBool = AtomicBool::new(false);

fn start_helper() {
    if HELPER.swap(true, AcqRel) {
        return;
    }
    let started = std::thread::Builder::new().name("resilience-reclaim".into()).spawn(|| {
        let mut pause = Duration::from_millis(1);
        loop {
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
            if !GLOBAL.advance() {
                HELPER.store(false, Release);
                // A value retired between the check and the store found the flag set
                // and left the job to this thread: look once more.
                if GLOBAL.advance() && !HELPER.swap(true, AcqRel) {
                    continue;
                }
                return;
            }
        }
    });
    if let Err(error) = started {
        HELPER.store(false, Release);
        tracing::warn!(target: "resilience::reclaim", %error, "could not start the reclamation thread; replaced values are freed at the next reconfiguration");
    }
}

/// `value`, loaded under a guard, as `'static`.
///
/// # Safety
///
/// The result must not be used after the guard `value` was loaded under is dropped.
#[allow(unsafe_code)]
#[inline(always)]
pub(crate) unsafe fn extend<T>(value: &T) -> &'static T {
    // SAFETY: the caller keeps the guard, which keeps the value alive, for every use.
    unsafe { &*(value as *const T) }
}

/// A pointer to a `T` that readers load under a [`Guard`] and writers replace; a
/// replaced value is dropped once no read section that may have seen it is open.
pub(crate) struct RcuCell<T: Send + 'static> {
    current: AtomicPtr<T>,
}

impl<T: Send + 'static> RcuCell<T> {
    pub(crate) fn new(value: T) -> Self {
        Self { current: AtomicPtr::new(Box::into_raw(Box::new(value))) }
    }

    /// A cell holding nothing yet (usable in a `static`).
    pub(crate) const fn empty() -> Self {
        Self { current: AtomicPtr::new(std::ptr::null_mut()) }
    }

    /// The current value, valid while `guard` is held.
    #[inline(always)]
    #[allow(unsafe_code)]
    pub(crate) fn load<'g>(&self, _guard: &'g Guard) -> Option<&'g T> {
        // SAFETY: `current` holds null or a pointer from `Box::into_raw`. A value is only
        // freed through the domain, after every read section that could have loaded it
        // has ended, and `guard` is such a section, open for all of `'g`.
        unsafe { self.current.load(Acquire).as_ref() }
    }

    /// The current value of a cell made with [`new`](Self::new).
    #[inline(always)]
    pub(crate) fn get<'g>(&self, guard: &'g Guard) -> &'g T {
        match self.load(guard) {
            Some(value) => value,
            None => unreachable!("an RcuCell made with `new` always holds a value"),
        }
    }

    /// The current value's address (null for an empty cell), for a holder that knows the
    /// cell is not replaced while it uses the value.
    #[inline(always)]
    pub(crate) fn current_ptr(&self) -> *const T {
        self.current.load(Acquire)
    }

    /// Publishes `value`; the previous one is dropped once its readers are gone.
    pub(crate) fn replace(&self, value: T) {
        let old = self.current.swap(Box::into_raw(Box::new(value)), AcqRel);
        retire_raw(old);
    }
}

#[allow(unsafe_code)]
fn retire_raw<T: Send + 'static>(old: *mut T) {
    if !old.is_null() {
        // SAFETY: `old` came from `Box::into_raw` and was just unlinked from its cell, so
        // this is its only owner; readers that still see it are waited for by `retire`.
        retire(unsafe { Box::from_raw(old) });
    }
}

impl<T: Send + 'static> Drop for RcuCell<T> {
    fn drop(&mut self) {
        retire_raw(*self.current.get_mut());
    }
}

impl<T: Send + std::fmt::Debug + 'static> std::fmt::Debug for RcuCell<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let guard = enter();
        f.debug_tuple("RcuCell").field(&self.load(&guard)).finish()
    }
}

#[cfg(all(test, not(resilience_loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Tracked(Arc<std::sync::atomic::AtomicUsize>);
    impl Drop for Tracked {
        fn drop(&mut self) {
            self.0.fetch_add(1, SeqCst);
        }
    }

    #[test]
    fn a_replaced_value_outlives_the_sections_that_saw_it() {
        let drops = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cell = RcuCell::new(Tracked(Arc::clone(&drops)));
        let guard = enter();
        let seen = cell.get(&guard);
        cell.replace(Tracked(Arc::clone(&drops)));
        for _ in 0..10 {
            GLOBAL.advance();
        }
        assert_eq!(drops.load(SeqCst), 0, "freed under an open section");
        assert!(Arc::ptr_eq(&seen.0, &drops));
        // The guard may end on another thread.
        std::thread::spawn(move || drop(guard)).join().expect("joined");
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while drops.load(SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "never freed");
            GLOBAL.advance();
            std::thread::yield_now();
        }
        drop(cell);
        while drops.load(SeqCst) < 2 {
            assert!(std::time::Instant::now() < deadline, "the last value was never freed");
            GLOBAL.advance();
            std::thread::yield_now();
        }
    }

    #[test]
    fn readers_on_many_threads_never_see_freed_values() {
        // Each value checks on drop that it was not dropped twice and is read only
        // while alive (the canary is cleared on drop).
        struct Value {
            canary: AtomicU64,
        }
        impl Drop for Value {
            fn drop(&mut self) {
                assert_eq!(self.canary.swap(0, SeqCst), 0xfeed, "dropped twice");
            }
        }
        let cell: &'static RcuCell<Value> = Box::leak(Box::new(RcuCell::new(Value { canary: AtomicU64::new(0xfeed) })));
        let stop = Arc::new(AtomicBool::new(false));
        let reading = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (stop, reading) = (Arc::clone(&stop), Arc::clone(&reading));
                std::thread::spawn(move || {
                    let mut reads = 0u64;
                    loop {
                        let guard = enter();
                        let value = cell.get(&guard);
                        for _ in 0..16 {
                            assert_eq!(value.canary.load(Relaxed), 0xfeed, "read a freed value");
                        }
                        drop(guard);
                        reads += 1;
                        if reads == 1 {
                            reading.fetch_add(1, SeqCst);
                        }
                        if stop.load(Relaxed) {
                            break reads;
                        }
                    }
                })
            })
            .collect();
        // The replacements overlap the reads however the threads are scheduled.
        while reading.load(SeqCst) < 3 {
            std::thread::yield_now();
        }
        for _ in 0..2_000 {
            cell.replace(Value { canary: AtomicU64::new(0xfeed) });
        }
        stop.store(true, SeqCst);
        let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
        assert!(reads > 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while GLOBAL.advance() {
            assert!(std::time::Instant::now() < deadline, "garbage left with no reader");
            std::thread::yield_now();
        }
    }
}

#[cfg(all(test, resilience_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    /// A reader that loads the value while a writer replaces it and runs a grace
    /// period: the old value is never dropped while the reader may use it.
    #[test]
    fn loom_grace_period_waits_for_readers() {
        loom::model(|| {
            let domain = Arc::new(Domain::new());
            let reader_record: &'static Record = domain.register();
            let value = Arc::new(loom::sync::atomic::AtomicUsize::new(1)); // 1 = alive, 0 = freed
            let published = Arc::new(loom::sync::atomic::AtomicBool::new(true));
            let reader = {
                let domain = Arc::clone(&domain);
                let value = Arc::clone(&value);
                let published = Arc::clone(&published);
                thread::spawn(move || {
                    let parity = domain.lock(Some(reader_record));
                    if published.load(Acquire) {
                        assert_eq!(value.load(Relaxed), 1, "used after free");
                    }
                    domain.unlock(Some(reader_record), parity);
                })
            };
            // The writer unlinks the value, then frees it after a grace period.
            published.store(false, Release);
            struct Free(Arc<loom::sync::atomic::AtomicUsize>);
            impl Drop for Free {
                fn drop(&mut self) {
                    self.0.store(0, Relaxed);
                }
            }
            let mut waiting = domain.retire(Box::new(Free(Arc::clone(&value))));
            while waiting {
                thread::yield_now();
                waiting = domain.advance();
            }
            reader.join().expect("reader");
        });
    }

    /// Two values replaced one after the other (two grace periods, the parity flipping
    /// and flipping back) while a reader reads twice, its second section on a record of
    /// its own and its first ended after the second began: neither value is dropped while
    /// a section that may have loaded it is open.
    #[test]
    fn loom_two_grace_periods_and_overlapping_sections() {
        use loom::sync::atomic::AtomicUsize;
        let mut builder = loom::model::Builder::new();
        builder.preemption_bound = Some(2);
        builder.check(|| {
            let domain = Arc::new(Domain::new());
            let (first_record, second_record): (&'static Record, &'static Record) =
                (domain.register(), domain.register());
            // 1 = alive, 0 = freed; `current` says which of the two is published.
            let values = Arc::new([AtomicUsize::new(1), AtomicUsize::new(1)]);
            let current = Arc::new(AtomicUsize::new(0));
            let reader = {
                let (domain, values, current) = (Arc::clone(&domain), Arc::clone(&values), Arc::clone(&current));
                thread::spawn(move || {
                    let outer = domain.lock(Some(first_record));
                    let seen = current.load(Acquire);
                    assert_eq!(values[seen].load(Relaxed), 1, "first section: used after free");
                    let inner = domain.lock(Some(second_record));
                    domain.unlock(Some(first_record), outer);
                    let seen = current.load(Acquire);
                    assert_eq!(values[seen].load(Relaxed), 1, "second section: used after free");
                    domain.unlock(Some(second_record), inner);
                })
            };
            struct Free(Arc<[AtomicUsize; 2]>, usize);
            impl Drop for Free {
                fn drop(&mut self) {
                    self.0[self.1].store(0, Relaxed);
                }
            }
            // Replace value 0 by value 1 (value 1 is never replaced here).
            current.store(1, Release);
            let mut waiting = domain.retire(Box::new(Free(Arc::clone(&values), 0)));
            while waiting {
                thread::yield_now();
                waiting = domain.advance();
            }
            // A second grace period over nothing new still terminates.
            let mut waiting = domain.retire(Box::new(()));
            while waiting {
                thread::yield_now();
                waiting = domain.advance();
            }
            reader.join().expect("reader");
        });
    }
}
