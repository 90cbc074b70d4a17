//! Semantic memory: MEM_WRITE and MEM_READ.
//!
//! `MEM_WRITE {"key", "value", "collection"?, "metadata"?}` embeds `value`
//! and stores it under `key` (a second write with the same key replaces
//! the first); `MEM_READ {"query", "k"?, "collection"?}` embeds `query` and
//! answers the `k` (default 5, at most 100) most similar memories, best
//! first, with their cosine similarity as `score`.
//!
//! **Collections.** Without `collection` an agent uses its own private
//! collection, named `agent-<pid>` in replies. Pids are never reused, and
//! no argument can reach another agent's private collection: `collection`
//! names a *shared* collection, which lives in a separate namespace, except
//! that an agent may name its own `agent-<pid>`; any other `agent-<N>` is
//! EACCES and other names beginning with `agent-` are reserved (EINVAL).
//! A shared collection may be used only when the agent's profile lists it
//! under `[memory] shared` *and* the agent holds the MEM_SHARED permission
//! (EACCES otherwise, naming which is missing). Shared names are 1-64
//! characters of ASCII letters, digits, `_` and `-`, beginning and ending
//! with a letter or digit.
//!
//! **Backends** (`[memory] backend`): `embedded` (default) keeps the
//! vectors in the daemon's own sled database and searches exactly (see
//! [`embedded`]); `chroma` uses a ChromaDB server over its HTTP API v2
//! (see [`chroma`]). Both rank by the cosine similarity of unit vectors,
//! so scores mean the same thing on both. Every collection has a byte
//! quota ([`Quota`]: the agent's `memory_store_bytes` or its profile's
//! `[memory] shared_bytes`), counted in the embedded store itself or, for
//! ChromaDB, in the daemon's [`ledger`].
//!
//! **Embeddings** come from a configured OpenAI-compatible endpoint or the
//! built-in *lexical* embedding; see [`embed`] and `docs/MEMORY.md` for the
//! trade-off.
//!
//! **Errors** (closed codes): EINVAL for malformed arguments (naming the
//! field), EMSGSIZE for a value or query over 64 KiB or metadata over
//! 8 KiB, EQUOTA past a byte quota, EACCES for a collection the agent may not use, EIO for a failure
//! of the backend or the embeddings endpoint (the message names which).
//! MEM_WRITE answers only once the memory is durable: the dispatcher
//! flushes the daemon's database before replying to a state change, and a
//! ChromaDB upsert has been acknowledged by the server.
//!
//! The kernel's MEM_WRITE / MEM_READ handlers parse the arguments
//! ([`WriteArgs`], [`ReadArgs`]), resolve the collection with
//! [`authorize`] and call [`Memory::write`] / [`Memory::search`].

pub mod chroma;
pub mod embed;
pub mod embedded;
pub mod ledger;

use crate::abi::SysError;
use crate::config::MemoryConfig;
use embed::Embedder;
use serde_json::{Map, Value, json};

/// Largest `value` of MEM_WRITE and `query` of MEM_READ, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 << 10;
/// Largest key, in bytes.
pub const MAX_KEY_BYTES: usize = 256;
/// Largest metadata object (serialised), in bytes.
pub const MAX_METADATA_BYTES: usize = 8 << 10;
/// Most metadata entries.
pub const MAX_METADATA_KEYS: usize = 32;
/// Longest metadata key.
pub const MAX_METADATA_KEY_LEN: usize = 64;
/// Longest shared collection name.
pub const MAX_COLLECTION_LEN: usize = 64;
/// Results of MEM_READ without `k`.
pub const DEFAULT_K: usize = 5;
/// Most results of one MEM_READ.
pub const MAX_K: usize = 100;

/// Prefix of the names of private collections.
const PRIVATE_PREFIX: &str = "agent-";

/// Key of the memory tree that holds this database's instance id (collection
/// ids begin with `a/` or `s/`, so it never falls inside a collection).
const INSTANCE_KEY: &[u8] = b"\xffinstance";

