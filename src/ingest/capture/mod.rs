//! Capture: copies of what the readers receive, for `meterd capture` (`docs/capture.md`).
//!
//! Every reader holds the one [`Tap`]. While no capture runs, a reader's whole cost is one relaxed
//! load of [`Tap::is_on`] per receive batch (a datagram reader's `recvmmsg`, a TCP read). While
//! one runs, the reader copies each datagram into a bounded queue with a non-blocking try-push;
//! what does not fit ([`QUEUE_RECORDS`], [`QUEUE_BYTES`]) is counted as dropped, so ingest never
//! waits for a capture. One capture runs at a time: the queue has one consumer, a
//! [`Subscription`], which [`stream`] turns into the capture file's bytes.

pub mod format;

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;

pub use format::{EndReason, Record, Trailer, Transport};

/// Records a capture's queue holds at most.
pub const QUEUE_RECORDS: usize = 65_536;
/// Payload bytes a capture's queue holds at most.
pub const QUEUE_BYTES: usize = 64 * 1024 * 1024;
/// The longest capture meterd serves.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Bytes [`stream`] gathers before handing a chunk on (it also hands on whatever it holds every
/// [`CHUNK_EVERY`]).
const CHUNK_BYTES: usize = 256 * 1024;
/// See [`CHUNK_BYTES`].
const CHUNK_EVERY: Duration = Duration::from_millis(200);

/// One datagram (or TCP read) offered to the tap.
#[derive(Debug, Clone, Copy)]
pub struct Datagram<'a> {
    /// The bytes as received.
    pub payload: &'a [u8],
    /// The receiver cut it at its size limit.
    pub truncated: bool,
    /// The sender's origin (container id) where known; empty otherwise.
    pub origin: &'a [u8],
}

/// Why a capture cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TapError {
    /// Another capture is running.
    #[error("a capture is already running (one at a time)")]
    Busy,
    /// meterd is shutting down.
    #[error("meterd is shutting down")]
    Closed,
}

/// The running capture's end of the queue, as the tap holds it.
struct Feed {
    id: u64,
    tx: mpsc::Sender<Record>,
    start: Instant,
    shared: Arc<FeedCounts>,
}

/// Counts one capture's feed and consumer share.
#[derive(Debug, Default)]
struct FeedCounts {
    /// Payload bytes in the queue.
    queued_bytes: AtomicUsize,
    /// Datagrams left out because the queue was full.
    dropped: AtomicU64,
}

/// The readers' side of capture: off (one relaxed load per batch) or feeding one
/// [`Subscription`].
#[derive(Debug)]
pub struct Tap {
    on: AtomicBool,
    closed: AtomicBool,
    feed: Mutex<Option<Feed>>,
    next_id: AtomicU64,
    /// Datagrams every capture left out, cumulative (`meterd.capture.dropped`).
    dropped_total: Arc<AtomicU64>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("id", &self.id).finish()
    }
}

impl Tap {
    /// A tap with no capture running, counting what captures leave out into `dropped_total`.
    pub fn new(dropped_total: Arc<AtomicU64>) -> Tap {
        Tap {
            on: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            feed: Mutex::new(None),
            next_id: AtomicU64::new(0),
            dropped_total,
        }
    }

