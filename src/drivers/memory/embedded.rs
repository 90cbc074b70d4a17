//! The embedded backend: memories in the daemon's own sled database (tree
//! `memory`), searched exactly.
//!
//! Key: the collection's storage id (`a/<pid>` or `s/<name>`), a NUL byte,
//! the memory's key (keys hold no control characters, so the prefix of one
//! collection never matches another's). Value: a small binary record —
//!
//! ```text
//! version u8 (1) | embedding fingerprint u64 LE | dims u32 LE | dims × f32 LE | JSON {key, value, metadata, written_ms}
//! ```
//!
//! Vectors are unit length when written, so a search is one dot product per
//! memory of the collection: an exact brute-force scan, with a bounded
//! heap keeping the best `k` (ties broken by key, so results are
//! deterministic). The JSON part is decoded for the winners only. A scan
//! costs about a microsecond per 512-dimension memory: fine for the tens of
//! thousands of memories an agent accumulates; use the chroma backend for
//! much more.
//!
//! Records written with another embedding (a different fingerprint: the
//! configuration changed) are skipped, with a warning: their scores would
//! be meaningless. Writing the key again re-embeds it.
//!
//! Durability: `insert` makes the record visible at once; the dispatcher
//! awaits the group commit before MEM_WRITE's reply, so an acknowledged
//! memory survives a crash.

use super::{Collection, Hit, Quota};
use crate::abi::SysError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::cmp::Ordering;
use std::collections::BinaryHeap;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 8 + 4;

/// The JSON part of a record.
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    key: String,
    value: String,
    #[serde(default)]
    metadata: Map<String, Value>,
    #[serde(default)]
    written_ms: u64,
}

/// The embedded backend.
pub struct Embedded {
    tree: sled::Tree,
    fingerprint: u64,
    /// Serializes writes under a byte quota: the check and the insert are
    /// one step.
    quota_lock: tokio::sync::Mutex<()>,
}