/// A collection, resolved and authorised.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Collection {
    /// An agent's private collection (by pid).
    Agent(u64),
    /// A shared collection (name validated).
    Shared(String),
}

impl Collection {
    /// The name agents see: `agent-<pid>` or the shared name.
    pub fn name(&self) -> String {
        match self {
            Collection::Agent(pid) => format!("{PRIVATE_PREFIX}{pid}"),
            Collection::Shared(n) => n.clone(),
        }
    }

    /// The storage id: private and shared collections live in separate
    /// namespaces (`a/<pid>`, `s/<name>`), so no name aliases another.
    pub fn storage_id(&self) -> String {
        match self {
            Collection::Agent(pid) => format!("a/{pid}"),
            Collection::Shared(n) => format!("s/{n}"),
        }
    }
}

/// The most a collection may store, and the name of the limit that says
/// so (for the EQUOTA message).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub bytes: u64,
    pub limit: &'static str,
}

/// One search result.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub key: String,
    pub value: String,
    /// Cosine similarity in [-1, 1].
    pub score: f32,
    pub metadata: Map<String, Value>,
}

impl Hit {
    pub fn to_json(&self) -> Value {
        // Six decimals: f32 noise (0.6000000238…) helps nobody.
        let score = (f64::from(self.score) * 1e6).round() / 1e6;
        json!({
            "key": self.key,
            "value": self.value,
            "score": score,
            "metadata": self.metadata,
        })
    }
}

enum Backend {
    Embedded(embedded::Embedded),
    /// The server, and this daemon's record of what it stored there.
    Chroma(Box<chroma::Chroma>, ledger::Ledger),
}

/// The memory driver: an embedder and a backend.
pub struct Memory {
    embedder: Embedder,
    backend: Backend,
}

