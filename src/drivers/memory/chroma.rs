//! The ChromaDB backend, over Chroma's HTTP API v2 (verified against
//! chromadb 1.5; the v1 API answers 410 there).
//!
//! - Base: `<chroma_url>/api/v2/tenants/<tenant>/databases/<database>`.
//!   The tenant and database are created on first use when missing.
//! - Collections: each AgentOS collection is one Chroma collection named
//!   `agentos-<instance>-a-<pid>` (private) or `agentos-<instance>-s-<name>`
//!   (shared), where `<instance>` is a random id kept in the daemon's
//!   database: private and shared names cannot alias each other, and two
//!   daemons sharing a server (or a daemon whose state was reset, so pids
//!   restart at 1) never share a collection. They are created with
//!   `get_or_create` and `configuration: {"hnsw": {"space": "cosine"}}`,
//!   and carry the embedding fingerprint in their metadata
//!   (`agentos:embedding`); a collection with another distance function or
//!   another embedding is refused with EIO rather than searched with
//!   meaningless scores.
//! - Embeddings are computed by AgentOS (Chroma's own embedding functions
//!   are not used) and sent unit-length. `value` goes in `documents`, the
//!   user's metadata in `metadatas`. Chroma's upsert *merges* metadata, so
//!   a write nulls the keys of the previous version that the new one lacks,
//!   and also stores the exact metadata as JSON under `agentos:metadata`,
//!   which is what MEM_READ returns.
//! - Scores: Chroma's cosine distance is `1 - cos`, so `score = 1 -
//!   distance`, the same cosine similarity the embedded backend reports.
//!   Results are re-sorted by (score desc, key asc) like the embedded
//!   backend's. Chroma's HNSW index is approximate for large collections.
//!
//! Every failure is EIO "memory backend chroma at <url>: …".

use super::embedded::{Ranked, top_k};
use super::{Collection, Hit};
use crate::abi::SysError;
use crate::llm::http::error_chain as chain;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Seconds one request to the server may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Metadata key holding the exact user metadata as JSON.
const META_JSON: &str = "agentos:metadata";
/// Collection metadata key holding the embedding fingerprint.
const META_EMBEDDING: &str = "agentos:embedding";