    /// Whether a capture is running: the readers' one check per batch. `Relaxed`: a reader that
    /// sees a capture start or end a batch late only adds or misses that batch.
    #[inline(always)]
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    /// Copies `datagrams` into the running capture's queue, all stamped with one arrival time;
    /// what does not fit is counted as dropped. Never blocks beyond the short lock that guards
    /// the feed (taken once per call). Does nothing when no capture runs.
    pub fn offer<'a>(
        &self,
        transport: Transport,
        datagrams: impl IntoIterator<Item = Datagram<'a>>,
    ) {
        let feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(feed) = feed.as_ref() else {
            return;
        };
        let offset_ns = nanos(feed.start.elapsed());
        let mut dropped = 0u64;
        for d in datagrams {
            let len = d.payload.len();
            let queued = feed.shared.queued_bytes.load(Ordering::Relaxed);
            if queued.saturating_add(len) > QUEUE_BYTES {
                dropped += 1;
                continue;
            }
            // Reserve first: a full queue costs no copy.
            let Ok(permit) = feed.tx.try_reserve() else {
                dropped += 1;
                continue;
            };
            permit.send(Record {
                transport,
                truncated: d.truncated,
                offset_ns,
                origin: d.origin.to_vec(),
                payload: d.payload.to_vec(),
            });
            feed.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        }
        if dropped > 0 {
            feed.shared.dropped.fetch_add(dropped, Ordering::Relaxed);
            self.dropped_total.fetch_add(dropped, Ordering::Relaxed);
        }
    }

    /// Starts a capture: the readers feed the returned subscription until it stops, is dropped,
    /// or the tap is closed.
    pub fn subscribe(self: &Arc<Self>) -> Result<Subscription, TapError> {
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        if self.closed.load(Ordering::Relaxed) {
            return Err(TapError::Closed);
        }
        if feed.is_some() {
            return Err(TapError::Busy);
        }
        let (tx, rx) = mpsc::channel(QUEUE_RECORDS);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, nanos);
        let shared = Arc::new(FeedCounts::default());
        *feed = Some(Feed {
            id,
            tx,
            start,
            shared: shared.clone(),
        });
        self.on.store(true, Ordering::Relaxed);
        Ok(Subscription {
            tap: self.clone(),
            id,
            rx,
            shared,
            start,
            start_unix_ns,
        })
    }

    /// Shutdown: ends the running capture (its consumer reads what is queued, then the end) and
    /// refuses new ones. Called once the readers have drained their sockets.
    pub fn close(&self) {
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        self.closed.store(true, Ordering::Relaxed);
        self.on.store(false, Ordering::Relaxed);
        *feed = None;
    }

    fn detach(&self, id: u64) {
        let mut feed = self.feed.lock().unwrap_or_else(PoisonError::into_inner);
        if feed.as_ref().is_some_and(|f| f.id == id) {
            self.on.store(false, Ordering::Relaxed);
            *feed = None;
        }
    }
}

/// The consumer of a running capture. Dropping it ends the capture.
#[derive(Debug)]
pub struct Subscription {
    tap: Arc<Tap>,
    id: u64,
    rx: mpsc::Receiver<Record>,
    shared: Arc<FeedCounts>,
    start: Instant,
    /// When the capture started, unix nanoseconds.
    pub start_unix_ns: u64,
}

impl Subscription {
    /// The next record; `None` once the capture was stopped (or the tap closed) and the queue
    /// is empty.
    pub async fn recv(&mut self) -> Option<Record> {
        let r = self.rx.recv().await?;
        self.shared
            .queued_bytes
            .fetch_sub(r.payload.len(), Ordering::Relaxed);
        Some(r)
    }

    /// The next queued record, without waiting.
    pub fn try_recv(&mut self) -> Option<Record> {
        let r = self.rx.try_recv().ok()?;
        self.shared
            .queued_bytes
            .fetch_sub(r.payload.len(), Ordering::Relaxed);
        Some(r)
    }

    /// Stops the feed: the readers add nothing more; what is queued can still be received.
    pub fn stop(&self) {
        self.tap.detach(self.id);
    }

