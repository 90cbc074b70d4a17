//! Embeddings for MEM_WRITE / MEM_READ: text → unit vector.
//!
//! Two embedders:
//!
//! - [`Embedder::Http`]: an OpenAI-compatible `/v1/embeddings` endpoint
//!   (OpenAI, Ollama, llama.cpp `--embeddings`, vLLM, LM Studio, text
//!   embeddings inference …) configured with `[memory] embeddings_url`,
//!   `embeddings_model` and optionally a key. This is what gives *semantic*
//!   recall (synonyms, paraphrases, other languages, depending on the
//!   model).
//! - [`Embedder::Lexical`], the built-in default when no endpoint is
//!   configured. It is honest about what it is: a **lexical** embedding, a
//!   hashed bag of features — lower-cased word unigrams and bigrams
//!   (common English stop words dropped) and character 3-5-grams of each
//!   word (which gives some robustness to inflection and typos: "running"
//!   shares grams with "runs"). Each feature is hashed (FNV-1a, then a
//!   64-bit mixer) to one of `dimensions` buckets with a hash-derived sign
//!   (the signed "hashing trick", so collisions cancel on average instead of
//!   piling up), weighted `1 + ln(tf)`; each feature group is
//!   L2-normalised, the groups are summed with weights 1.0 (words), 0.5
//!   (bigrams), 1.0 (character grams) and the sum is L2-normalised again.
//!   Cosine similarity of two such vectors measures *shared words and word
//!   pieces*: it knows nothing of synonyms or meaning ("car" and
//!   "automobile" score 0), but it is deterministic, needs no model, no
//!   network and no GPU, and works well for keyword recall. Its
//!   fingerprint is `lexical-v1/<dimensions>`: changing the algorithm must
//!   change the version so that stored vectors are not compared with
//!   vectors of another scheme.
//!
//! Every vector leaves this module L2-normalised, so the backends rank by
//! plain dot product (= cosine similarity).

use crate::abi::SysError;
use crate::config::MemoryConfig;
use crate::llm::LlmError;
use crate::llm::http::{RetryPolicy, client_builder, post_json, resolve_api_key};
use serde_json::{Value, json};
use std::time::Duration;

/// The version of the lexical scheme (part of its fingerprint).
pub const LEXICAL_VERSION: &str = "lexical-v1";

/// Most dimensions accepted from an embeddings endpoint (or configured).
pub const MAX_DIMENSIONS: usize = 16_384;

/// Fewest dimensions of the built-in embedding.
pub const MIN_DIMENSIONS: usize = 16;

/// Seconds one embeddings request may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// Why `[memory]`'s embedding settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is set but embeddings_url is not (the built-in lexical embedding needs neither)")]
    WithoutUrl(&'static str),
    #[error("dimensions must be between {MIN_DIMENSIONS} and {MAX_DIMENSIONS}, not {0}")]
    Dimensions(usize),
    #[error("embeddings_url {0:?} is not an http(s) URL")]
    NotHttp(String),
    #[error("embeddings_url needs embeddings_model (the model id the endpoint serves)")]
    NoModel,
    #[error("embeddings credentials: {0}")]
    Credentials(#[source] serde_json::Error),
    #[error(transparent)]
    Key(LlmError),
    #[error("cannot build the HTTP client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// What is wrong with an embeddings endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnswer {
    #[error("the answer has no \"data\" array")]
    NoData,
    #[error("the answer's \"data\" is empty")]
    EmptyData,
    #[error("data[0] has no \"embedding\" array of numbers")]
    NoEmbedding,
    #[error("the embedding has {0} dimensions (1 to {MAX_DIMENSIONS} accepted)")]
    Dimensions(usize),
    #[error("the embedding holds something other than finite numbers")]
    NotFinite,
    #[error("the embedding is the zero vector")]
    Zero,
}

/// A failed embedding, naming the endpoint; EIO for the caller.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embeddings endpoint {url}: {source}")]
    Endpoint {
        url: String,
        #[source]
        source: LlmError,
    },
    #[error("embeddings endpoint {url}: {source}")]
    Answer {
        url: String,
        #[source]
        source: BadAnswer,
    },
}

