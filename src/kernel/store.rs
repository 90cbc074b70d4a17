//! The durable store: one sled database with one tree per kind of record
//! ([`Trees`]), and group commit. Writers apply their change (in one transaction where
//! several trees change) and then await [`Store::durable`], which resolves
//! once a flush that started after the change has completed. One flush
//! serves every writer that queued while the previous one ran.
//!
//! A flush error is fatal: the waiters get EIO and the daemon exits, to be
//! restarted and recover from what is on disk.
//!
//! When commits run back to back (several writers per group), the
//! committer holds a group open a little longer (up to 0.8 ms) before it
//! flushes, so that groups are larger and flushes fewer: every flush costs
//! sled a buffer write by one of its IO threads, a sync_file_range and our
//! fdatasync. A lone writer is flushed at once.
//!
//! The lengths of the inboxes and stdin queues are counted in memory
//! ([`QueueLengths`]), rebuilt from the trees when the store opens.

use super::pcb::{Pcb, Pid};
use serde::{Serialize, de::DeserializeOwned};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

const SCHEMA_VERSION: u64 = 1;

/// Longest a group is held open for more writers (when the previous group
/// had several); a lone writer never waits.
const MAX_GATHER: Duration = Duration::from_micros(800);
/// Groups are held open only after a group of at least this many writers
/// (two or three writers meeting by chance are not a sign of load).
const MIN_GATHER_GROUP: usize = 4;
/// A group is not held open for more writers than this.
const MAX_GATHER_WRITERS: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    #[error("database file: {0}")]
    Io(#[from] std::io::Error),
    #[error("encoding: {0}")]
    Json(#[from] serde_json::Error),
    #[error("flush failed: {0}")]
    Flush(#[from] FlushError),
    #[error("database schema version {found} is not supported (expected {SCHEMA_VERSION})")]
    Schema { found: u64 },
    #[error("transaction: {0}")]
    Transaction(String),
}

/// Why a group commit failed. Every writer of the group gets a copy.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FlushError {
    #[error(transparent)]
    Database(sled::Error),
    #[error("fdatasync of the database: {0}")]
    Sync(Arc<std::io::Error>),
    #[error("committer poisoned")]
    Poisoned,
    #[error("committer stopped")]
    Stopped,
}

/// A store error as a syscall sees it: EIO, with the error's own message.
impl From<StoreError> for crate::abi::SysError {
    fn from(e: StoreError) -> Self {
        crate::abi::SysError::io(e.to_string())
    }
}

/// Keys are big-endian so that sled's order is numeric order.
pub fn key(pid: Pid, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&pid.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The first key of `pid` after sequence `after_seq` (all of them: None).
fn first_key_after(pid: Pid, after_seq: Option<u64>) -> [u8; 16] {
    key(pid, after_seq.map_or(0, |s| s.saturating_add(1)))
}

pub fn pid_key(pid: Pid) -> [u8; 8] {
    pid.to_be_bytes()
}

/// Decodes the sequence half of a 16-byte key.
pub fn seq_of(k: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    if k.len() == 16 {
        b.copy_from_slice(&k[8..]);
    }
    u64::from_be_bytes(b)
}

/// The trees.
#[derive(Clone)]
pub struct Trees {
    pub pcb: sled::Tree,
    pub journal: sled::Tree,
    pub inbox: sled::Tree,
    pub stdin: sled::Tree,
    pub log: sled::Tree,
    pub meta: sled::Tree,
    /// (collection, key) → stored memory with its vector.
    pub memory: sled::Tree,
    /// (due ms, timer id) → timer.
    pub timers: sled::Tree,
    /// path → registration.
    pub webhooks: sled::Tree,
    /// (pid, seq) → an LLM agent's call with its full outcome.
    pub turns: sled::Tree,
    /// (0, seq) → audit entry.
    pub audit: sled::Tree,
}

type Waiter = oneshot::Sender<Result<(), FlushError>>;

struct Queue {
    waiting: Vec<Waiter>,
    /// A waiter that must not wait for a group to fill (LLM_INFER) is
    /// queued: the group is flushed as soon as the current flush ends.
    urgent: bool,
    /// How many queued writers wake the committer: 1 while it sleeps, the
    /// group size it is gathering for while it holds a group open, and
    /// `usize::MAX` while it flushes (new writers then wait for the next
    /// round and need not wake it).
    wake_at: usize,
}

struct Committer {
    queue: Mutex<Queue>,
    wake: Condvar,
    /// Flushes done and their total time in µs (for metrics).
    flushes: AtomicU64,
    flush_us: AtomicU64,
}

impl Committer {
    fn lock(&self) -> Result<MutexGuard<'_, Queue>, StoreError> {
        self.queue
            .lock()
            .map_err(|_| StoreError::Flush(FlushError::Poisoned))
    }
}

/// Entries (and their stored bytes) waiting in each agent's inbox or stdin
/// queue, kept in memory so that the caps on queued messages and bytes cost
/// no scan of the tree. Rebuilt from the tree when the store opens; changed
/// by whoever inserts or removes.
#[derive(Default)]
pub struct QueueLengths {
    map: Mutex<HashMap<Pid, Queued>>,
}

/// What one agent has queued.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    pub entries: u64,
    pub bytes: u64,
}