/// Why the memory store `[memory]` configures cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("chroma_url is set but backend is \"embedded\" (set backend = \"chroma\")")]
    ChromaUrlWithoutChroma,
    #[error("backend \"chroma\" needs chroma_url (e.g. \"http://127.0.0.1:8000\")")]
    ChromaWithoutUrl,
    #[error("backend {0:?} is unknown (\"embedded\" or \"chroma\")")]
    UnknownBackend(String),
    #[error(transparent)]
    Embedder(#[from] embed::ConfigError),
    #[error(transparent)]
    Chroma(#[from] chroma::ConfigError),
    #[error("the daemon's database: {0}")]
    Database(#[from] sled::Error),
    #[error("corrupt memory instance id")]
    CorruptInstanceId,
    #[error("lost the instance id")]
    LostInstanceId,
    #[error("/dev/urandom: {0}")]
    Random(#[source] std::io::Error),
}

impl Memory {
    /// Builds the store `[memory]` configures; `tree` is the daemon's
    /// `memory` tree (the embedded backend's vectors, and the instance id
    /// that names ChromaDB collections). Nothing is contacted yet (a
    /// ChromaDB server may come up after the daemon); configuration errors
    /// stop the daemon at start.
    pub fn open(cfg: &MemoryConfig, tree: sled::Tree) -> Result<Memory, OpenError> {
        let embedder = Embedder::from_config(cfg)?;
        let backend = match cfg.backend.as_str() {
            "embedded" => {
                if cfg.chroma_url.is_some() {
                    return Err(OpenError::ChromaUrlWithoutChroma);
                }
                Backend::Embedded(embedded::Embedded::new(tree, &embedder.fingerprint()))
            }
            "chroma" => {
                let url = cfg
                    .chroma_url
                    .as_deref()
                    .ok_or(OpenError::ChromaWithoutUrl)?;
                let instance = instance_id(&tree)?;
                Backend::Chroma(
                    Box::new(chroma::Chroma::new(
                        url,
                        &cfg.chroma_tenant,
                        &cfg.chroma_database,
                        &instance,
                        &embedder.fingerprint(),
                    )?),
                    ledger::Ledger::new(tree),
                )
            }
            other => return Err(OpenError::UnknownBackend(other.to_string())),
        };
        let memory = Memory { embedder, backend };
        tracing::info!(backend = %memory.describe(), embedding = %memory.embedder.describe(), "memory driver ready");
        Ok(memory)
    }

    /// The backend, for logs.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Embedded(_) => "embedded (the daemon's database)".into(),
            Backend::Chroma(c, _) => format!("chroma at {}", c.url()),
        }
    }

    /// Stores `value` under `key` in `coll` (replacing an earlier value),
    /// refusing (EQUOTA) a write that would take the collection's stored
    /// bytes over `quota`: counted in the embedded store itself, or in
    /// this daemon's [`ledger`] of what it wrote to ChromaDB.
    pub async fn write(
        &self,
        coll: &Collection,
        key: &str,
        value: &str,
        metadata: &Map<String, Value>,
        quota: Quota,
    ) -> Result<(), SysError> {
        let vector = self.embedder.embed(value).await?;
        match &self.backend {
            Backend::Embedded(e) => e.write(coll, key, value, metadata, &vector, quota).await,
            Backend::Chroma(c, ledger) => {
                let bytes = ledger::record_bytes(key, value, metadata, vector.len());
                let recorded = ledger
                    .record(coll, key, bytes, Some(quota.bytes), quota.limit)
                    .await?;
                match c.write(coll, key, value, metadata, &vector).await {
                    Ok(()) => Ok(()),
                    Err(e) => {
                        ledger.undo(recorded)?;
                        Err(e)
                    }
                }
            }
        }
    }

    /// The `k` memories of `coll` most similar to `query`, best first.
    pub async fn search(
        &self,
        coll: &Collection,
        query: &str,
        k: usize,
    ) -> Result<Vec<Hit>, SysError> {
        let vector = self.embedder.embed(query).await?;
        match &self.backend {
            Backend::Embedded(e) => e.search(coll, &vector, k).await,
            Backend::Chroma(c, _) => c.search(coll, &vector, k).await,
        }
    }
}

/// This database's random instance id, created on first use. It prefixes
/// the names of ChromaDB collections so that two daemons (or one whose
/// state directory was reset, restarting pids at 1) sharing a server never
/// share an `agent-<pid>` collection.
fn instance_id(tree: &sled::Tree) -> Result<String, OpenError> {
    let text =
        |v: sled::IVec| String::from_utf8(v.to_vec()).map_err(|_| OpenError::CorruptInstanceId);
    if let Some(v) = tree.get(INSTANCE_KEY)? {
        return text(v);
    }
    let mut bytes = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(OpenError::Random)?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    // compare_and_swap: of two racing first starts, one id wins; the loser
    // reads the winner's below.
    let _lost_race =
        tree.compare_and_swap(INSTANCE_KEY, None as Option<&[u8]>, Some(id.as_bytes()))?;
    tree.flush()?;
    text(tree.get(INSTANCE_KEY)?.ok_or(OpenError::LostInstanceId)?)
}

// ---- the access rule -------------------------------------------------------

/// The collection a memory call names, if the caller may use it: `pid` is
/// the caller's, `profile` its profile's name, `shared` what that profile
/// lists under `[memory] shared`, `may_share` whether it holds MEM_SHARED.
pub fn authorize(
    pid: u64,
    profile: &str,
    shared: &[String],
    may_share: bool,
    name: Option<&str>,
) -> Result<Collection, SysError> {
    let Some(name) = name else {
        return Ok(Collection::Agent(pid));
    };
    if let Some(rest) = name.strip_prefix(PRIVATE_PREFIX) {
        if rest == pid.to_string() {
            return Ok(Collection::Agent(pid));
        }
        if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SysError::acces(format!(
                "collection {name:?} is another agent's private collection"
            )));
        }
        return Err(SysError::inval(format!(
            "bad arguments for memory call: collection names beginning with {PRIVATE_PREFIX:?} are reserved for agents' private collections"
        )));
    }
    validate_shared_name(name)?;
    if !shared.iter().any(|s| s == name) {
        return Err(SysError::acces(format!(
            "collection {name:?} is not a shared collection of profile {profile:?} (its [memory] shared lists {})",
            if shared.is_empty() {
                "none".to_string()
            } else {
                shared.join(", ")
            }
        )));
    }
    if !may_share {
        return Err(SysError::acces(format!(
            "shared collection {name:?} needs the MEM_SHARED permission"
        )));
    }
    Ok(Collection::Shared(name.to_string()))
}

