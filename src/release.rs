//! The releaser: one thread, at the datagram readers' priority, that frees what a flush leaves
//! behind and hands free heap back to the kernel (a leaf: std and [`crate::sys`] only).
//!
//! The readers allocate every series of an interval (its key, its histogram samples) from their
//! own glibc arena, and whoever frees that memory later takes the arena's lock. Freed on a
//! runtime thread, which runs ten nice steps below the readers ([`crate::sys::BACKGROUND_NICE`]),
//! a reader that needed its arena meanwhile waited for a thread the kernel gave a tenth of the
//! core, for as long as the encoders beside it kept the core busy; `malloc_trim`, which holds
//! each arena's lock while it returns the arena's free pages, made the longest of those waits.
//! Both show in the reader's stacks during `benches/soak.sh` (perf, `sched_switch` with call
//! graphs): it blocks in `__lll_lock_wait_private` under `malloc` and is woken by a runtime
//! thread's `free` or `malloc_trim`. Here the same work runs at the readers' own priority: a
//! reader still waits while its arena is being freed or trimmed, but only for the work itself.
//! The thread does little (dropping, one `malloc_trim` per flush), so it takes little of the
//! readers' core.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::thread::JoinHandle;

/// Jobs waiting for the thread before [`Releaser::drop_later`] frees on the caller's thread
/// instead (and [`Releaser::trim`] skips: a trim waiting already returns the same pages).
const QUEUE: usize = 16;

/// What the thread does.
enum Job {
    /// Drop this.
    Drop(Box<dyn Send>),
    /// Return free heap to the kernel ([`crate::sys::release_free_memory`]).
    Trim,
}

/// A handle to the releaser thread; clones share it. The thread ends when the last handle is
/// dropped, after the jobs already queued.
#[derive(Clone, Debug)]
pub struct Releaser {
    /// `None`: everything is done on the calling thread ([`Releaser::inline`]).
    tx: Option<SyncSender<Job>>,
}

impl Releaser {
    /// Starts the thread. It keeps the priority of the thread that starts it: start it where the
    /// readers are started, before anything lowers that thread.
    pub fn start() -> std::io::Result<(Releaser, JoinHandle<()>)> {
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("meterd-release".to_owned())
            .spawn(move || run(rx))?;
        Ok((Releaser { tx: Some(tx) }, thread))
    }

    /// A releaser without a thread: drops and trims on the calling thread (tests, tools).
    pub fn inline() -> Releaser {
        Releaser { tx: None }
    }

    /// Drops `value` on the releaser thread; on the calling thread if its queue is full.
    pub fn drop_later<T: Send + 'static>(&self, value: T) {
        let Some(tx) = &self.tx else {
            drop(value);
            return;
        };
        match tx.try_send(Job::Drop(Box::new(value))) {
            Ok(()) => {}
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => drop(job),
        }
    }

    /// Returns the heap's free pages to the kernel on the releaser thread (skipped while its
    /// queue is full: the trims waiting there return them).
    pub fn trim(&self) {
        match &self.tx {
            Some(tx) => match tx.try_send(Job::Trim) {
                Ok(()) | Err(TrySendError::Full(_)) => {}
                Err(TrySendError::Disconnected(_)) => crate::sys::release_free_memory(),
            },
            None => crate::sys::release_free_memory(),
        }
    }
}

/// The thread: runs jobs in order until every handle is gone.
fn run(rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        match job {
            Job::Drop(value) => drop(value),
            Job::Trim => crate::sys::release_free_memory(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    /// Sets its flag when dropped, and tells on which thread.
    struct Flag(Arc<AtomicBool>, Arc<std::sync::Mutex<Option<String>>>);

    impl Drop for Flag {
        fn drop(&mut self) {
            let name = std::thread::current().name().map(str::to_owned);
            *self
                .1
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = name;
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn drops_on_its_own_thread_and_ends_with_the_last_handle() {
        let (releaser, thread) = Releaser::start().expect("thread started");
        let dropped = Arc::new(AtomicBool::new(false));
        let on = Arc::new(std::sync::Mutex::new(None));
        releaser.drop_later(Flag(dropped.clone(), on.clone()));
        releaser.trim();
        let copy = releaser.clone();
        drop(releaser);
        drop(copy);
        thread
            .join()
            .expect("the thread ends when every handle is gone");
        assert!(dropped.load(Ordering::SeqCst));
        let name = on
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        assert_eq!(name.as_deref(), Some("meterd-release"));
    }

    #[test]
    fn inline_drops_at_once() {
        let dropped = Arc::new(AtomicBool::new(false));
        let on = Arc::new(std::sync::Mutex::new(None));
        Releaser::inline().drop_later(Flag(dropped.clone(), on));
        assert!(dropped.load(Ordering::SeqCst));
        Releaser::inline().trim();
    }
}