impl QueueLengths {
    fn lock(&self) -> MutexGuard<'_, HashMap<Pid, Queued>> {
        // Plain counters: nothing is left half-done by a panic.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn rebuild(tree: &sled::Tree) -> Result<QueueLengths, StoreError> {
        let mut map: HashMap<Pid, Queued> = HashMap::new();
        for kv in tree.iter() {
            let (k, v) = kv?;
            if k.len() == 16 {
                let mut b = [0u8; 8];
                b.copy_from_slice(&k[..8]);
                let q = map.entry(u64::from_be_bytes(b)).or_default();
                q.entries += 1;
                q.bytes += v.len() as u64;
            }
        }
        Ok(QueueLengths {
            map: Mutex::new(map),
        })
    }

    /// Entries queued for `pid`.
    pub fn get(&self, pid: Pid) -> u64 {
        self.lock().get(&pid).map_or(0, |q| q.entries)
    }

    /// Bytes queued for `pid`.
    pub fn bytes(&self, pid: Pid) -> u64 {
        self.lock().get(&pid).map_or(0, |q| q.bytes)
    }

    /// Counts one entry about to be inserted for `pid`, unless `cap` are
    /// queued already. Call [`QueueLengths::remove`] if the insert fails.
    pub fn reserve(&self, pid: Pid, cap: u64) -> bool {
        let mut m = self.lock();
        let n = m.entry(pid).or_default();
        if n.entries >= cap {
            return false;
        }
        n.entries += 1;
        true
    }

    /// Charges `bytes` about to be inserted for `pid`, unless that would
    /// take its queue over `cap`; on refusal answers the bytes queued.
    /// Call [`QueueLengths::remove`] if the insert fails.
    pub fn charge(&self, pid: Pid, bytes: u64, cap: u64) -> Result<(), u64> {
        let mut m = self.lock();
        let n = m.entry(pid).or_default();
        if n.bytes.saturating_add(bytes) > cap {
            return Err(n.bytes);
        }
        n.bytes += bytes;
        Ok(())
    }

    /// Counts `n` entries inserted for `pid` (without a cap).
    pub fn add(&self, pid: Pid, n: u64) {
        self.lock().entry(pid).or_default().entries += n;
    }

    /// Counts `n` entries of `bytes` in all removed for `pid`.
    pub fn remove(&self, pid: Pid, n: u64, bytes: u64) {
        let mut m = self.lock();
        if let Some(c) = m.get_mut(&pid) {
            c.entries = c.entries.saturating_sub(n);
            c.bytes = c.bytes.saturating_sub(bytes);
            if c.entries == 0 {
                m.remove(&pid);
            }
        }
    }
}

