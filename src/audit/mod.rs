//! The access log for auditors: one event per request on the mTLS listener and per refused
//! client certificate, written by a single writer task that commits in batches and links
//! every event to the one before it (`hash = SHA-256(prev_hash ‖ canonical event)`).
//! A request waits for its event's commit before its response leaves.

mod chain;
mod event;
pub mod export;
mod spool;

pub use chain::{GENESIS, Verdict, chain_hash, verify};
pub use event::{AuditEvent, HANDSHAKE_ROUTE, Outcome, Subject};

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::store::{Store, StoreError};

/// Events per commit; 512 × 21 bound columns stays well under SQLite's 32,766 variables.
const MAX_BATCH: usize = 512;
const QUEUE: usize = 8192;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit store: {0}")]
    Store(#[from] StoreError),
    #[error("the audit writer is not running")]
    WriterGone,
    /// The event could not be committed now; it waits (in the spool) for the database.
    #[error("the audit log cannot be written now: {0}")]
    NotCommitted(String),
    #[error("audit event could not be encoded: {0}")]
    Encode(String),
    #[error(transparent)]
    Spool(#[from] spool::SpoolError),
}

type Reply = oneshot::Sender<Result<i64, String>>;

/// What the writer is asked to do, in order.
enum Job {
    /// Commit this event; answer `seq`, or why it could not be committed.
    Event(Box<AuditEvent>, Option<Reply>),
    /// Answer, once everything queued before it has been tried, what still waits.
    Flush(oneshot::Sender<Backlog>),
}

/// Audit events not yet in the database.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Backlog {
    /// Held in memory only (the spool could not be written): lost if the process stops.
    pub unsaved: usize,
    /// Whether events wait in the spool, safe on disk, for the database.
    pub spooled: bool,
}

impl Backlog {
    pub fn is_empty(self) -> bool {
        self.unsaved == 0 && !self.spooled
    }
}

/// Events that could not be spooled wait in memory, at most this many.
const UNSAVED_MAX: usize = 65_536;
/// How often the writer retries what waits while nothing new arrives.
const RETRY_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often an idle writer looks for spool files other instances left behind.
const SPOOL_SCAN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Handle to the writer task. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Job>,
    /// Why events are not being committed right now (the writer's last round failed), if so.
    failing: Arc<Mutex<Option<String>>>,
}

impl AuditLog {
    /// Starts the writer on the current runtime; each batch continues the chain from the head
    /// stored in the database. Events the database will not take wait in `spool_dir`.
    pub async fn start(
        store: Store,
        written: IntCounter,
        spool_dir: &std::path::Path,
    ) -> Result<Self, AuditError> {
        // Fail at start, not at the first request, if the log cannot be read or the spool
        // cannot be made.
        store.audit_head().await?;
        let spool = spool::Spool::open(spool_dir)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let failing = Arc::new(Mutex::new(None));
        tokio::spawn(writer(store, rx, written, spool, Arc::clone(&failing)));
        Ok(Self { tx, failing })
    }

    /// Why the log is not taking events right now (callers are being answered 503), or
    /// `None` while it is; readiness reports it.
    pub fn failing(&self) -> Option<String> {
        self.failing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records `event` and waits until it is durably committed; returns its `seq`. If it cannot
    /// be committed, the caller must not serve the response; the event is kept, rewritten as
    /// the refusal the caller then sends, and committed when the database is back.
    pub async fn record(&self, event: AuditEvent) -> Result<i64, AuditError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job::Event(Box::new(event), Some(reply)))
            .await
            .map_err(|_| AuditError::WriterGone)?;
        match rx.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(e)) => Err(AuditError::NotCommitted(e)),
            Err(_) => Err(AuditError::WriterGone),
        }
    }

    /// False once the writer task has stopped; readiness reports it.
    pub fn is_running(&self) -> bool {
        !self.tx.is_closed()
    }

    /// Records `event` without waiting, for refusals with no response to hold back
    /// (a failed handshake). Returns false if the queue is full.
    pub fn record_detached(&self, event: AuditEvent) -> bool {
        self.tx.try_send(Job::Event(Box::new(event), None)).is_ok()
    }

    /// Waits until every event recorded before this call has been written (or has failed and
    /// waits for a retry): graceful shutdown calls it after the listeners have drained.
    pub async fn flush(&self) -> Backlog {
        let (done, rx) = oneshot::channel();
        if self.tx.send(Job::Flush(done)).await.is_err() {
            return Backlog::default();
        }
        rx.await.unwrap_or_default()
    }
}