impl From<EmbedError> for SysError {
    fn from(e: EmbedError) -> Self {
        SysError::io(e.to_string())
    }
}

/// Turns text into unit vectors.
pub enum Embedder {
    Lexical { dimensions: usize },
    Http(HttpEmbedder),
}

impl Embedder {
    /// The embedder `[memory]` configures: the endpoint when
    /// `embeddings_url` is set, the built-in lexical embedding otherwise.
    pub fn from_config(cfg: &MemoryConfig) -> Result<Embedder, ConfigError> {
        match &cfg.embeddings_url {
            None => {
                for (set, key) in [
                    (cfg.embeddings_model.is_some(), "embeddings_model"),
                    (
                        cfg.embeddings_api_key_env.is_some(),
                        "embeddings_api_key_env",
                    ),
                    (
                        cfg.embeddings_api_key_file.is_some(),
                        "embeddings_api_key_file",
                    ),
                ] {
                    if set {
                        return Err(ConfigError::WithoutUrl(key));
                    }
                }
                if !(MIN_DIMENSIONS..=MAX_DIMENSIONS).contains(&cfg.dimensions) {
                    return Err(ConfigError::Dimensions(cfg.dimensions));
                }
                Ok(Embedder::Lexical {
                    dimensions: cfg.dimensions,
                })
            }
            Some(url) => Ok(Embedder::Http(HttpEmbedder::from_config(url, cfg)?)),
        }
    }

    /// Identifies the vector space: vectors with different fingerprints
    /// must never be compared.
    pub fn fingerprint(&self) -> String {
        match self {
            Embedder::Lexical { dimensions } => format!("{LEXICAL_VERSION}/{dimensions}"),
            Embedder::Http(h) => format!("http/{}@{}", h.model, h.url),
        }
    }

    /// A short description for logs and errors.
    pub fn describe(&self) -> String {
        match self {
            Embedder::Lexical { dimensions } => {
                format!("built-in lexical embedding ({dimensions} dimensions)")
            }
            Embedder::Http(h) => format!("embedding model {:?} at {}", h.model, h.url),
        }
    }

    /// The unit vector of `text`. Errors are EIO naming the endpoint.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, SysError> {
        match self {
            // Long texts take milliseconds: off the async workers.
            Embedder::Lexical { dimensions } if text.len() > 4096 => {
                let (text, dimensions) = (text.to_string(), *dimensions);
                tokio::task::spawn_blocking(move || lexical(&text, dimensions))
                    .await
                    .map_err(|e| SysError::io(format!("lexical embedding: {e}")))
            }
            Embedder::Lexical { dimensions } => Ok(lexical(text, *dimensions)),
            Embedder::Http(h) => h.embed(text).await,
        }
    }
}