/// The lengths of the per-agent queues.
pub struct Queues {
    pub inbox: QueueLengths,
    pub stdin: QueueLengths,
}

/// Handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    pub trees: Trees,
    committer: Arc<Committer>,
    /// Lengths of the inboxes and stdin queues.
    pub queues: Arc<Queues>,
}

/// sled's page cache (see [`Store::open`]).
const CACHE_BYTES: u64 = 16 << 20;

impl Store {
    /// Opens (or creates) the database and starts the group-commit thread.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        // The database is root's alone, whatever the umask.
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let db = sled::Config::new()
            .path(dir)
            // Durability comes from our own flushes; the background flush is
            // only a safety net for unacknowledged data (logs).
            .flush_every_ms(Some(1000))
            // sled caches up to 1 GiB by default (and holds about twice its
            // capacity), far beyond the daemon's own memory bound
            // (sandbox/daemon_memory.rs). 16 MiB: the same syscall and IPC
            // figures as 1 GiB in agentos-bench (docs/BENCHMARKS.md); reads
            // of cold logs and inboxes go to disk instead.
            .cache_capacity(CACHE_BYTES)
            .open()?;
        let trees = Trees {
            pcb: db.open_tree("pcb")?,
            journal: db.open_tree("journal")?,
            inbox: db.open_tree("inbox")?,
            stdin: db.open_tree("stdin")?,
            log: db.open_tree("log")?,
            meta: db.open_tree("meta")?,
            memory: db.open_tree("memory")?,
            timers: db.open_tree("timers")?,
            webhooks: db.open_tree("webhooks")?,
            turns: db.open_tree("turns")?,
            audit: db.open_tree("audit")?,
        };
        match trees.meta.get("schema")? {
            None => {
                trees.meta.insert("schema", &SCHEMA_VERSION.to_be_bytes())?;
                db.flush()?;
            }
            Some(v) => {
                let found = u64::from_be_bytes(v.as_ref().try_into().unwrap_or([0; 8]));
                if found != SCHEMA_VERSION {
                    return Err(StoreError::Schema { found });
                }
            }
        }
        let committer = Arc::new(Committer {
            queue: Mutex::new(Queue {
                waiting: Vec::new(),
                urgent: false,
                wake_at: 1,
            }),
            wake: Condvar::new(),
            flushes: Default::default(),
            flush_us: Default::default(),
        });
        let queues = Arc::new(Queues {
            inbox: QueueLengths::rebuild(&trees.inbox)?,
            stdin: QueueLengths::rebuild(&trees.stdin)?,
        });
        let store = Store {
            db,
            trees,
            committer,
            queues,
        };
        // sled 0.34 writes its log with sync_file_range, which neither
        // reaches the disk's cache on every filesystem nor reports errors
        // reliably; an fdatasync of the data file after each flush does both.
        let data_file = std::fs::File::open(dir.join("db"))?;
        store.start_committer(data_file);
        Ok(store)
    }

    fn start_committer(&self, data_file: std::fs::File) {
        let db = self.db.clone();
        let c = self.committer.clone();
        let run = move || {
            // Size of the previous group: when several writers shared it
            // (MIN_GATHER_GROUP), the next group is held open (up to
            // MAX_GATHER) until twice as many have queued, so that back-to-back commits carry more
            // writers each (measured with 64 senders: groups of ~40 instead
            // of ~12, a third less CPU per message). A lone writer is
            // flushed at once.
            let mut last_group = 1usize;
            loop {
                let batch: Vec<Waiter> = {
                    let Ok(mut q) = c.queue.lock() else { return };
                    while q.waiting.is_empty() {
                        q.wake_at = 1;
                        q = match c.wake.wait(q) {
                            Ok(q) => q,
                            Err(_) => return,
                        };
                    }
                    let want = if last_group >= MIN_GATHER_GROUP {
                        (last_group * 2).min(MAX_GATHER_WRITERS)
                    } else {
                        1
                    };
                    if want > 1 && q.waiting.len() < want && !q.urgent {
                        let deadline = Instant::now() + MAX_GATHER;
                        q.wake_at = want;
                        while q.waiting.len() < want && !q.urgent {
                            let now = Instant::now();
                            if now >= deadline {
                                break;
                            }
                            q = match c.wake.wait_timeout(q, deadline - now) {
                                Ok((q, _)) => q,
                                Err(_) => return,
                            };
                        }
                    }
                    q.wake_at = usize::MAX;
                    q.urgent = false;
                    std::mem::take(&mut q.waiting)
                };
                last_group = batch.len();
                // Everything written before these waiters queued is covered
                // by a flush that starts now: sled writes its buffers
                // (pwrite + sync_file_range), then one fdatasync takes them
                // through the disk's cache.
                let started = Instant::now();
                let result = db
                    .flush()
                    .map(|_| ())
                    .map_err(FlushError::Database)
                    .and_then(|()| {
                        data_file
                            .sync_data()
                            .map_err(|e| FlushError::Sync(Arc::new(e)))
                    });
                c.flushes.fetch_add(1, Relaxed);
                c.flush_us
                    .fetch_add(started.elapsed().as_micros() as u64, Relaxed);
                let failed = result.is_err();
                for w in batch {
                    let _ = w.send(result.clone());
                }
                if failed {
                    tracing::error!(error = ?result, "store flush failed; exiting so that recovery starts from durable state");
                    std::process::exit(70);
                }
            }
        };
        if let Err(e) = std::thread::Builder::new()
            .name("store-commit".into())
            .spawn(run)
        {
            tracing::error!("cannot start the group-commit thread: {e}");
            std::process::exit(70);
        }
    }

    /// Resolves once everything written before this call is on disk.
    pub async fn durable(&self) -> Result<(), StoreError> {
        self.wait_for_flush(false).await
    }

    /// Like [`Store::durable`], for a writer whose reply should not wait
    /// for a group to fill (LLM_INFER): the group it joins is flushed as
    /// soon as the flush in progress, if any, ends.
    pub async fn durable_now(&self) -> Result<(), StoreError> {
        self.wait_for_flush(true).await
    }

    async fn wait_for_flush(&self, urgent: bool) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        let wake = {
            let mut q = self.committer.lock()?;
            q.waiting.push(tx);
            // While a group is held open (wake_at > 1 but not usize::MAX),
            // an urgent writer ends the wait.
            let gathering = q.wake_at != usize::MAX;
            q.urgent |= urgent;
            q.waiting.len() >= q.wake_at || (urgent && gathering)
        };
        if wake {
            self.committer.wake.notify_one();
        }
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(StoreError::Flush(e)),
            Err(_) => Err(StoreError::Flush(FlushError::Stopped)),
        }
    }

    /// Group-commit flushes so far and their total time in µs.
    pub fn flush_stats(&self) -> (u64, u64) {
        (
            self.committer.flushes.load(Relaxed),
            self.committer.flush_us.load(Relaxed),
        )
    }

    /// A unique, increasing sequence number (persisted across restarts).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.db.generate_id()?)
    }

    /// Allocates the next pid; pids are never reused.
    pub fn next_pid(&self) -> Result<Pid, StoreError> {
        let v = self.trees.meta.update_and_fetch("next_pid", |old| {
            let n = old
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0)
                + 1;
            Some(n.to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|b| b.as_ref().try_into().ok())
            .map(u64::from_be_bytes)
            .unwrap_or(1))
    }

    pub fn put_pcb(&self, pcb: &Pcb) -> Result<(), StoreError> {
        self.trees
            .pcb
            .insert(pid_key(pcb.pid), serde_json::to_vec(pcb)?)?;
        Ok(())
    }

    /// Writes several PCBs atomically (all or none survive a crash): a
    /// child and the parent whose budget it was carved from.
    pub fn put_pcbs(&self, pcbs: &[&Pcb]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for pcb in pcbs {
            batch.insert(&pid_key(pcb.pid), serde_json::to_vec(pcb)?);
        }
        self.trees.pcb.apply_batch(batch)?;
        Ok(())
    }

    pub fn all_pcbs(&self) -> Result<Vec<Pcb>, StoreError> {
        self.trees
            .pcb
            .iter()
            .values()
            .map(|v| Ok(serde_json::from_slice(&v?)?))
            .collect()
    }

    /// Appends a JSON value to a per-pid tree under a fresh sequence number.
    pub fn append<T: Serialize>(
        &self,
        tree: &sled::Tree,
        pid: Pid,
        value: &T,
    ) -> Result<u64, StoreError> {
        let seq = self.next_seq()?;
        tree.insert(key(pid, seq), serde_json::to_vec(value)?)?;
        Ok(seq)
    }

    /// The keys of one pid in a per-pid tree after `after_seq`.
    /// Every (key, value) of one pid in a per-pid tree, oldest first.
    pub fn pid_entries(&self, tree: &sled::Tree, pid: Pid) -> sled::Iter {
        Self::pid_range(tree, pid, None)
    }

    fn pid_range(tree: &sled::Tree, pid: Pid, after_seq: Option<u64>) -> sled::Iter {
        tree.range(first_key_after(pid, after_seq)..=key(pid, u64::MAX))
    }

    /// Decodes (seq, value) pairs of a range scan.
    fn decode<T: DeserializeOwned>(
        kvs: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        kvs.map(|kv| {
            let (k, v) = kv?;
            Ok((seq_of(&k), serde_json::from_slice(&v)?))
        })
        .collect()
    }

    /// Entries of one pid in a per-pid tree, oldest first, after `after_seq`.
    pub fn range<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        pid: Pid,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        Self::decode(Self::pid_range(tree, pid, after_seq).take(limit))
    }

    /// The last `limit` entries of one pid after `after_seq`, oldest
    /// first: a range scan from the end that decodes only what it returns.
    pub fn range_tail<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        pid: Pid,
        after_seq: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, T)>, StoreError> {
        let mut out = Self::decode(Self::pid_range(tree, pid, after_seq).rev().take(limit))?;
        out.reverse();
        Ok(out)
    }

    /// Walks one pid's entries from the newest back to the first after
    /// `after_seq`, decoding one at a time, until `each` returns false.
    pub fn scan_back<T: DeserializeOwned>(
        &self,
        tree: &sled::Tree,
        pid: Pid,
        after_seq: Option<u64>,
        mut each: impl FnMut(u64, T) -> bool,
    ) -> Result<(), StoreError> {
        for kv in Self::pid_range(tree, pid, after_seq).rev() {
            let (k, v) = kv?;
            if !each(seq_of(&k), serde_json::from_slice(&v)?) {
                break;
            }
        }
        Ok(())
    }

    /// Number of entries of one pid with `after_seq < seq < before_seq`
    /// (keys only: nothing is decoded).
    pub fn count_between(
        &self,
        tree: &sled::Tree,
        pid: Pid,
        after_seq: Option<u64>,
        before_seq: u64,
    ) -> usize {
        let start = first_key_after(pid, after_seq);
        let end = key(pid, before_seq);
        if start >= end {
            return 0;
        }
        tree.range(start..end).keys().count()
    }

    /// Number of entries of one pid in a per-pid tree (a scan; the inbox
    /// and stdin queues are counted in [`Store::queues`]).
    pub fn count(&self, tree: &sled::Tree, pid: Pid) -> usize {
        tree.range(key(pid, 0)..=key(pid, u64::MAX)).count()
    }
}