/// Why `[memory]`'s ChromaDB settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("chroma_url {0:?} is not an http(s) URL")]
    NotHttp(String),
    #[error("{what} {value:?} must be ASCII letters, digits, '_', '-' or '.'")]
    BadName { what: &'static str, value: String },
    #[error("cannot build the HTTP client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// A ChromaDB server.
pub struct Chroma {
    /// The server, without a trailing slash.
    url: String,
    tenant: String,
    database: String,
    /// `agentos-<instance>`.
    prefix: String,
    fingerprint: String,
    client: reqwest::Client,
    /// Chroma collection name → id.
    ids: Mutex<HashMap<String, String>>,
    ready: tokio::sync::OnceCell<()>,
}

/// An HTTP answer that is not 2xx: status and Chroma's message.
struct Refused {
    status: StatusCode,
    message: String,
}

impl Chroma {
    pub fn new(
        url: &str,
        tenant: &str,
        database: &str,
        instance: &str,
        fingerprint: &str,
    ) -> Result<Chroma, ConfigError> {
        let url = url.trim().trim_end_matches('/').to_string();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::NotHttp(url));
        }
        for (what, v) in [("chroma_tenant", tenant), ("chroma_database", database)] {
            if v.is_empty()
                || !v
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
            {
                return Err(ConfigError::BadName {
                    what,
                    value: v.to_string(),
                });
            }
        }
        let client = crate::llm::http::client_builder(TIMEOUT)
            .build()
            .map_err(|source| ConfigError::Client {
                url: url.clone(),
                source,
            })?;
        Ok(Chroma {
            url,
            tenant: tenant.to_string(),
            database: database.to_string(),
            prefix: format!("agentos-{instance}"),
            fingerprint: fingerprint.to_string(),
            client,
            ids: Mutex::new(HashMap::new()),
            ready: tokio::sync::OnceCell::new(),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The Chroma collection name of `coll`.
    pub fn collection_name(&self, coll: &Collection) -> String {
        match coll {
            Collection::Agent(pid) => format!("{}-a-{pid}", self.prefix),
            Collection::Shared(n) => format!("{}-s-{n}", self.prefix),
        }
    }

    fn err(&self, what: &str) -> SysError {
        SysError::io(format!("memory backend chroma at {}: {what}", self.url))
    }

    fn refused(&self, what: &str, r: &Refused) -> SysError {
        self.err(&format!("{what}: HTTP {}: {}", r.status, r.message))
    }

    fn db_url(&self) -> String {
        format!(
            "{}/api/v2/tenants/{}/databases/{}",
            self.url, self.tenant, self.database
        )
    }

    /// One request. Transport failures are Err; non-2xx answers are
    /// Ok(Err(..)) for the caller to judge.
    async fn request(
        &self,
        method: Method,
        url: &str,
        body: Option<&Value>,
    ) -> Result<Result<Value, Refused>, SysError> {
        let mut req = self.client.request(method, url);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| self.err(&format!("request failed: {}", chain(&e.without_url()))))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| self.err(&format!("reading the answer: {}", chain(&e.without_url()))))?;
        if status.is_success() {
            let v = if bytes.is_empty() {
                Value::Null
            } else {
                serde_json::from_slice(&bytes).map_err(|e| {
                    self.err(&format!("HTTP {status} with a body that is not JSON: {e}"))
                })?
            };
            return Ok(Ok(v));
        }
        let message = match serde_json::from_slice::<Value>(&bytes) {
            Ok(v) if v.get("message").is_some() => format!(
                "{}{}",
                v.get("error")
                    .and_then(Value::as_str)
                    .map(|e| format!("{e}: "))
                    .unwrap_or_default(),
                v["message"].as_str().unwrap_or_default()
            ),
            _ => String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        };
        Ok(Err(Refused { status, message }))
    }

    /// Creates the tenant and database if they do not exist (once).
    async fn ensure_database(&self) -> Result<(), SysError> {
        self.ready
            .get_or_try_init(|| async {
                match self.request(Method::GET, &self.db_url(), None).await? {
                    Ok(_) => return Ok(()),
                    Err(r) if r.status == StatusCode::NOT_FOUND => {}
                    Err(r) => return Err(self.refused("checking the database", &r)),
                }
                let steps = [
                    (
                        format!("{}/api/v2/tenants", self.url),
                        json!({"name": self.tenant}),
                        "creating tenant",
                    ),
                    (
                        format!("{}/api/v2/tenants/{}/databases", self.url, self.tenant),
                        json!({"name": self.database}),
                        "creating database",
                    ),
                ];
                for (url, body, what) in steps {
                    match self.request(Method::POST, &url, Some(&body)).await? {
                        Ok(_) => {}
                        Err(r) if r.status == StatusCode::CONFLICT => {}
                        Err(r) => return Err(self.refused(what, &r)),
                    }
                }
                tracing::info!(url = %self.url, tenant = %self.tenant, database = %self.database, "created the ChromaDB tenant/database for memory");
                Ok(())
            })
            .await
            .map(|_| ())
    }

    /// The Chroma id of `coll`'s collection; None when it does not exist
    /// and `create` is false.
    async fn collection_id(
        &self,
        coll: &Collection,
        create: bool,
    ) -> Result<Option<String>, SysError> {
        let name = self.collection_name(coll);
        if let Some(id) = self.cached(&name) {
            return Ok(Some(id));
        }
        self.ensure_database().await?;
        let answer = if create {
            let body = json!({
                "name": name,
                "get_or_create": true,
                "configuration": {"hnsw": {"space": "cosine"}},
                "metadata": {META_EMBEDDING: self.fingerprint, "agentos:collection": coll.name()},
            });
            let url = format!("{}/collections", self.db_url());
            match self.request(Method::POST, &url, Some(&body)).await? {
                Ok(v) => v,
                Err(r) => return Err(self.refused(&format!("creating collection {name}"), &r)),
            }
        } else {
            let url = format!("{}/collections/{name}", self.db_url());
            match self.request(Method::GET, &url, None).await? {
                Ok(v) => v,
                Err(r) if r.status == StatusCode::NOT_FOUND => return Ok(None),
                Err(r) => return Err(self.refused(&format!("looking up collection {name}"), &r)),
            }
        };
        let id = answer
            .get("id")
            .and_then(Value::as_str)
            .ok_or_else(|| self.err(&format!("collection {name}: the answer has no id")))?
            .to_string();
        self.check_collection(&name, &answer)?;
        if let Ok(mut ids) = self.ids.lock() {
            ids.insert(name, id.clone());
        }
        Ok(Some(id))
    }

    fn cached(&self, name: &str) -> Option<String> {
        self.ids.lock().ok().and_then(|ids| ids.get(name).cloned())
    }

    fn forget(&self, coll: &Collection) {
        if let Ok(mut ids) = self.ids.lock() {
            ids.remove(&self.collection_name(coll));
        }
    }

    /// Refuses a collection whose distance is not cosine or whose vectors
    /// come from another embedding.
    fn check_collection(&self, name: &str, answer: &Value) -> Result<(), SysError> {
        let space = ["hnsw", "spann"]
            .iter()
            .find_map(|index| {
                answer
                    .pointer(&format!("/configuration_json/{index}/space"))
                    .and_then(Value::as_str)
            })
            .or_else(|| {
                answer
                    .pointer("/metadata/hnsw:space")
                    .and_then(Value::as_str)
            })
            .unwrap_or("l2 (the default)");
        if space != "cosine" {
            return Err(self.err(&format!(
                "collection {name} uses the {space} distance; AgentOS needs cosine (delete the collection or use another database)"
            )));
        }
        if let Some(fp) = answer
            .pointer(&format!("/metadata/{META_EMBEDDING}"))
            .and_then(Value::as_str)
        {
            if fp != self.fingerprint {
                return Err(self.err(&format!(
                    "collection {name} holds vectors of embedding {fp:?}, but the daemon is configured with {:?} (delete the collection or restore the configuration)",
                    self.fingerprint
                )));
            }
        }
        Ok(())
    }

    pub async fn write(
        &self,
        coll: &Collection,
        key: &str,
        value: &str,
        metadata: &Map<String, Value>,
        vector: &[f32],
    ) -> Result<(), SysError> {
        // One retry: the cached id may name a collection deleted meanwhile.
        for attempt in 0..2 {
            let id = self
                .collection_id(coll, true)
                .await?
                .ok_or_else(|| self.err("collection vanished"))?;
            match self.upsert(&id, key, value, metadata, vector).await? {
                Ok(()) => return Ok(()),
                Err(r) if r.status == StatusCode::NOT_FOUND && attempt == 0 => self.forget(coll),
                Err(r) => {
                    return Err(self.refused(
                        &format!("storing {key:?} in {}", self.collection_name(coll)),
                        &r,
                    ));
                }
            }
        }
        Err(self.err("collection vanished"))
    }

    async fn upsert(
        &self,
        id: &str,
        key: &str,
        value: &str,
        metadata: &Map<String, Value>,
        vector: &[f32],
    ) -> Result<Result<(), Refused>, SysError> {
        let base = format!("{}/collections/{id}", self.db_url());
        // Chroma merges metadata on upsert: null the keys that the new
        // version lacks.
        let old = match self
            .request(
                Method::POST,
                &format!("{base}/get"),
                Some(&json!({"ids": [key], "include": ["metadatas"]})),
            )
            .await?
        {
            Ok(v) => v,
            Err(r) => return Ok(Err(r)),
        };
        let mut meta = metadata.clone();
        if let Some(old) = old.pointer("/metadatas/0").and_then(Value::as_object) {
            for k in old.keys() {
                if !meta.contains_key(k) && k != META_JSON {
                    meta.insert(k.clone(), Value::Null);
                }
            }
        }
        meta.insert(
            META_JSON.into(),
            Value::String(Value::Object(metadata.clone()).to_string()),
        );
        let body = json!({
            "ids": [key],
            "embeddings": [vector],
            "documents": [value],
            "metadatas": [meta],
        });
        Ok(self
            .request(Method::POST, &format!("{base}/upsert"), Some(&body))
            .await?
            .map(|_| ()))
    }

    pub async fn search(
        &self,
        coll: &Collection,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<Hit>, SysError> {
        for attempt in 0..2 {
            let Some(id) = self.collection_id(coll, false).await? else {
                return Ok(Vec::new());
            };
            let body = json!({
                "query_embeddings": [vector],
                "n_results": k,
                "include": ["documents", "metadatas", "distances"],
            });
            let url = format!("{}/collections/{id}/query", self.db_url());
            match self.request(Method::POST, &url, Some(&body)).await? {
                Ok(answer) => return self.hits(&answer, k),
                Err(r) if r.status == StatusCode::NOT_FOUND && attempt == 0 => self.forget(coll),
                Err(r) => {
                    return Err(
                        self.refused(&format!("querying {}", self.collection_name(coll)), &r)
                    );
                }
            }
        }
        Ok(Vec::new())
    }

    /// Turns a query answer into hits, best first.
    fn hits(&self, answer: &Value, k: usize) -> Result<Vec<Hit>, SysError> {
        let column = |name: &str| -> Vec<Value> {
            answer
                .pointer(&format!("/{name}/0"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let ids = column("ids");
        let docs = column("documents");
        let metas = column("metadatas");
        let dists = column("distances");
        if dists.len() != ids.len() {
            return Err(self.err("malformed query answer (ids and distances differ)"));
        }
        let mut hits = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let key = id.as_str().unwrap_or_default().to_string();
            let distance = dists[i]
                .as_f64()
                .ok_or_else(|| self.err("malformed query answer (distance)"))?;
            let score = (1.0 - distance).clamp(-1.0, 1.0) as f32;
            let value = docs
                .get(i)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let metadata = user_metadata(metas.get(i));
            hits.push(Ranked::new(score, key, (value, metadata)));
        }
        Ok(top_k(hits.into_iter(), k)
            .into_iter()
            .map(|r| Hit {
                key: r.key,
                value: r.payload.0,
                score: r.score,
                metadata: r.payload.1,
            })
            .collect())
    }
}

/// The user's metadata of a stored item: the exact JSON copy when present,
/// else the item's metadata without AgentOS's own keys.
fn user_metadata(stored: Option<&Value>) -> Map<String, Value> {
    let Some(Value::Object(m)) = stored else {
        return Map::new();
    };
    if let Some(Value::Object(exact)) = m
        .get(META_JSON)
        .and_then(Value::as_str)
        .and_then(|s| serde_json::from_str(s).ok())
    {
        return exact;
    }
    m.iter()
        .filter(|(k, _)| !k.starts_with("agentos:"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_namespaced_and_valid_for_chroma() {
        let c = Chroma::new(
            "http://127.0.0.1:1/",
            "default_tenant",
            "default_database",
            "0123456789abcdef",
            "lexical-v1/512",
        )
        .expect("valid");
        assert_eq!(c.url(), "http://127.0.0.1:1");
        let private = c.collection_name(&Collection::Agent(7));
        let shared = c.collection_name(&Collection::Shared("7".into()));
        assert_eq!(private, "agentos-0123456789abcdef-a-7");
        assert_eq!(shared, "agentos-0123456789abcdef-s-7");
        assert!(Chroma::new("ftp://x", "t", "d", "i", "f").is_err());
        assert!(Chroma::new("http://x", "t/x", "d", "i", "f").is_err());
    }

    #[test]
    fn answers_become_ranked_hits() {
        let c = Chroma::new("http://127.0.0.1:1", "t", "d", "i", "f").expect("valid");
        let answer = json!({
            "ids": [["b", "a", "c"]],
            "documents": [["B", "A", "C"]],
            "metadatas": [[{"x": 1, "stale": 2, META_JSON: "{\"x\":1}"}, null, {"y": "z"}]],
            "distances": [[0.25, 0.25, 0.9]],
        });
        let hits = c.hits(&answer, 2).expect("hits");
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].key.as_str(), hits[0].value.as_str()), ("a", "A"));
        assert_eq!(hits[1].key, "b");
        assert!((hits[1].score - 0.75).abs() < 1e-6);
        assert_eq!(Value::Object(hits[1].metadata.clone()), json!({"x": 1}));
        assert!(hits[0].metadata.is_empty());
        let all = c.hits(&answer, 10).expect("hits");
        assert_eq!(Value::Object(all[2].metadata.clone()), json!({"y": "z"}));
        assert!(
            c.hits(&json!({"ids": [["a"]], "distances": [[]]}), 5)
                .is_err()
        );
    }
}