/// A client of an OpenAI-compatible embeddings endpoint.
pub struct HttpEmbedder {
    /// The full endpoint URL (ends in `/embeddings`).
    pub url: String,
    pub model: String,
    key: Option<String>,
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl HttpEmbedder {
    /// `url` is either the endpoint itself (`…/v1/embeddings`) or the API
    /// base (`…/v1`), to which `/embeddings` is appended.
    pub fn from_config(url: &str, cfg: &MemoryConfig) -> Result<HttpEmbedder, ConfigError> {
        let url = url.trim().trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::NotHttp(url.to_string()));
        }
        let url = if url.ends_with("/embeddings") {
            url.to_string()
        } else {
            format!("{url}/embeddings")
        };
        let model = cfg
            .embeddings_model
            .clone()
            .filter(|m| !m.trim().is_empty())
            .ok_or(ConfigError::NoModel)?;
        // The key is resolved as a provider's is: environment variable or
        // file ($CREDENTIALS_DIRECTORY expanded); never logged.
        let provider: crate::llm::config::ProviderConfig = serde_json::from_value(json!({
            "name": "[memory] embeddings",
            "kind": "openai",
            "api_key_env": cfg.embeddings_api_key_env,
            "api_key_file": cfg.embeddings_api_key_file,
        }))
        .map_err(ConfigError::Credentials)?;
        let key = resolve_api_key(&provider).map_err(ConfigError::Key)?;
        let client =
            client_builder(HTTP_TIMEOUT)
                .build()
                .map_err(|source| ConfigError::Client {
                    url: url.clone(),
                    source,
                })?;
        Ok(HttpEmbedder {
            url,
            model,
            key,
            client,
            policy: RetryPolicy {
                max_retries: 2,
                timeout: Some(HTTP_TIMEOUT),
                ..RetryPolicy::default()
            },
        })
    }

    /// Embeds one text (retrying 429, 5xx and network errors).
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, SysError> {
        let body = json!({"model": self.model, "input": [text]});
        let headers: Vec<(&str, String)> = self
            .key
            .iter()
            .map(|k| ("Authorization", format!("Bearer {k}")))
            .collect();
        let answer = post_json(&self.client, &self.url, &headers, &body, &self.policy)
            .await
            .map_err(|source| EmbedError::Endpoint {
                url: self.url.clone(),
                source,
            })?;
        Ok(
            parse_embedding(&answer).map_err(|source| EmbedError::Answer {
                url: self.url.clone(),
                source,
            })?,
        )
    }
}

/// The first vector of an OpenAI-style answer
/// (`{"data": [{"embedding": [...], "index": 0}]}`), normalised.
pub fn parse_embedding(answer: &Value) -> Result<Vec<f32>, BadAnswer> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or(BadAnswer::NoData)?;
    let item = data
        .iter()
        .find(|d| d.get("index").and_then(Value::as_u64).unwrap_or(0) == 0)
        .ok_or(BadAnswer::EmptyData)?;
    let raw = item
        .get("embedding")
        .and_then(Value::as_array)
        .ok_or(BadAnswer::NoEmbedding)?;
    if raw.is_empty() || raw.len() > MAX_DIMENSIONS {
        return Err(BadAnswer::Dimensions(raw.len()));
    }
    let mut v = Vec::with_capacity(raw.len());
    for x in raw {
        let x = x
            .as_f64()
            .filter(|x| x.is_finite())
            .ok_or(BadAnswer::NotFinite)?;
        v.push(x as f32);
    }
    if !normalize(&mut v) {
        return Err(BadAnswer::Zero);
    }
    Ok(v)
}

/// Scales `v` to unit length; false (and `v` unchanged) for a zero vector.
pub fn normalize(v: &mut [f32]) -> bool {
    let norm = v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if norm == 0.0 || !norm.is_finite() {
        return false;
    }
    for x in v.iter_mut() {
        *x = (f64::from(*x) / norm) as f32;
    }
    true
}

/// Dot product (the cosine similarity of unit vectors).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

// ---- the built-in lexical embedding ---------------------------------------

/// Words too common to say anything about a text.
const STOP_WORDS: &[&str] = &[
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "did", "do", "does", "for", "from",
    "had", "has", "have", "he", "her", "his", "i", "if", "in", "into", "is", "it", "its", "me",
    "my", "of", "on", "or", "our", "she", "so", "than", "that", "the", "their", "them", "then",
    "there", "these", "they", "this", "to", "was", "we", "were", "what", "when", "which", "who",
    "will", "with", "you", "your",
];

/// Feature groups and their weights in the final vector.
const WORD: (u8, f32) = (b'w', 1.0);
const BIGRAM: (u8, f32) = (b'b', 0.5);
const CHARS: (u8, f32) = (b'c', 1.0);