/// Shared names: 1-64 ASCII letters, digits, `_`, `-`; first and last a
/// letter or digit.
pub fn validate_shared_name(name: &str) -> Result<(), SysError> {
    let ok_len = !name.is_empty() && name.len() <= MAX_COLLECTION_LEN;
    let ok_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    let ok_ends = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .last()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if ok_len && ok_chars && ok_ends {
        return Ok(());
    }
    Err(SysError::inval(format!(
        "bad arguments for memory call: collection {:?} is not a valid name (1-{MAX_COLLECTION_LEN} ASCII letters, digits, '_' or '-', beginning and ending with a letter or digit)",
        clip(name)
    )))
}

// ---- arguments -------------------------------------------------------------

/// MEM_WRITE's arguments, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct WriteArgs {
    pub key: String,
    pub value: String,
    pub collection: Option<String>,
    pub metadata: Map<String, Value>,
}

/// MEM_READ's arguments, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct ReadArgs {
    pub query: String,
    pub k: usize,
    pub collection: Option<String>,
}

impl WriteArgs {
    pub fn parse(args: &Value) -> Result<WriteArgs, SysError> {
        const CALL: &str = "MEM_WRITE";
        let map = fields(CALL, args, &["key", "value", "collection", "metadata"])?;
        let key = string(CALL, map, "key")?.ok_or_else(|| missing(CALL, "key"))?;
        validate_key(&key)?;
        let value = string(CALL, map, "value")?.ok_or_else(|| missing(CALL, "value"))?;
        if value.len() > MAX_VALUE_BYTES {
            return Err(SysError::msgsize(format!(
                "MEM_WRITE: value is {} bytes, more than the {MAX_VALUE_BYTES} allowed",
                value.len()
            )));
        }
        if value.trim().is_empty() {
            return Err(bad(CALL, "`value` is empty: there is nothing to remember"));
        }
        let collection = string(CALL, map, "collection")?;
        let metadata = match map.get("metadata") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => validate_metadata(m)?,
            Some(_) => return Err(bad(CALL, "`metadata` must be an object")),
        };
        Ok(WriteArgs {
            key,
            value,
            collection,
            metadata,
        })
    }
}

impl ReadArgs {
    pub fn parse(args: &Value) -> Result<ReadArgs, SysError> {
        const CALL: &str = "MEM_READ";
        let map = fields(CALL, args, &["query", "k", "collection"])?;
        let query = string(CALL, map, "query")?.ok_or_else(|| missing(CALL, "query"))?;
        if query.len() > MAX_VALUE_BYTES {
            return Err(SysError::msgsize(format!(
                "MEM_READ: query is {} bytes, more than the {MAX_VALUE_BYTES} allowed",
                query.len()
            )));
        }
        if query.trim().is_empty() {
            return Err(bad(CALL, "`query` is empty"));
        }
        let k = match map.get("k") {
            None | Some(Value::Null) => DEFAULT_K,
            Some(v) => match v.as_u64() {
                Some(k) if (1..=MAX_K as u64).contains(&k) => k as usize,
                _ => {
                    return Err(bad(
                        CALL,
                        &format!("`k` must be an integer from 1 to {MAX_K}"),
                    ));
                }
            },
        };
        let collection = string(CALL, map, "collection")?;
        Ok(ReadArgs {
            query,
            k,
            collection,
        })
    }
}

fn bad(call: &str, why: &str) -> SysError {
    SysError::inval(format!("bad arguments for {call}: {why}"))
}

fn missing(call: &str, field: &str) -> SysError {
    bad(call, &format!("missing field `{field}`"))
}