/// A failure of the embedded backend; EIO for the caller.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error("database: {0}")]
    Database(#[from] sled::Error),
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
    #[error("corrupt record in collection {collection}: {source}")]
    Corrupt {
        collection: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Task(#[from] tokio::task::JoinError),
}

impl From<EmbeddedError> for SysError {
    fn from(e: EmbeddedError) -> Self {
        SysError::io(format!("memory backend embedded: {e}"))
    }
}

/// Milliseconds since the Unix epoch (when a memory was written).
fn written_now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Embedded {
    /// `fingerprint` identifies the embedding the vectors come from.
    pub fn new(tree: sled::Tree, fingerprint: &str) -> Embedded {
        Embedded {
            tree,
            fingerprint: fingerprint_hash(fingerprint),
            quota_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub async fn write(
        &self,
        coll: &Collection,
        key: &str,
        value: &str,
        metadata: &Map<String, Value>,
        vector: &[f32],
        quota: Quota,
    ) -> Result<(), SysError> {
        let doc = Doc {
            key: key.to_string(),
            value: value.to_string(),
            metadata: metadata.clone(),
            written_ms: written_now_ms(),
        };
        let record = encode(self.fingerprint, vector, &doc).map_err(EmbeddedError::from)?;
        let k = record_key(coll, key);
        let _turn = self.quota_lock.lock().await;
        let prefix = collection_prefix(coll);
        let (tree, key_in_tree) = (self.tree.clone(), k.clone());
        // Stored bytes (keys and records, vectors included) of the
        // collection, the record being replaced left out.
        let used = tokio::task::spawn_blocking(move || -> Result<u64, sled::Error> {
            let mut used = 0u64;
            for kv in tree.scan_prefix(&prefix) {
                let (rk, rv) = kv?;
                if rk != key_in_tree.as_slice() {
                    used += (rk.len() + rv.len()) as u64;
                }
            }
            Ok(used)
        })
        .await
        .map_err(EmbeddedError::from)?
        .map_err(EmbeddedError::from)?;
        let size = (k.len() + record.len()) as u64;
        if used + size > quota.bytes {
            return Err(SysError::quota(format!(
                "memory store is full: {used} bytes of {} = {} used, {size} more refused",
                quota.limit, quota.bytes
            )));
        }
        let tree = self.tree.clone();
        tokio::task::spawn_blocking(move || tree.insert(k, record))
            .await
            .map_err(EmbeddedError::from)?
            .map_err(EmbeddedError::from)?;
        Ok(())
    }

    pub async fn search(
        &self,
        coll: &Collection,
        query: &[f32],
        k: usize,
    ) -> Result<Vec<Hit>, SysError> {
        let tree = self.tree.clone();
        let prefix = collection_prefix(coll);
        let query = query.to_vec();
        let fingerprint = self.fingerprint;
        let name = coll.name();
        let hits = tokio::task::spawn_blocking(move || {
            scan(&tree, &prefix, &query, k, fingerprint, &name)
        })
        .await
        .map_err(EmbeddedError::from)??;
        Ok(hits)
    }
}

fn scan(
    tree: &sled::Tree,
    prefix: &[u8],
    query: &[f32],
    k: usize,
    fingerprint: u64,
    name: &str,
) -> Result<Vec<Hit>, EmbeddedError> {
    let mut skipped = 0usize;
    let mut best = TopK::new(k);
    for kv in tree.scan_prefix(prefix) {
        let (key, record) = kv?;
        match score(&record, query, fingerprint) {
            Some(s) => best.push(Ranked::new(s, key, record)),
            None => skipped += 1,
        }
    }
    if skipped > 0 {
        tracing::warn!(
            collection = name,
            skipped,
            "memories written with another embedding configuration were skipped; write them again to make them searchable"
        );
    }
    let best = best.into_sorted();
    best.into_iter()
        .map(|r| {
            let doc: Doc = serde_json::from_slice(&r.payload[json_offset(&r.payload)..]).map_err(
                |source| EmbeddedError::Corrupt {
                    collection: name.to_string(),
                    source,
                },
            )?;
            Ok(Hit {
                key: doc.key,
                value: doc.value,
                score: r.score.clamp(-1.0, 1.0),
                metadata: doc.metadata,
            })
        })
        .collect()
}

/// The sled key of a memory.
pub fn record_key(coll: &Collection, key: &str) -> Vec<u8> {
    let mut k = collection_prefix(coll);
    k.extend_from_slice(key.as_bytes());
    k
}

/// The common prefix of a collection's keys.
pub fn collection_prefix(coll: &Collection) -> Vec<u8> {
    let mut k = coll.storage_id().into_bytes();
    k.push(0);
    k
}

/// A stable 64-bit hash of an embedding fingerprint.
pub fn fingerprint_hash(fingerprint: &str) -> u64 {
    super::embed::feature_hash(b'f', fingerprint)
}

fn encode(fingerprint: u64, vector: &[f32], doc: &Doc) -> Result<Vec<u8>, serde_json::Error> {
    let json = serde_json::to_vec(doc)?;
    let mut out = Vec::with_capacity(HEADER + 4 * vector.len() + json.len());
    out.push(VERSION);
    out.extend_from_slice(&fingerprint.to_le_bytes());
    out.extend_from_slice(&(vector.len() as u32).to_le_bytes());
    for x in vector {
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.extend_from_slice(&json);
    Ok(out)
}

fn dims_of(record: &[u8]) -> usize {
    let mut d = [0u8; 4];
    d.copy_from_slice(&record[9..13]);
    u32::from_le_bytes(d) as usize
}

fn json_offset(record: &[u8]) -> usize {
    HEADER + 4 * dims_of(record)
}

/// The dot product of a record's vector with `query`; None when the record
/// is from another embedding, another version or malformed.
fn score(record: &[u8], query: &[f32], fingerprint: u64) -> Option<f32> {
    if record.len() < HEADER || record[0] != VERSION {
        return None;
    }
    let fp = u64::from_le_bytes(record[1..9].try_into().ok()?);
    let dims = dims_of(record);
    if fp != fingerprint || dims != query.len() || record.len() < HEADER + 4 * dims {
        return None;
    }
    let bytes = &record[HEADER..HEADER + 4 * dims];
    let mut sum = 0f32;
    for (chunk, q) in bytes.chunks_exact(4).zip(query) {
        sum += f32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) * q;
    }
    Some(sum)
}

/// A scored candidate: ordered by score (higher is better), then key
/// (smaller is better); the payload does not take part.
pub struct Ranked<K, P> {
    pub score: f32,
    pub key: K,
    pub payload: P,
}

impl<K: Ord, P> Ranked<K, P> {
    pub fn new(score: f32, key: K, payload: P) -> Self {
        Ranked {
            score,
            key,
            payload,
        }
    }
}

impl<K: Ord, P> PartialEq for Ranked<K, P> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl<K: Ord, P> Eq for Ranked<K, P> {}
impl<K: Ord, P> PartialOrd for Ranked<K, P> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, P> Ord for Ranked<K, P> {
    /// `Less` = ranks better.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then_with(|| self.key.cmp(&other.key))
    }
}

/// Keeps the best `k` of the candidates pushed into it.
pub struct TopK<K, P> {
    k: usize,
    /// A max-heap on "worse": its top is the worst candidate kept.
    heap: BinaryHeap<Ranked<K, P>>,
}

impl<K: Ord, P> TopK<K, P> {
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.saturating_add(1).min(1024)),
        }
    }

    pub fn push(&mut self, item: Ranked<K, P>) {
        if self.k == 0 {
            return;
        }
        if self.heap.len() == self.k && self.heap.peek().is_some_and(|worst| item >= *worst) {
            return;
        }
        self.heap.push(item);
        if self.heap.len() > self.k {
            self.heap.pop();
        }
    }

    /// The kept candidates, best first.
    pub fn into_sorted(self) -> Vec<Ranked<K, P>> {
        self.heap.into_sorted_vec()
    }
}