    /// Datagrams left out so far (final once stopped).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Nanoseconds since the capture started.
    pub fn elapsed_ns(&self) -> u64 {
        nanos(self.start.elapsed())
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.stop();
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Writes the capture file of `sub` as chunks into `out`: the header, each record as it
/// arrives, and the trailer once `duration` has passed, the next record would make the file
/// exceed `max_bytes`, or the tap closed. Returns the trailer, or `None` if `out` went away
/// (the client left; the capture ends with it).
pub async fn stream(
    mut sub: Subscription,
    duration: Duration,
    max_bytes: u64,
    out: mpsc::Sender<Vec<u8>>,
) -> Option<Trailer> {
    let deadline = tokio::time::Instant::now() + duration.min(MAX_DURATION);
    let mut buf = Vec::with_capacity(CHUNK_BYTES);
    format::encode_header(&mut buf, sub.start_unix_ns);
    let mut written = format::HEADER_LEN as u64;
    let mut records = 0u64;
    let mut reason = None;
    let mut tick = tokio::time::interval(CHUNK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            r = sub.recv() => {
                let Some(r) = r else {
                    reason.get_or_insert(EndReason::Shutdown);
                    break;
                };
                let len = format::record_len(r.origin.len(), r.payload.len()) as u64;
                if written + len + format::TRAILER_LEN as u64 > max_bytes {
                    sub.stop();
                    reason.get_or_insert(EndReason::MaxBytes);
                    break;
                }
                format::encode_record(&mut buf, &r);
                written += len;
                records += 1;
                if buf.len() >= CHUNK_BYTES {
                    out.send(std::mem::take(&mut buf)).await.ok()?;
                }
            }
            () = tokio::time::sleep_until(deadline), if reason.is_none() => {
                // What is queued arrived before the deadline: it is still written.
                sub.stop();
                reason = Some(EndReason::Deadline);
            }
            _ = tick.tick() => {
                if !buf.is_empty() {
                    out.send(std::mem::take(&mut buf)).await.ok()?;
                }
            }
        }
    }
    sub.stop();
    let trailer = Trailer {
        offset_ns: sub.elapsed_ns(),
        records,
        dropped: sub.dropped(),
        reason: reason.unwrap_or(EndReason::Shutdown),
    };
    format::encode_trailer(&mut buf, &trailer);
    out.send(buf).await.ok()?;
    Some(trailer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dg(payload: &[u8]) -> Datagram<'_> {
        Datagram {
            payload,
            truncated: false,
            origin: &[],
        }
    }

    #[test]
    fn off_means_nothing_is_queued_or_counted() {
        let total = Arc::new(AtomicU64::new(0));
        let tap = Tap::new(total.clone());
        assert!(!tap.is_on());
        tap.offer(Transport::Udp, [dg(b"a:1|c")]);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn one_capture_at_a_time_and_stopping_ends_it() {
        let tap = Arc::new(Tap::new(Arc::default()));
        let mut sub = tap.subscribe().unwrap();
        assert!(tap.is_on());
        assert_eq!(tap.subscribe().err(), Some(TapError::Busy));
        tap.offer(Transport::Tcp, [dg(b"a:1|c\n"), dg(b"b:1|c\n")]);
        sub.stop();
        assert!(!tap.is_on());
        tap.offer(Transport::Udp, [dg(b"late:1|c")]);
        assert_eq!(sub.recv().await.unwrap().payload, b"a:1|c\n");
        assert_eq!(sub.recv().await.unwrap().transport, Transport::Tcp);
        assert!(sub.recv().await.is_none());
        drop(sub);
        // The next capture may start.
        let next = tap.subscribe().unwrap();
        drop(next);
        assert!(!tap.is_on());
        tap.close();
        assert_eq!(tap.subscribe().err(), Some(TapError::Closed));
    }

    #[tokio::test]
    async fn a_stale_subscription_does_not_stop_the_next() {
        let tap = Arc::new(Tap::new(Arc::default()));
        let first = tap.subscribe().unwrap();
        first.stop();
        let _second = tap.subscribe().unwrap();
        drop(first);
        assert!(tap.is_on());
    }

    #[tokio::test]
    async fn what_does_not_fit_is_dropped_and_counted() {
        let total = Arc::new(AtomicU64::new(0));
        let tap = Arc::new(Tap::new(total.clone()));
        let sub = tap.subscribe().unwrap();
        let big = vec![b'x'; QUEUE_BYTES / 2 + 1];
        tap.offer(Transport::Udp, [dg(&big), dg(&big), dg(b"small")]);
        assert_eq!(sub.dropped(), 1);
        assert_eq!(total.load(Ordering::Relaxed), 1);
        // The record-count bound.
        let many = (0..QUEUE_RECORDS).map(|_| dg(b"a:1|c"));
        tap.offer(Transport::Udp, many);
        assert_eq!(sub.dropped(), 3);
        assert_eq!(total.load(Ordering::Relaxed), 3);
    }

    async fn collect(mut rx: mpsc::Receiver<Vec<u8>>) -> Vec<u8> {
        let mut all = Vec::new();
        while let Some(c) = rx.recv().await {
            all.extend_from_slice(&c);
        }
        all
    }

    fn decode(bytes: &[u8]) -> (Vec<Record>, Option<Trailer>) {
        let mut d = format::Decoder::new(bytes).unwrap();
        let mut records = Vec::new();
        let mut trailer = None;
        while let Some(item) = d.next_item().unwrap() {
            match item {
                format::Item::Record(r) => records.push(r),
                format::Item::Trailer(t) => trailer = Some(t),
            }
        }
        (records, trailer)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_ends_at_its_deadline_with_the_dropped_count() {
        let tap = Arc::new(Tap::new(Arc::default()));
        let sub = tap.subscribe().unwrap();
        tap.offer(Transport::Udp, [dg(b"a:1|c")]);
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(stream(sub, Duration::from_secs(5), u64::MAX, tx));
        let bytes = collect(rx).await;
        let trailer = task.await.unwrap().unwrap();
        assert_eq!(trailer.reason, EndReason::Deadline);
        assert!(!tap.is_on());
        let (records, t) = decode(&bytes);
        assert_eq!(records.len(), 1);
        assert_eq!(t, Some(trailer));
    }

    #[tokio::test]
    async fn a_stream_stops_before_its_size_bound() {
        let tap = Arc::new(Tap::new(Arc::default()));
        let sub = tap.subscribe().unwrap();
        let payload = [b'x'; 100];
        let one = format::record_len(0, 100);
        let max = (format::HEADER_LEN + 3 * one + format::TRAILER_LEN) as u64;
        tap.offer(Transport::Udp, (0..10).map(|_| dg(&payload)));
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(stream(sub, Duration::from_secs(60), max, tx));
        let bytes = collect(rx).await;
        let trailer = task.await.unwrap().unwrap();
        assert_eq!(trailer.reason, EndReason::MaxBytes);
        assert_eq!(trailer.records, 3);
        assert_eq!(bytes.len() as u64, max);
        assert_eq!(decode(&bytes).0.len(), 3);
    }

    #[tokio::test]
    async fn closing_the_tap_ends_the_stream_and_a_gone_client_ends_the_capture() {
        let tap = Arc::new(Tap::new(Arc::default()));
        let sub = tap.subscribe().unwrap();
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::spawn(stream(sub, Duration::from_secs(60), u64::MAX, tx));
        tap.offer(Transport::Unix, [dg(b"a:1|c")]);
        tap.close();
        let bytes = collect(rx).await;
        assert_eq!(task.await.unwrap().unwrap().reason, EndReason::Shutdown);
        assert_eq!(decode(&bytes).0.len(), 1);

        let tap = Arc::new(Tap::new(Arc::default()));
        let sub = tap.subscribe().unwrap();
        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let task = tokio::spawn(stream(sub, Duration::from_secs(60), u64::MAX, tx));
        tap.offer(Transport::Udp, [dg(&[b'x'; CHUNK_BYTES])]);
        assert_eq!(task.await.unwrap(), None);
        assert!(!tap.is_on());
    }
}