/// Lower-cased alphanumeric runs of `text`.
pub fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// The built-in lexical embedding of `text` (see the module documentation):
/// a unit vector of `dimensions` floats, or the zero vector for a text
/// without any word.
pub fn lexical(text: &str, dimensions: usize) -> Vec<f32> {
    let dimensions = dimensions.max(1);
    let all = words(text);
    let content: Vec<&str> = {
        let c: Vec<&str> = all
            .iter()
            .map(String::as_str)
            .filter(|w| !STOP_WORDS.contains(w))
            .collect();
        // A text of stop words only ("who are you") still has its words.
        if c.is_empty() {
            all.iter().map(String::as_str).collect()
        } else {
            c
        }
    };
    // Features are hashed as they are found (no strings are built).
    let mut unigrams = Vec::with_capacity(content.len());
    let mut bigrams = Vec::with_capacity(content.len());
    let mut grams = Vec::with_capacity(content.len() * 12);
    let mut padded: Vec<char> = Vec::new();
    let mut utf8 = [0u8; 4];
    for (i, w) in content.iter().enumerate() {
        unigrams.push(feature_hash(WORD.0, w));
        if let Some(next) = content.get(i + 1) {
            let mut h = Fnv::new(BIGRAM.0);
            h.write(w.as_bytes());
            h.write(b" ");
            h.write(next.as_bytes());
            bigrams.push(h.finish());
        }
        padded.clear();
        padded.push('<');
        padded.extend(w.chars());
        padded.push('>');
        for n in 3..=5 {
            for window in padded.windows(n) {
                let mut h = Fnv::new(CHARS.0);
                for c in window {
                    h.write(c.encode_utf8(&mut utf8).as_bytes());
                }
                grams.push(h.finish());
            }
        }
    }
    let mut out = vec![0f32; dimensions];
    let mut group = vec![0f32; dimensions];
    for ((_, weight), mut feats) in [(WORD, unigrams), (BIGRAM, bigrams), (CHARS, grams)] {
        group.iter_mut().for_each(|x| *x = 0.0);
        if !hashed_tf(&mut feats, &mut group) {
            continue;
        }
        for (o, g) in out.iter_mut().zip(&group) {
            *o += weight * g;
        }
    }
    normalize(&mut out);
    out
}

/// Adds `sign * (1 + ln tf)` of every distinct feature hash to its bucket
/// and normalises the group; false if it stayed zero. Sorting first makes
/// the order of the float additions, hence the result, deterministic.
fn hashed_tf(feats: &mut [u64], v: &mut [f32]) -> bool {
    feats.sort_unstable();
    for run in feats.chunk_by(|a, b| a == b) {
        let h = run[0];
        let bucket = ((h >> 1) % v.len() as u64) as usize;
        let sign = if h & 1 == 1 { 1.0 } else { -1.0 };
        v[bucket] += sign * (1.0 + (run.len() as f32).ln());
    }
    normalize(v)
}

/// FNV-1a, finished with the splitmix64 mixer (FNV alone spreads short
/// keys poorly in the low bits).
struct Fnv(u64);

impl Fnv {
    fn new(tag: u8) -> Fnv {
        let mut h = Fnv(0xcbf2_9ce4_8422_2325);
        h.write(&[tag]);
        h
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        let mut h = self.0;
        h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^ (h >> 31)
    }
}