/// The argument object (`null` counts as `{}`), with unknown fields refused.
fn fields<'a>(
    call: &str,
    args: &'a Value,
    known: &[&str],
) -> Result<&'a Map<String, Value>, SysError> {
    static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    let map = match args {
        Value::Null => EMPTY.get_or_init(Map::new),
        Value::Object(m) => m,
        _ => return Err(bad(call, "args must be a JSON object")),
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        let expected: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
        return Err(bad(
            call,
            &format!(
                "unknown field `{}`, expected one of {}",
                clip(unknown),
                expected.join(", ")
            ),
        ));
    }
    Ok(map)
}

/// An optional string field (`null` = absent).
fn string(call: &str, map: &Map<String, Value>, field: &str) -> Result<Option<String>, SysError> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(bad(call, &format!("`{field}` must be a string"))),
    }
}

/// Keys: 1-256 bytes, no control characters.
pub fn validate_key(key: &str) -> Result<(), SysError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(bad(
            "MEM_WRITE",
            &format!("`key` must be 1 to {MAX_KEY_BYTES} bytes"),
        ));
    }
    if key.chars().any(char::is_control) {
        return Err(bad("MEM_WRITE", "`key` contains control characters"));
    }
    Ok(())
}

/// Metadata: a flat object of at most 32 entries whose keys are 1-64 ASCII
/// letters, digits, `_`, `.`, `-` and whose values are strings, numbers or
/// booleans (what every backend can store and filter on); 8 KiB at most.
pub fn validate_metadata(m: &Map<String, Value>) -> Result<Map<String, Value>, SysError> {
    const CALL: &str = "MEM_WRITE";
    if m.len() > MAX_METADATA_KEYS {
        return Err(bad(
            CALL,
            &format!("`metadata` has more than {MAX_METADATA_KEYS} entries"),
        ));
    }
    let size = serde_json::to_vec(m).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(SysError::msgsize(format!(
            "MEM_WRITE: metadata is {size} bytes, more than the {MAX_METADATA_BYTES} allowed"
        )));
    }
    for (k, v) in m {
        let ok_key = !k.is_empty()
            && k.len() <= MAX_METADATA_KEY_LEN
            && k.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !ok_key {
            return Err(bad(
                CALL,
                &format!(
                    "metadata key {:?} is not 1-{MAX_METADATA_KEY_LEN} ASCII letters, digits, '_', '.' or '-'",
                    clip(k)
                ),
            ));
        }
        let ok_value = match v {
            Value::String(_) | Value::Bool(_) => true,
            Value::Number(n) => {
                n.is_i64() || (n.as_f64().is_some_and(f64::is_finite) && !n.is_u64())
            }
            _ => false,
        };
        if !ok_value {
            return Err(bad(
                CALL,
                &format!(
                    "metadata value of {k:?} must be a string, a boolean or a number (within the 64-bit signed range)"
                ),
            ));
        }
    }
    Ok(m.clone())
}

