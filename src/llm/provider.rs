//! A configured provider: the wire format, its HTTP client, base URL, API
//! key (resolved once, at construction) and retry policy — or a script.
//!
//! Concurrency and rate limits (`max_concurrency`, `requests_per_minute`,
//! `tokens_per_minute`) are not applied here: they belong to the caller,
//! which schedules inferences across agents.

use super::config::{ProviderConfig, ProviderKind};
use super::http::{self, RetryPolicy, WireFormat};
use super::scripted::ScriptedProvider;
use super::{InferContext, InferRequest, InferResponse, LlmError, anthropic, gemini, openai};
use std::fmt;

/// A provider reached over HTTP (OpenAI, Anthropic or Gemini format).
#[derive(Clone)]
pub struct HttpProvider {
    name: String,
    kind: ProviderKind,
    wire: &'static dyn WireFormat,
    base_url: String,
    api_key: Option<String>,
    client: reqwest::Client,
    policy: RetryPolicy,
}

impl fmt::Debug for HttpProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the key: only whether there is one.
        f.debug_struct("HttpProvider")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl HttpProvider {
    fn new(cfg: &ProviderConfig) -> Result<Self, LlmError> {
        let wire: &'static dyn WireFormat = match cfg.kind {
            ProviderKind::Openai => &openai::OpenAi,
            ProviderKind::Anthropic => &anthropic::Anthropic,
            ProviderKind::Gemini => &gemini::Gemini,
            ProviderKind::Scripted => {
                return Err(LlmError::Config(format!(
                    "provider '{}': a scripted provider has no URL",
                    cfg.name
                )));
            }
        };
        let base_url = http::base(cfg.base_url.as_deref(), wire.default_base_url()).to_string();
        let url = reqwest::Url::parse(&base_url).map_err(|e| {
            LlmError::Config(format!(
                "provider '{}': invalid base_url {base_url:?}: {e}",
                cfg.name
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(LlmError::Config(format!(
                "provider '{}': base_url must be http:// or https://, not {base_url:?}",
                cfg.name
            )));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(LlmError::Config(format!(
                "provider '{}': base_url must not contain credentials (use api_key_env or api_key_file)",
                cfg.name
            )));
        }
        let api_key = http::resolve_api_key(cfg)?;
        if api_key.is_some() && url.scheme() == "http" && !is_loopback(&url) {
            tracing::warn!(
                provider = %cfg.name,
                base_url = %base_url,
                "the API key will be sent in clear text over http://"
            );
        }
        Ok(HttpProvider {
            name: cfg.name.clone(),
            kind: cfg.kind,
            wire,
            base_url,
            api_key,
            client: http::build_client(cfg)?,
            policy: RetryPolicy::from_config(cfg),
        })
    }

    /// One inference in this provider's wire format (with its retries).
    async fn infer(&self, req: &InferRequest) -> Result<InferResponse, LlmError> {
        http::infer(
            self.wire,
            &self.client,
            Some(&self.base_url),
            self.api_key.as_deref(),
            req,
            &self.policy,
        )
        .await
    }
}

fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A configured provider.
#[derive(Debug, Clone)]
pub enum Provider {
    Openai(HttpProvider),
    Anthropic(HttpProvider),
    Gemini(HttpProvider),
    Scripted(ScriptedProvider),
}

impl Provider {
    /// Builds a provider: resolves its API key (once), builds its HTTP
    /// client, or loads and validates its script.
    pub fn from_config(cfg: &ProviderConfig) -> Result<Provider, LlmError> {
        Ok(match cfg.kind {
            ProviderKind::Openai => Provider::Openai(HttpProvider::new(cfg)?),
            ProviderKind::Anthropic => Provider::Anthropic(HttpProvider::new(cfg)?),
            ProviderKind::Gemini => Provider::Gemini(HttpProvider::new(cfg)?),
            ProviderKind::Scripted => {
                let path = cfg.script.as_ref().ok_or_else(|| {
                    LlmError::Config(format!(
                        "provider '{}': kind = \"scripted\" needs `script = \"<file>\"`",
                        cfg.name
                    ))
                })?;
                // The script's errors name the provider, as the others' do.
                let script = ScriptedProvider::load(path).map_err(|e| match e {
                    LlmError::Config(m) => {
                        LlmError::Config(format!("provider '{}': {m}", cfg.name))
                    }
                    other => other,
                })?;
                Provider::Scripted(script.named(cfg.name.clone()))
            }
        })
    }

    /// One inference (with the provider's retries).
    pub async fn infer(
        &self,
        req: &InferRequest,
        ctx: &InferContext,
    ) -> Result<InferResponse, LlmError> {
        match self {
            Provider::Openai(p) | Provider::Anthropic(p) | Provider::Gemini(p) => {
                p.infer(req).await
            }
            Provider::Scripted(s) => s.infer(req, ctx).await,
        }
    }

    /// The configured name.
    pub fn name(&self) -> &str {
        match self {
            Provider::Openai(p) | Provider::Anthropic(p) | Provider::Gemini(p) => &p.name,
            Provider::Scripted(s) => s.name(),
        }
    }

    pub fn kind(&self) -> ProviderKind {
        match self {
            Provider::Openai(_) => ProviderKind::Openai,
            Provider::Anthropic(_) => ProviderKind::Anthropic,
            Provider::Gemini(_) => ProviderKind::Gemini,
            Provider::Scripted(_) => ProviderKind::Scripted,
        }
    }

    /// The base URL in use (None for a scripted provider).
    pub fn base_url(&self) -> Option<&str> {
        self.http().map(|p| p.base_url.as_str())
    }

    /// Whether an API key was configured (never the key itself).
    pub fn has_api_key(&self) -> bool {
        self.http().is_some_and(|p| p.api_key.is_some())
    }

    /// The retry policy (None for a scripted provider).
    pub fn retry_policy(&self) -> Option<&RetryPolicy> {
        self.http().map(|p| &p.policy)
    }

    /// Replaces the retry policy (e.g. fast backoff in tests); no effect on
    /// a scripted provider.
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> Provider {
        match &mut self {
            Provider::Openai(p) | Provider::Anthropic(p) | Provider::Gemini(p) => p.policy = policy,
            Provider::Scripted(_) => {}
        }
        self
    }

    fn http(&self) -> Option<&HttpProvider> {
        match self {
            Provider::Openai(p) | Provider::Anthropic(p) | Provider::Gemini(p) => Some(p),
            Provider::Scripted(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cfg(kind: ProviderKind) -> ProviderConfig {
        ProviderConfig {
            name: "p1".into(),
            kind,
            base_url: None,
            api_key: None,
            api_key_env: None,
            api_key_file: None,
            max_concurrency: 4,
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout_s: 30,
            max_retries: 2,
            script: None,
        }
    }

    /// A request with no messages, and who asks.
    fn empty_request() -> (InferRequest, InferContext) {
        let req = InferRequest {
            model: "m".into(),
            messages: vec![],
            tools: vec![],
            max_tokens: None,
            temperature: None,
            constraint: None,
            ..Default::default()
        };
        let ctx = InferContext {
            pid: 1,
            agent_name: "a".into(),
            turn: 0,
        };
        (req, ctx)
    }

    #[test]
    fn builds_each_kind_with_default_urls() {
        for (kind, url) in [
            (ProviderKind::Openai, "https://api.openai.com/v1"),
            (ProviderKind::Anthropic, "https://api.anthropic.com/v1"),
            (
                ProviderKind::Gemini,
                "https://generativelanguage.googleapis.com/v1beta",
            ),
        ] {
            let p = Provider::from_config(&cfg(kind)).unwrap();
            assert_eq!(p.kind(), kind);
            assert_eq!(p.name(), "p1");
            assert_eq!(p.base_url(), Some(url));
            assert!(!p.has_api_key());
            assert_eq!(p.retry_policy().unwrap().max_retries, 2);
        }
    }

    #[test]
    fn debug_never_prints_the_key() {
        let mut c = cfg(ProviderKind::Anthropic);
        c.api_key = Some("sk-ant-very-secret".into());
        c.base_url = Some("http://127.0.0.1:9/v1/".into());
        let p = Provider::from_config(&c).unwrap();
        assert!(p.has_api_key());
        assert_eq!(p.base_url(), Some("http://127.0.0.1:9/v1"));
        let dbg = format!("{p:?} {p:#?}");
        assert!(!dbg.contains("very-secret"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert!(dbg.contains("127.0.0.1:9"), "{dbg}");
    }

    #[test]
    fn key_is_resolved_at_construction() {
        let mut c = cfg(ProviderKind::Openai);
        c.api_key_env = Some("AGENTOS_TEST_SURELY_UNSET_VARIABLE_4712".into());
        let err = Provider::from_config(&c).unwrap_err();
        assert!(
            matches!(&err, LlmError::Config(m) if m.contains("AGENTOS_TEST_SURELY_UNSET_VARIABLE_4712")),
            "{err:?}"
        );
    }

    #[test]
    fn bad_base_urls_are_rejected() {
        for bad in [
            "ftp://example.com/v1",
            "not a url",
            "http://user:pw@127.0.0.1/v1",
        ] {
            let mut c = cfg(ProviderKind::Openai);
            c.base_url = Some(bad.into());
            assert!(
                matches!(Provider::from_config(&c), Err(LlmError::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn scripted_needs_a_script() {
        let err = Provider::from_config(&cfg(ProviderKind::Scripted)).unwrap_err();
        assert!(matches!(&err, LlmError::Config(m) if m.contains("script")));
        let dir = std::env::temp_dir().join(format!("agentos-prov-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.json");
        std::fs::write(&path, r#"{"default": ["hello"]}"#).unwrap();
        let mut c = cfg(ProviderKind::Scripted);
        c.script = Some(path);
        let p = Provider::from_config(&c).unwrap();
        assert_eq!(p.kind(), ProviderKind::Scripted);
        assert_eq!(p.name(), "p1");
        assert_eq!(p.base_url(), None);
        assert!(p.retry_policy().is_none());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let (req, ctx) = empty_request();
        let r = rt.block_on(p.infer(&req, &ctx)).unwrap();
        assert_eq!(r.content, "hello");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn provider_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Provider>();
        fn assert_send<T: Send>(_: &T) {}
        let p = Provider::from_config(&cfg(ProviderKind::Openai)).unwrap();
        let (req, ctx) = empty_request();
        // The future is never polled: no traffic.
        assert_send(&p.infer(&req, &ctx));
    }
}