/// An event on its way to the log, with an id of its own: if a commit's outcome is unknown
/// (the connection dropped after COMMIT was sent, or the process stopped before deleting the
/// spool file), the retry skips what did get written.
#[derive(Serialize, Deserialize)]
struct Pending {
    id: String,
    event: AuditEvent,
}

/// Why a commit failed.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The database is away, busy or locked, or failed otherwise: everything waits for it.
    #[error("{0}")]
    Away(String),
    /// The database (or the encoding) refused the data: maybe for one event's sake.
    #[error("{0}")]
    Refused(String),
}

impl Failure {
    fn of(e: &StoreError) -> Self {
        if e.is_refusal_of_data() {
            Self::Refused(e.to_string())
        } else {
            Self::Away(e.to_string())
        }
    }
}

/// Commits `events` as one batch at the end of the chain; returns their `seq`s.
async fn commit(store: &Store, events: &[Pending]) -> Result<Vec<i64>, Failure> {
    // The chain continues from the head stored in the database, read under its write lock:
    // other instances may have appended since this one last wrote.
    let chained = store
        .append_audit_chained(|head| {
            let (mut seq, mut prev) = head.unwrap_or_else(|| (0, GENESIS.to_string()));
            let mut records = Vec::with_capacity(events.len());
            for pending in events {
                seq += 1;
                let mut record = pending.event.clone().into_record(seq, prev)?;
                record.event_id = Some(pending.id.clone());
                prev = record.hash.clone();
                records.push(record);
            }
            Ok::<_, AuditError>(records)
        })
        .await;
    match chained {
        Ok(Ok(records)) => Ok(records.iter().map(|r| r.seq).collect()),
        Ok(Err(e)) => Err(Failure::Refused(e.to_string())),
        Err(e) => Err(Failure::of(&e)),
    }
}

/// What waits for the database, oldest first: the spool file being written back, then events
/// the spool could not take.
struct Waiting {
    spool: spool::Spool,
    /// Whether the spool may hold files (at start it may: left by an earlier run).
    spooled: bool,
    /// The spool file being written back and its events not yet committed.
    loaded: Option<spool::Loaded>,
    from_spool: Vec<Pending>,
    unsaved: Vec<Pending>,
}

impl Waiting {
    fn backlog(&self) -> Backlog {
        Backlog {
            unsaved: self.unsaved.len(),
            spooled: self.spooled || self.loaded.is_some(),
        }
    }

    /// Writes back what waits, oldest first, taking at most one more spool file unless `all`
    /// (so new events are not held up behind a long backlog); stops at the first failure. With
    /// `healthy` (the database just took other events), events it refuses one by one are set
    /// aside.
    async fn commit(
        &mut self,
        store: &Store,
        written: &IntCounter,
        healthy: bool,
        all: bool,
    ) -> Result<(), Failure> {
        if !self.unsaved.is_empty() && self.spool.append(&self.unsaved).is_ok() {
            self.unsaved.clear();
            self.spooled = true;
        }
        let mut took = false;
        loop {
            let spool = &self.spool;
            commit_waiting(store, &mut self.from_spool, written, healthy, spool).await?;
            if let Some(loaded) = self.loaded.take()
                && let Err(e) = self.spool.finish(loaded)
            {
                // Left in place, it would be read again and again: wait for the next scan.
                tracing::error!(error = %e, "audit spool file written but not removed");
                self.spooled = false;
            }
            if !self.spooled || (took && !all) {
                break;
            }
            took = true;
            match self.spool.take_oldest() {
                Ok(Some((loaded, events))) => {
                    tracing::info!(events = events.len(), "writing spooled audit events");
                    self.loaded = Some(loaded);
                    self.from_spool = events;
                }
                Ok(None) => self.spooled = false,
                Err(e) => {
                    tracing::error!(error = %e, "audit spool unreadable; trying again later");
                    self.spooled = false;
                }
            }
        }
        let unsaved = self.unsaved.len();
        commit_waiting(store, &mut self.unsaved, written, healthy, &self.spool).await?;
        if unsaved > 0 {
            tracing::info!(
                events = unsaved,
                "audit events held in memory are now committed"
            );
        }
        Ok(())
    }