/// The hash of one feature of group `tag` (a stable function: stored
/// vectors depend on it).
pub fn feature_hash(tag: u8, feature: &str) -> u64 {
    let mut h = Fnv::new(tag);
    h.write(feature.as_bytes());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cos(a: &str, b: &str) -> f32 {
        dot(&lexical(a, 512), &lexical(b, 512))
    }

    #[test]
    fn lexical_vectors_are_unit_and_deterministic() {
        let v = lexical("The quick brown fox jumps over the lazy dog", 512);
        let n: f32 = v.iter().map(|x| x * x).sum();
        assert!((n - 1.0).abs() < 1e-5, "norm² {n}");
        assert_eq!(
            v,
            lexical("the QUICK brown fox, jumps over the lazy dog!", 512)
        );
        assert!(lexical("   ... ", 64).iter().all(|x| *x == 0.0));
        // Stop words alone still embed.
        assert!(lexical("who are you", 64).iter().any(|x| *x != 0.0));
    }

    #[test]
    fn lexical_similarity_follows_shared_words() {
        let same = cos("rust borrow checker", "the borrow checker of rust");
        let some = cos("rust borrow checker", "python garbage collector checker");
        let none = cos("rust borrow checker", "banana smoothie recipe");
        assert!(same > some && some > none, "{same} {some} {none}");
        assert!(same > 0.7, "{same}");
        assert!(none.abs() < 0.2, "{none}");
        // Word pieces: inflections share character grams.
        assert!(cos("running", "runs") > cos("running", "swimming"));
        // Honest: no synonyms.
        assert!(cos("car", "automobile").abs() < 0.2);
    }

    #[test]
    fn the_scheme_is_pinned() {
        // Stored vectors depend on these values: changing the scheme needs a
        // new LEXICAL_VERSION (the fingerprint keeps old vectors apart).
        assert_eq!(feature_hash(b'w', "ferry"), 0x5856_0429_aaae_9b7b);
        let v = lexical("The ferry leaves at noon", 16);
        let milli: Vec<i32> = v.iter().map(|x| (x * 1000.0).round() as i32).collect();
        assert_eq!(
            milli,
            [
                308, 0, -187, 187, 187, 93, 0, 280, 93, 93, -443, -536, 187, 377, 187, 0
            ]
        );
    }

    #[test]
    fn a_long_text_embeds_quickly() {
        let text = "lorem ipsum dolor sit amet consectetur ".repeat(1700);
        let started = std::time::Instant::now();
        let v = lexical(&text[..65536], 512);
        assert!(v.iter().any(|x| *x != 0.0));
        // Generous: debug builds on a loaded CI machine.
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        eprintln!("64 KiB embedded in {:?}", started.elapsed());
    }

    #[test]
    fn openai_answers_parse_and_normalise() {
        let v = parse_embedding(&json!({"data": [{"index": 0, "embedding": [3.0, 4.0]}]}))
            .expect("parses");
        assert_eq!(v, vec![0.6, 0.8]);
        for bad in [
            json!({}),
            json!({"data": []}),
            json!({"data": [{"embedding": []}]}),
            json!({"data": [{"embedding": [0.0, 0.0]}]}),
            json!({"data": [{"embedding": ["x"]}]}),
        ] {
            assert!(parse_embedding(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn configuration_is_checked() {
        let mut cfg = MemoryConfig::default();
        assert_eq!(
            Embedder::from_config(&cfg).expect("default").fingerprint(),
            "lexical-v1/512"
        );
        cfg.dimensions = 4;
        assert!(Embedder::from_config(&cfg).is_err());
        cfg.dimensions = 512;
        cfg.embeddings_model = Some("m".into());
        assert!(Embedder::from_config(&cfg).is_err(), "model without url");
        cfg.embeddings_url = Some("ftp://x".into());
        assert!(Embedder::from_config(&cfg).is_err(), "not http");
        cfg.embeddings_url = Some("http://127.0.0.1:9/v1/".into());
        let e = Embedder::from_config(&cfg).expect("valid");
        assert_eq!(e.fingerprint(), "http/m@http://127.0.0.1:9/v1/embeddings");
        cfg.embeddings_model = None;
        assert!(Embedder::from_config(&cfg).is_err(), "url without model");
        cfg.embeddings_model = Some("m".into());
        cfg.embeddings_api_key_env = Some("AGENTOS_TEST_SURELY_UNSET_VARIABLE".into());
        let err = Embedder::from_config(&cfg).err().expect("unset variable");
        let err = err.to_string();
        assert!(err.contains("AGENTOS_TEST_SURELY_UNSET_VARIABLE"), "{err}");
    }
}
