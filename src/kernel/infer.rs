//! LLM_INFER and AGENT_INFO. Inference is performed by the daemon — the
//! agent sends messages, the daemon picks the provider of the agent's model,
//! waits for a scheduler slot, calls the provider (API keys never enter a
//! sandbox), charges the tokens to the agent's budget and answers with the
//! model's reply.
//!
//! The handlers follow the syscall convention of [`crate::kernel::syscalls`].

use super::Kernel;
use super::pcb::Pcb;
use super::scheduler::{ProviderLimits, Scheduler};
use crate::abi::calls::{Call, InferArgs};
use crate::abi::wire::typed_args;
use crate::abi::{Errno, SysError};
use crate::config::FileConfig;
use crate::llm::config::ModelConfig;
use crate::llm::provider::Provider;
use crate::llm::{InferContext, InferRequest, LlmError};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Providers, models and the scheduler.
pub struct Inference {
    pub models: BTreeMap<String, ModelConfig>,
    pub providers: HashMap<String, Provider>,
    pub scheduler: Arc<Scheduler>,
    /// The time slice: one inference, retries included.
    pub timeout: Duration,
    pub default_model: Option<String>,
    /// The built-in agent runtime (the program of `--model/--role` agents).
    pub runtime: PathBuf,
}

impl Inference {
    /// Builds providers (resolving their keys) from the configuration.
    pub fn from_config(cfg: &FileConfig, runtime: PathBuf) -> Result<Inference, LlmError> {
        let mut providers = HashMap::new();
        let mut limits = Vec::new();
        for p in &cfg.providers {
            providers.insert(p.name.clone(), Provider::from_config(p)?);
            limits.push((
                p.name.clone(),
                ProviderLimits {
                    max_concurrency: p.max_concurrency,
                    requests_per_minute: p.requests_per_minute,
                    tokens_per_minute: p.tokens_per_minute,
                },
            ));
        }
        Ok(Inference {
            models: cfg
                .models
                .iter()
                .map(|m| (m.name.clone(), m.clone()))
                .collect(),
            providers,
            scheduler: Scheduler::new(cfg.scheduler.max_concurrency, &limits),
            timeout: Duration::from_secs(cfg.scheduler.inference_timeout_s),
            default_model: cfg.scheduler.default_model.clone(),
            runtime,
        })
    }