    /// Keeps events the database would not take: on disk, or in memory if the spool cannot
    /// be written.
    fn keep(&mut self, events: Vec<Pending>) {
        match self.spool.append(&events) {
            Ok(()) => self.spooled = true,
            Err(e) => {
                tracing::error!(error = %e, events = events.len(), "audit spool not writable; holding the events in memory");
                self.unsaved.extend(events);
                if self.unsaved.len() > UNSAVED_MAX {
                    let lost = self.unsaved.len() - UNSAVED_MAX;
                    tracing::error!(lost, "audit memory buffer full: the oldest events are lost");
                    self.unsaved.drain(..lost);
                }
            }
        }
    }
}

/// Commits `waiting`, oldest first, a batch at a time (a statement has a bounded number of
/// parameters), skipping events an earlier attempt did write; what is committed leaves it.
/// A batch the database refuses (rather than being away) is tried an event at a time: an event
/// it refuses while it takes others (or, with `healthy`, takes new events) would otherwise hold
/// back every event after it for ever, so it goes to a `.rejected` file in the spool for an
/// operator, with an error in the log.
async fn commit_waiting(
    store: &Store,
    waiting: &mut Vec<Pending>,
    written: &IntCounter,
    healthy: bool,
    spool: &spool::Spool,
) -> Result<(), Failure> {
    if waiting.is_empty() {
        return Ok(());
    }
    let mut seen = std::collections::HashSet::new();
    waiting.retain(|p| seen.insert(p.id.clone()));
    let ids: Vec<String> = waiting.iter().map(|p| p.id.clone()).collect();
    let present: std::collections::HashSet<String> = store
        .audit_event_ids_present(&ids)
        .await
        .map_err(|e| Failure::of(&e))?
        .into_iter()
        .collect();
    if !present.is_empty() {
        tracing::warn!(
            events = present.len(),
            "audit events thought lost had been written; not writing them twice"
        );
        waiting.retain(|p| !present.contains(&p.id));
    }
    while !waiting.is_empty() {
        let n = waiting.len().min(MAX_BATCH);
        match commit(store, &waiting[..n]).await {
            Ok(seqs) => written.inc_by(seqs.len() as u64),
            Err(Failure::Refused(e)) => {
                let mut refused = Vec::new();
                let mut took = 0;
                for pending in &waiting[..n] {
                    match commit(store, std::slice::from_ref(pending)).await {
                        Ok(_) => took += 1,
                        Err(Failure::Refused(_)) => refused.push(pending),
                        Err(away) => return Err(away),
                    }
                }
                written.inc_by(took);
                if took == 0 && !healthy {
                    return Err(Failure::Refused(e));
                }
                if !refused.is_empty() {
                    let kept = spool
                        .reject_events(&refused)
                        .map_err(|e| Failure::Away(e.to_string()))?;
                    tracing::error!(events = refused.len(), file = %kept.display(), error = %e, "the database refused audit events it takes others like: set aside");
                }
            }
            Err(away) => return Err(away),
        }
        waiting.drain(..n);
    }
    Ok(())
}