/// The best `k` candidates, best first.
pub fn top_k<K: Ord, P>(items: impl Iterator<Item = Ranked<K, P>>, k: usize) -> Vec<Ranked<K, P>> {
    let mut best = TopK::new(k);
    for item in items {
        best.push(item);
    }
    best.into_sorted()
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNBOUNDED: Quota = Quota {
        bytes: u64::MAX,
        limit: "none",
    };
    use crate::drivers::memory::embed::normalize;

    /// A deterministic pseudo-random generator (no dependency needed).
    struct Lcg(u64);
    impl Lcg {
        fn next(&mut self) -> f32 {
            self.0 = self
                .0
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        }
    }

    /// Cosine similarity computed independently: f64, no normalisation
    /// assumed.
    fn cosine64(a: &[f32], b: &[f32]) -> f64 {
        let dot: f64 = a
            .iter()
            .zip(b)
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum();
        let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
        dot / (na * nb)
    }

    #[test]
    fn top_k_matches_a_full_sort() {
        let mut rng = Lcg(7);
        let scores: Vec<f32> = (0..500)
            .map(|_| (rng.next() * 20.0).round() / 20.0)
            .collect();
        for k in [1, 3, 10, 499, 500, 600] {
            let got: Vec<(f32, usize)> = top_k(
                scores
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Ranked::new(*s, i, ())),
                k,
            )
            .into_iter()
            .map(|r| (r.score, r.key))
            .collect();
            let mut want: Vec<(f32, usize)> = scores.iter().copied().zip(0..).collect();
            want.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            want.truncate(k);
            assert_eq!(got, want, "k = {k}");
        }
        assert!(top_k(std::iter::once(Ranked::new(1.0, 1, ())), 0).is_empty());
    }

    #[tokio::test]
    async fn search_ranks_by_cosine_and_overwrites() {
        let dir = std::env::temp_dir().join(format!("agentos-mem-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = sled::Config::new()
            .temporary(true)
            .path(&dir)
            .open()
            .expect("db");
        let tree = db.open_tree("memory").expect("tree");
        let e = Embedded::new(tree.clone(), "test/16");
        let coll = Collection::Agent(1);
        let other = Collection::Agent(11);
        let mut rng = Lcg(42);
        let mut raw: Vec<(String, Vec<f32>)> = Vec::new();
        for i in 0..40 {
            let v: Vec<f32> = (0..16).map(|_| rng.next()).collect();
            raw.push((format!("doc{i:02}"), v));
        }
        for (key, v) in &raw {
            let mut unit = v.clone();
            assert!(normalize(&mut unit));
            e.write(
                &coll,
                key,
                &format!("value of {key}"),
                &Map::new(),
                &unit,
                UNBOUNDED,
            )
            .await
            .expect("write");
        }
        // A collection whose prefix extends this one's ("a/11" vs "a/1").
        let mut unit = raw[0].1.clone();
        normalize(&mut unit);
        e.write(&other, "intruder", "x", &Map::new(), &unit, UNBOUNDED)
            .await
            .expect("write");
        let query: Vec<f32> = (0..16).map(|_| rng.next()).collect();
        let mut q = query.clone();
        normalize(&mut q);
        let hits = e.search(&coll, &q, 7).await.expect("search");
        let mut want: Vec<(String, f64)> = raw
            .iter()
            .map(|(k, v)| (k.clone(), cosine64(v, &query)))
            .collect();
        want.sort_by(|a, b| b.1.total_cmp(&a.1));
        assert_eq!(hits.len(), 7);
        for (h, (key, cos)) in hits.iter().zip(&want) {
            assert_eq!(&h.key, key);
            assert!(
                (f64::from(h.score) - cos).abs() < 1e-5,
                "{} vs {cos}",
                h.score
            );
            assert_eq!(h.value, format!("value of {key}"));
        }
        assert!(hits.iter().all(|h| h.key != "intruder"));
        // Overwrite: same key, new value and vector.
        let mut meta = Map::new();
        meta.insert("v".into(), Value::from(2));
        e.write(&coll, "doc00", "replaced", &meta, &q, UNBOUNDED)
            .await
            .expect("overwrite");
        let hits = e.search(&coll, &q, 100).await.expect("search");
        assert_eq!(hits.len(), 40, "overwrite must not duplicate");
        assert_eq!(hits[0].key, "doc00");
        assert_eq!(hits[0].value, "replaced");
        assert_eq!(hits[0].metadata, meta);
        assert!((hits[0].score - 1.0).abs() < 1e-5);
        // Another embedding's records are not compared.
        let e2 = Embedded::new(tree, "other/16");
        assert!(e2.search(&coll, &q, 5).await.expect("search").is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
