//! Stored bytes of the collections kept on a ChromaDB server, as this
//! daemon wrote them: the server keeps no per-collection byte counts, so
//! the daemon records the size of every record it upserts (key, value,
//! metadata and vector) in its own database, beside the instance id. A
//! write is recorded before it is sent (a crash in between counts a record
//! the server may not hold, never the other way round) and the old size is
//! put back if the server refuses it.

use super::Collection;
use crate::abi::SysError;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Prefix of ledger keys in the `memory` tree (the embedded backend's keys
/// start with `a/` or `s/`, the instance id with 0xff).
const PREFIX: &[u8] = b"\xfeq/";
/// Writes to collections hashing to the same stripe wait for each other
/// (the check and the record of one write are not interleaved with another
/// write to the same collection).
const STRIPES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("memory ledger: {0}")]
    Database(#[from] sled::Error),
    #[error("memory ledger: corrupt size record")]
    Corrupt,
}

impl From<LedgerError> for SysError {
    fn from(e: LedgerError) -> SysError {
        SysError::io(e.to_string())
    }
}

/// What a record costs: its key, value, metadata (as JSON) and vector.
pub fn record_bytes(key: &str, value: &str, metadata: &Map<String, Value>, dims: usize) -> u64 {
    let meta = Value::Object(metadata.clone()).to_string().len();
    (key.len() + value.len() + meta + dims * std::mem::size_of::<f32>()) as u64
}

pub struct Ledger {
    tree: sled::Tree,
    stripes: Vec<Arc<tokio::sync::Mutex<()>>>,
}

/// A recorded write: the size the key had before it, to put back if the
/// server refuses the write. Holds the collection's stripe until dropped.
pub struct Recorded {
    entry: Vec<u8>,
    before: Option<sled::IVec>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

fn collection_prefix(coll: &Collection) -> Vec<u8> {
    let mut k = PREFIX.to_vec();
    k.extend_from_slice(coll.storage_id().as_bytes());
    k.push(0);
    k
}

impl Ledger {
    pub fn new(tree: sled::Tree) -> Ledger {
        Ledger {
            tree,
            stripes: (0..STRIPES).map(|_| Arc::default()).collect(),
        }
    }

    fn stripe(&self, coll: &Collection) -> Arc<tokio::sync::Mutex<()>> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        coll.hash(&mut h);
        self.stripes[(h.finish() as usize) % STRIPES].clone()
    }

    /// Records `bytes` for `key` in `coll`, refusing (EQUOTA) when the
    /// collection's other records and this one would pass `cap`.
    pub async fn record(
        &self,
        coll: &Collection,
        key: &str,
        bytes: u64,
        cap: Option<u64>,
        limit_name: &str,
    ) -> Result<Recorded, SysError> {
        let turn = self.stripe(coll).lock_owned().await;
        let prefix = collection_prefix(coll);
        let mut entry = prefix.clone();
        entry.extend_from_slice(key.as_bytes());
        let (tree, p, e) = (self.tree.clone(), prefix, entry.clone());
        let (used, before) = tokio::task::spawn_blocking(move || {
            let mut used = 0u64;
            for kv in tree.scan_prefix(&p) {
                let (k, v) = kv?;
                if k != e.as_slice() {
                    used += decode(&v)?;
                }
            }
            Ok::<_, LedgerError>((used, tree.get(&e)?))
        })
        .await
        .map_err(|e| SysError::io(format!("memory ledger: {e}")))??;
        if let Some(cap) = cap
            && used + bytes > cap
        {
            return Err(SysError::quota(format!(
                "collection {} is full: {used} bytes of {limit_name} = {cap} used, {bytes} more refused",
                coll.name()
            )));
        }
        self.tree
            .insert(&entry, &bytes.to_be_bytes())
            .map_err(LedgerError::from)?;
        Ok(Recorded {
            entry,
            before,
            _turn: turn,
        })
    }

    /// Puts back what a refused write had recorded.
    pub fn undo(&self, r: Recorded) -> Result<(), SysError> {
        match r.before {
            Some(v) => self.tree.insert(&r.entry, v),
            None => self.tree.remove(&r.entry),
        }
        .map_err(LedgerError::from)?;
        Ok(())
    }
}

fn decode(v: &[u8]) -> Result<u64, LedgerError> {
    let bytes: [u8; 8] = v.try_into().map_err(|_| LedgerError::Corrupt)?;
    Ok(u64::from_be_bytes(bytes))
}