async fn writer(
    store: Store,
    mut rx: mpsc::Receiver<Job>,
    written: IntCounter,
    spool: spool::Spool,
    failing: Arc<Mutex<Option<String>>>,
) {
    let mut waiting = Waiting {
        spool,
        spooled: true,
        loaded: None,
        from_spool: Vec::new(),
        unsaved: Vec::new(),
    };
    let mut next_scan = tokio::time::Instant::now() + SPOOL_SCAN_EVERY;
    let mut behind = false;
    loop {
        let mut jobs = Vec::new();
        // Events waiting: tried again every RETRY_EVERY, or at once while the database takes
        // them (a backlog is written a file per round, new events in between).
        let wait_until = if waiting.backlog().is_empty() {
            next_scan
        } else if behind {
            tokio::time::Instant::now() + RETRY_EVERY
        } else {
            tokio::time::Instant::now()
        };
        match tokio::time::timeout_at(wait_until, rx.recv()).await {
            Ok(Some(job)) => jobs.push(job),
            Ok(None) => break,
            Err(_) => {}
        }
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        // Files other instances left behind are looked for every SPOOL_SCAN_EVERY, busy or
        // not, and whenever a flush wants everything written.
        let flush = jobs.iter().any(|job| matches!(job, Job::Flush(_)));
        if flush || tokio::time::Instant::now() >= next_scan {
            waiting.spooled = true;
            next_scan = tokio::time::Instant::now() + SPOOL_SCAN_EVERY;
        }
        // What waits goes first; new events wait behind it while the database is away.
        let waited = waiting.commit(&store, &written, false, flush).await;
        behind = waited.is_err();
        // Requests are refused while the database is away for what waits, or a commit of new
        // events fails; an event it refuses for its own sake stops nothing else.
        let mut refusing = match &waited {
            Err(Failure::Away(e)) => Some(e.clone()),
            _ => None,
        };
        let mut events = Vec::new();
        let mut replies = Vec::new();
        let mut flushes = Vec::new();
        for job in jobs {
            match job {
                Job::Event(event, reply) => {
                    replies.push(reply);
                    events.push(Pending {
                        id: uuid::Uuid::new_v4().simple().to_string(),
                        event: *event,
                    });
                }
                Job::Flush(done) => flushes.push(done),
            }
        }
        if !events.is_empty() {
            let result = match &waited {
                Err(Failure::Away(e)) => {
                    Err(format!("earlier audit events are still waiting: {e}"))
                }
                _ => commit(&store, &events).await.map_err(|e| e.to_string()),
            };
            match result {
                Ok(seqs) => {
                    written.inc_by(seqs.len() as u64);
                    for (reply, seq) in replies.into_iter().zip(seqs) {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(seq));
                        }
                    }
                    // The database takes events: whatever it refused of the backlog is the
                    // events' fault, not its own.
                    if matches!(waited, Err(Failure::Refused(_))) {
                        behind = waiting.commit(&store, &written, true, flush).await.is_err();
                    }
                }
                Err(e) => {
                    refusing = Some(e.clone());
                    tracing::error!(error = %e, events = events.len(), "audit commit failed; keeping the events for a retry");
                    // A caller told of the failure answers 503: what is kept is that refusal,
                    // and it is kept before the caller hears of it.
                    for (pending, reply) in events.iter_mut().zip(&replies) {
                        if reply.is_some() {
                            pending.event.status = 503;
                            pending.event.outcome = Outcome::Denied;
                            pending.event.reason = Some("audit_unavailable".into());
                        }
                    }
                    waiting.keep(events);
                    behind = true;
                    for reply in replies.into_iter().flatten() {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
        *failing.lock().unwrap_or_else(PoisonError::into_inner) = refusing;
        for done in flushes {
            let _ = done.send(waiting.backlog());
        }
    }
    // Stopping: one last try (which first moves whatever is only in memory to the spool).
    let _ = waiting.commit(&store, &written, false, true).await;
    let backlog = waiting.backlog();
    if backlog.unsaved > 0 {
        tracing::error!(
            events = backlog.unsaved,
            "stopping with audit events neither the database nor the spool would take"
        );
    } else if backlog.spooled {
        tracing::warn!(
            "stopping with audit events in the spool; the next instance to read it writes them"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::chain::check_link;
    use super::*;
    use crate::registry::CertFacts;

    pub(super) fn event(route: &str) -> AuditEvent {
        AuditEvent {
            ts: "2026-11-23T00:00:00.000000Z".into(),
            interaction_id: "i".into(),
            peer_ip: None,
            client_id: Some("c".into()),
            cert: CertFacts::default(),
            method: "GET".into(),
            route: route.into(),
            status: 200,
            outcome: Outcome::Allowed,
            reason: None,
            token_jti: None,
            consent_id: None,
            psu: None,
            cert_previous: None,
            latency_us: 5,
        }
    }

    #[test]
    fn a_changed_field_breaks_the_link() -> Result<(), AuditError> {
        let first = event("/a").into_record(1, GENESIS.into())?;
        let second = event("/b").into_record(2, first.hash.clone())?;
        assert_eq!(check_link(&first, 1, GENESIS)?, None);
        assert_eq!(check_link(&second, 2, &first.hash)?, None);
        let mut tampered = second.clone();
        tampered.status = 403;
        assert!(check_link(&tampered, 2, &first.hash)?.is_some());
        assert!(check_link(&second, 2, GENESIS)?.is_some());
        assert!(check_link(&second, 3, &first.hash)?.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn a_retried_batch_can_tell_which_events_were_written()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store =
            Store::connect(&format!("sqlite://{}", dir.path().join("a.db").display())).await?;
        let pending = |route: &str| Pending {
            id: uuid::Uuid::new_v4().simple().to_string(),
            event: event(route),
        };
        let (written, lost) = (pending("/a"), pending("/b"));
        let seqs = commit(&store, std::slice::from_ref(&written)).await?;
        assert_eq!(seqs, [1]);
        let present = store
            .audit_event_ids_present(&[written.id.clone(), lost.id.clone()])
            .await?;
        assert_eq!(present, std::slice::from_ref(&written.id));
        assert!(
            commit(&store, &[written]).await.is_err(),
            "an id is written once"
        );
        assert_eq!(verify(&store).await?, Verdict::Intact { last_seq: 1 });
        Ok(())
    }

    #[test]
    fn an_event_the_database_refused_is_written_from_the_spool_after_a_crash()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let spool = dir.path().join("spool");
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        };
        let counter = || IntCounter::new("written", "written");

        // The database refuses every audit insert, as one that is away would; then the
        // process dies (its runtime and the writer task with it).
        runtime()?.block_on(async {
            let store = Store::connect(&url).await?;
            let sql = sqlx::SqlitePool::connect(&url).await?;
            sqlx::query(
                "CREATE TRIGGER away BEFORE INSERT ON audit_events \
                 BEGIN SELECT RAISE(ABORT, 'away'); END",
            )
            .execute(&sql)
            .await?;
            let log = AuditLog::start(store, counter()?, &spool).await?;
            assert!(log.record(event("/refused")).await.is_err());
            assert_eq!(
                log.flush().await,
                Backlog {
                    unsaved: 0,
                    spooled: true
                },
                "kept on disk, nothing only in memory"
            );
            Ok::<_, Box<dyn std::error::Error>>(())
        })?;

        // The database takes events again; the next writer on the spool writes the refusal.
        runtime()?.block_on(async {
            let store = Store::connect(&url).await?;
            let sql = sqlx::SqlitePool::connect(&url).await?;
            sqlx::query("DROP TRIGGER away").execute(&sql).await?;
            let written = counter()?;
            let log = AuditLog::start(store.clone(), written.clone(), &spool).await?;
            assert!(log.flush().await.is_empty());
            assert_eq!(written.get(), 1);
            let events = store
                .audit_events(&crate::store::AuditQuery {
                    from: None,
                    to: None,
                    after_seq: 0,
                    limit: 10,
                })
                .await?;
            assert_eq!(events.len(), 1);
            assert_eq!(
                (
                    events[0].route.as_str(),
                    events[0].status,
                    events[0].reason.as_deref()
                ),
                ("/refused", 503, Some("audit_unavailable")),
                "the log says what the caller was told"
            );
            assert_eq!(log.record(event("/next")).await?, 2);
            assert_eq!(verify(&store).await?, Verdict::Intact { last_seq: 2 });
            assert_eq!(
                std::fs::read_dir(&spool)?.count(),
                0,
                "the spool is emptied"
            );
            Ok(())
        })
    }

    #[tokio::test]
    async fn an_event_the_database_refuses_while_it_takes_others_is_set_aside()
    -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}", dir.path().join("a.db").display());
        let store = Store::connect(&url).await?;
        let spool = dir.path().join("spool");
        let sql = sqlx::SqlitePool::connect(&url).await?;
        sqlx::query(
            "CREATE TRIGGER poison BEFORE INSERT ON audit_events WHEN NEW.route = '/poison' \
             BEGIN SELECT RAISE(ABORT, 'poison'); END",
        )
        .execute(&sql)
        .await?;
        let log = AuditLog::start(store.clone(), IntCounter::new("w", "w")?, &spool).await?;
        assert!(log.record(event("/poison")).await.is_err());
        // The event that cannot be written does not hold back the ones after it.
        assert_eq!(log.record(event("/ok")).await?, 1);
        assert!(log.flush().await.is_empty());
        let rejected: Vec<String> = std::fs::read_dir(&spool)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "rejected"))
            .map(std::fs::read_to_string)
            .collect::<Result<_, _>>()?;
        assert_eq!(rejected.len(), 1, "set aside for an operator");
        assert!(rejected[0].contains("/poison"));
        assert_eq!(log.record(event("/after")).await?, 2);
        assert_eq!(verify(&store).await?, Verdict::Intact { last_seq: 2 });
        Ok(())
    }
}