/// At most 64 characters of `s`, for error messages.
fn clip(s: &str) -> String {
    if s.chars().count() <= 64 {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(64).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::abi::Errno;

    fn code<T: std::fmt::Debug>(r: Result<T, SysError>) -> Errno {
        r.expect_err("must fail").code
    }

    #[test]
    fn private_and_shared_collections_are_apart() {
        let shared = vec!["team".to_string(), "agent-7x".to_string()];
        assert_eq!(
            authorize(5, "p", &shared, false, None).expect("own"),
            Collection::Agent(5)
        );
        assert_eq!(
            authorize(5, "p", &shared, false, Some("agent-5")).expect("own by name"),
            Collection::Agent(5)
        );
        assert_eq!(
            code(authorize(5, "p", &shared, true, Some("agent-6"))),
            Errno::EACCES
        );
        assert_eq!(
            code(authorize(5, "p", &shared, true, Some("agent-7x"))),
            Errno::EINVAL
        );
        assert_eq!(
            authorize(5, "p", &shared, true, Some("team")).expect("shared"),
            Collection::Shared("team".into())
        );
        let no_perm = authorize(5, "p", &shared, false, Some("team")).expect_err("no MEM_SHARED");
        assert_eq!(no_perm.code, Errno::EACCES);
        assert!(no_perm.message.contains("MEM_SHARED"), "{no_perm}");
        let unlisted = authorize(5, "p", &shared, true, Some("other")).expect_err("unlisted");
        assert_eq!(unlisted.code, Errno::EACCES);
        assert!(unlisted.message.contains("profile \"p\""), "{unlisted}");
        for bad in ["", "-x", "x-", "a b", "a/b", "a.b", &"x".repeat(65), "é"] {
            assert_eq!(
                code(authorize(5, "p", &shared, true, Some(bad))),
                Errno::EINVAL,
                "{bad:?}"
            );
        }
        // Storage ids never collide between the namespaces.
        assert_ne!(
            Collection::Agent(5).storage_id(),
            Collection::Shared("5".into()).storage_id()
        );
    }

    #[test]
    fn arguments_are_checked() {
        let ok = WriteArgs::parse(&json!({"key": "k", "value": "v", "metadata": {"a": 1, "b.c": "x", "d": true, "e": 1.5}}))
            .expect("valid");
        assert_eq!(ok.metadata.len(), 4);
        for (args, want) in [
            (json!({"value": "v"}), Errno::EINVAL),
            (json!({"key": "k"}), Errno::EINVAL),
            (json!({"key": "", "value": "v"}), Errno::EINVAL),
            (json!({"key": "a\nb", "value": "v"}), Errno::EINVAL),
            (json!({"key": "k".repeat(257), "value": "v"}), Errno::EINVAL),
            (json!({"key": 1, "value": "v"}), Errno::EINVAL),
            (json!({"key": "k", "value": "  "}), Errno::EINVAL),
            (json!({"key": "k", "value": "v", "bogus": 1}), Errno::EINVAL),
            (
                json!({"key": "k", "value": "v", "metadata": []}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "v", "metadata": {"a": null}}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "v", "metadata": {"a": [1]}}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "v", "metadata": {"a": {"b": 1}}}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "v", "metadata": {"#a": 1}}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "v", "metadata": {"a": u64::MAX}}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "v", "collection": 3}),
                Errno::EINVAL,
            ),
            (
                json!({"key": "k", "value": "x".repeat(MAX_VALUE_BYTES + 1)}),
                Errno::EMSGSIZE,
            ),
            (
                json!({"key": "k", "value": "v", "metadata": {"a": "x".repeat(MAX_METADATA_BYTES)}}),
                Errno::EMSGSIZE,
            ),
            (json!("k"), Errno::EINVAL),
        ] {
            assert_eq!(code(WriteArgs::parse(&args)), want, "{args}");
        }
        assert_eq!(
            WriteArgs::parse(&json!({"key": "k", "value": "x".repeat(MAX_VALUE_BYTES)}))
                .expect("exactly the cap")
                .value
                .len(),
            MAX_VALUE_BYTES
        );
        assert_eq!(
            ReadArgs::parse(&json!({"query": "q"})).expect("valid").k,
            DEFAULT_K
        );
        assert_eq!(
            ReadArgs::parse(&json!({"query": "q", "k": 100}))
                .expect("valid")
                .k,
            100
        );
        for (args, want) in [
            (json!({}), Errno::EINVAL),
            (json!(null), Errno::EINVAL),
            (json!({"query": ""}), Errno::EINVAL),
            (json!({"query": "q", "k": 0}), Errno::EINVAL),
            (json!({"query": "q", "k": 101}), Errno::EINVAL),
            (json!({"query": "q", "k": -1}), Errno::EINVAL),
            (json!({"query": "q", "k": 2.5}), Errno::EINVAL),
            (json!({"query": "q", "k": "3"}), Errno::EINVAL),
            (json!({"query": "q", "key": "x"}), Errno::EINVAL),
            (
                json!({"query": "x".repeat(MAX_VALUE_BYTES + 1)}),
                Errno::EMSGSIZE,
            ),
        ] {
            assert_eq!(code(ReadArgs::parse(&args)), want, "{args}");
        }
    }
}
