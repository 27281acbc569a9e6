//! Threads for blocking work that may have to be abandoned.
//!
//! A thread cannot be killed, so a blocking call with a timeout runs here while its
//! caller waits with a deadline; when the deadline passes the caller returns
//! `Timeout` and the work finishes (or not) on its own. Threads are cached: an idle
//! thread waits a minute for more work, then exits.

use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Mutex;
use std::time::Duration;

/// A unit of work for a helper thread.
pub(crate) type Job = Box<dyn FnOnce() + Send + 'static>;

const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Senders of idle threads; each waits on a rendezvous channel, so a send to a thread
/// that has just exited fails and hands the job back instead of losing it.
static IDLE: Mutex<Vec<SyncSender<Job>>> = Mutex::new(Vec::new());

fn pop_idle() -> Option<SyncSender<Job>> {
    IDLE.lock().unwrap_or_else(|p| p.into_inner()).pop()
}

/// Runs `job` on a helper thread. If no thread can be started (the process is out of
/// threads) the job is dropped unrun and a warning is logged; callers see their result
/// channel disconnect and report the attempt as timed out.
pub(crate) fn spawn(mut job: Job) {
    while let Some(idle) = pop_idle() {
        match idle.send(job) {
            Ok(()) => return,
            Err(returned) => job = returned.0,
        }
    }
    let (tx, rx) = sync_channel::<Job>(0);
    let started = std::thread::Builder::new().name("resilience-offload".into()).spawn(move || {
        let mut next = Some(job);
        while let Some(job) = next.take() {
            job();
            IDLE.lock().unwrap_or_else(|p| p.into_inner()).push(tx.clone());
            next = rx.recv_timeout(IDLE_TIMEOUT).ok();
        }
    });
    if let Err(error) = started {
        tracing::warn!(target: "resilience::timeout", %error, "could not start a helper thread; the blocking call was not run");
    }
}
