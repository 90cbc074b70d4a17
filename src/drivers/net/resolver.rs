//! The HTTP client of NET_FETCH and its name resolver, which refuses names
//! with blocked addresses.

use super::CONNECT_TIMEOUT;
use super::addr::check_addr;
use crate::abi::{Errno, SysError};
use crate::llm::http::error_chain;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

/// A name resolver that refuses any name with a blocked address and hands
/// reqwest only the addresses it checked.
pub struct CheckedResolver {
    pub allow_loopback: bool,
}

/// Why [`CheckedResolver`] gave no addresses.
#[derive(Debug, thiserror::Error)]
enum ResolveError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Failed(String),
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        let allow_loopback = self.allow_loopback;
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| ResolveError::Failed(format!("cannot resolve {host}: {e}")))?
                .collect();
            if addrs.is_empty() {
                return Err(ResolveError::Failed(format!("{host} has no addresses")).into());
            }
            for a in &addrs {
                if let Err(why) = check_addr(a.ip(), allow_loopback) {
                    return Err(ResolveError::Refused(format!(
                        "{host} resolves to {} which is refused: {why}",
                        a.ip()
                    ))
                    .into());
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The shared client for one loopback setting. No redirects (followed by
/// hand), no proxies, no connection pool (every request resolves and
/// checks afresh), no automatic retries.
pub(super) fn client(allow_loopback: bool) -> Result<reqwest::Client, SysError> {
    static CLIENTS: [OnceLock<Result<reqwest::Client, Arc<reqwest::Error>>>; 2] =
        [OnceLock::new(), OnceLock::new()];
    CLIENTS[usize::from(allow_loopback)]
        .get_or_init(|| {
            crate::llm::http::install_crypto_provider();
            reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .retry(reqwest::retry::never())
                .pool_max_idle_per_host(0)
                .connect_timeout(CONNECT_TIMEOUT)
                .user_agent(crate::llm::http::USER_AGENT)
                .dns_resolver(Arc::new(CheckedResolver { allow_loopback }))
                .build()
                .map_err(Arc::new)
        })
        .clone()
        .map_err(|e| {
            SysError::io(format!(
                "cannot build the HTTP client: {}",
                error_chain(e.as_ref())
            ))
        })
}

/// Maps a reqwest error: a refusal by the resolver stays a policy refusal
/// (EACCES), timeouts are ETIMEDOUT, anything else EIO.
pub(super) fn transport_error(e: &reqwest::Error) -> SysError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = src {
        if let Some(r) = s.downcast_ref::<ResolveError>() {
            return match r {
                ResolveError::Refused(m) => SysError::acces(m.clone()),
                ResolveError::Failed(m) => SysError::io(m.clone()),
            };
        }
        src = s.source();
    }
    if e.is_timeout() {
        return SysError::new(Errno::ETIMEDOUT, format!("NET_FETCH: {}", error_chain(e)));
    }
    SysError::io(format!("NET_FETCH: {}", error_chain(e)))
}