    pub fn model(&self, name: &str) -> Result<&ModelConfig, SysError> {
        self.models.get(name).ok_or_else(|| {
            SysError::inval(format!(
                "no model named {name:?} (configured: {})",
                self.models.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

/// Estimated tokens of a text for a model.
pub fn estimate_tokens(chars: usize, model: &ModelConfig) -> u64 {
    (chars as f64 / model.chars_per_token).ceil() as u64
}

fn llm_error(e: LlmError, provider: &str) -> SysError {
    let code = match &e {
        LlmError::RateLimited { .. } => Errno::EAGAIN,
        LlmError::Timeout(_) => Errno::ETIMEDOUT,
        LlmError::BadRequest(_) => Errno::EINVAL,
        LlmError::Transient(_)
        | LlmError::Auth(_)
        | LlmError::Protocol(_)
        | LlmError::Config(_) => Errno::EIO,
    };
    SysError::new(code, format!("provider {provider}: {e}"))
}

/// LLM_INFER.
pub async fn llm_infer(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let a: InferArgs = typed_args("LLM_INFER", args)?;
    let inf = k.inference();
    let name = a
        .model
        .clone()
        .or_else(|| pcb.model.clone())
        .ok_or_else(|| {
            SysError::inval("LLM_INFER needs a model: this agent has none; name one it may use")
        })?;
    if pcb.model.as_deref() != Some(name.as_str()) && !pcb.models.contains(&name) {
        return Err(SysError::acces(format!(
            "agent {} may not use model {name:?}",
            pcb.pid
        )));
    }
    let model = inf.model(&name)?.clone();
    let provider = inf
        .providers
        .get(&model.provider)
        .ok_or_else(|| SysError::io(format!("provider {} is not available", model.provider)))?;
    if a.messages.is_empty() {
        return Err(SysError::inval(
            "bad arguments for LLM_INFER: messages is empty",
        ));
    }

    // Budget: refuse once spent; never let one reply overshoot it.
    let live = k.table.get(pcb.pid).unwrap_or_else(|| pcb.clone());
    let chars: usize = a.messages.iter().map(|m| m.content.len()).sum::<usize>()
        + a.tools
            .iter()
            .map(|t| t.description.len() + t.parameters.to_string().len())
            .sum::<usize>();
    let prompt_estimate = estimate_tokens(chars, &model);
    let mut max_tokens = a
        .max_tokens
        .unwrap_or(model.max_tokens)
        .min(model.max_tokens);
    let turns = pcb.limits.max_turns;
    if turns > 0 && live.counters.llm_calls >= turns {
        return Err(SysError::quota(format!(
            "turn limit of {turns} inferences reached"
        )));
    }
    let budget = live.limits.budget_tokens;
    if let Some(remaining) = live.tokens_remaining() {
        if remaining <= prompt_estimate {
            let c = &live.counters;
            return Err(SysError::quota(format!(
                "token budget of {budget} exhausted ({} used by this agent, {} by its ended children, {} lent to live children; the prompt alone needs ~{prompt_estimate})",
                c.tokens_own(),
                c.tokens_children,
                c.tokens_lent
            )));
        }
        max_tokens = max_tokens.min((remaining - prompt_estimate).min(u32::MAX as u64) as u32);
    }

    let req = InferRequest {
        model: model.provider_model().to_string(),
        messages: a.messages,
        tools: a.tools,
        max_tokens: Some(max_tokens),
        temperature: a.temperature.or(model.temperature),
        constraint: a.constraint,
        top_p: model.top_p,
        seed: model.seed,
        stop: model.stop.clone(),
    };
    let ctx = InferContext {
        pid: pcb.pid,
        agent_name: pcb.name.clone(),
        turn: live.counters.llm_calls,
    };
    let live_handle = k.live.get(pcb.pid);
    let estimate = prompt_estimate + u64::from(max_tokens) / 2;

    let run = async {
        let grant = inf
            .scheduler
            .acquire(&model.provider, pcb.pid, pcb.priority, estimate)
            .await;
        let waited = grant.queued.elapsed();
        inf.scheduler.record_wait(&model.provider, waited);
        let called = std::time::Instant::now();
        let result = tokio::time::timeout(inf.timeout, provider.infer(&req, &ctx)).await;
        super::metrics::Metrics::add(
            &k.metrics.llm_latency_us,
            called.elapsed().as_micros() as u64,
        );
        let result = match result {
            Ok(r) => r,
            Err(_) => Err(LlmError::Timeout(inf.timeout)),
        };
        match &result {
            Ok(resp) => grant.complete(resp.usage.total()),
            Err(_) => drop(grant),
        }
        (result, waited)
    };
    let (result, waited) = match &live_handle {
        Some(l) => {
            let killed = l.dying.notified();
            tokio::select! {
                r = run => r,
                _ = killed => return Err(SysError::intr("LLM_INFER interrupted: the agent is being killed")),
            }
        }
        None => run.await,
    };
    super::metrics::Metrics::add(&k.metrics.llm_requests, 1);
    super::metrics::Metrics::add(&k.metrics.llm_wait_us, waited.as_micros() as u64);
    let resp = result.map_err(|e| llm_error(e, &model.provider))?;
    let usage = resp.usage;
    // Persisted with the reply (the dispatcher flushes before answering):
    // budgets and the turn count survive a crash.
    let after = k.table.update(pcb.pid, |p| {
        p.counters.tokens_in += usage.prompt_tokens;
        p.counters.tokens_out += usage.completion_tokens;
        p.counters.llm_calls += 1;
        p.counters.llm_wait_ms += waited.as_millis() as u64;
    })?;
    Ok(json!({
        "content": resp.content,
        "tool_calls": resp.tool_calls,
        "usage": usage,
        "finish_reason": resp.finish_reason,
        "model": name,
        "queue_ms": waited.as_millis() as u64,
        "budget_remaining": after.as_ref().and_then(Pcb::tokens_remaining),
    }))
}

/// What the built-in runtime needs to know about itself; with
/// `{"history": true}` also its turns so far (to rebuild its context
/// after a restart).
pub fn agent_info(k: &Arc<Kernel>, pcb: &Pcb, args: &Value) -> Result<Value, SysError> {
    let history = if args.get("history").and_then(Value::as_bool) == Some(true) {
        let turns: Vec<(u64, Value)> =
            k.store
                .range(&k.store.trees.turns, pcb.pid, None, usize::MAX)?;
        Some(turns.into_iter().map(|(_, t)| t).collect::<Vec<_>>())
    } else {
        None
    };
    let inf = k.inference();
    let model = match &pcb.model {
        Some(m) => Some(inf.model(m)?.clone()),
        None => None,
    };
    // What EXEC_CMD can run on here (the runtime offers only these).
    let exec_drivers: Vec<&str> = std::iter::once("sandbox")
        .chain(
            k.config
                .file
                .exec
                .docker_image
                .is_some()
                .then_some("docker"),
        )
        .collect();
    let permitted: Vec<&str> = pcb
        .permissions
        .iter()
        .chain([Call::GETPID, Call::SYS_EXIT].iter())
        .map(|c| c.name())
        .collect();
    Ok(json!({
        "pid": pcb.pid,
        "ppid": pcb.ppid,
        "name": pcb.name,
        "role": pcb.role,
        "model": model,
        "permissions": permitted,
        "limits": pcb.limits,
        "exec": {"drivers": exec_drivers},
        "tokens_used": pcb.counters.tokens_own(),
        "budget_remaining": pcb.tokens_remaining(),
        "llm_calls": pcb.counters.llm_calls,
        "recoveries": pcb.recoveries,
        "history": history,
    }))
}
