//! The `scheduler` section of agentos-bench: LLM_INFER overhead over
//! calling the same local mock directly (and its provider-code and
//! durable-call parts), throughput of 100 agents over 16 slots at 50 ms per
//! inference, fairness of equal and 2:1 weights.

use crate::daemon::BenchDaemon;
use crate::mock;
use crate::stats::{Summary, dur, ratio, round};
use crate::{
    Ctx, agent_req, aggregate, args, mono_ns, progress, read_result, run_together, spawn, wait_exit,
};
use agentos::admin::protocol::SpawnRequest;
use serde_json::{Value, json};
use std::time::Duration;

pub(crate) fn sec_scheduler(ctx: &Ctx, d: &BenchDaemon) -> Result<Value, String> {
    let s = &ctx.sizes;
    let mut c = d.client()?;
    progress(&format!(
        "scheduler: {} sequential LLM_INFER (mock, 0 ms)",
        s.infer
    ));
    let req = SpawnRequest {
        model: Some("mock0".into()),
        ..agent_req(ctx, "infer", &args(&[&"infer", &s.infer]), &["inference"])
    };
    let pid = spawn(&mut c, req)?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let (_, samples) = read_result(d, pid)?;
    let via = Summary::of_ns(&samples);
    // The same request straight to the mock from the bench, keep-alive.
    let body = json!({"model": "lat0", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 16}).to_string();
    let mut raw = mock::RawClient::connect(ctx.mock.addr).map_err(|e| e.to_string())?;
    let mut direct = Vec::new();
    for i in 0..s.infer + s.infer / 10 {
        let t = mono_ns();
        raw.chat(&body).map_err(|e| e.to_string())?;
        if i >= s.infer / 10 {
            direct.push(mono_ns() - t);
        }
    }
    let direct = Summary::of_ns(&direct);
    let overhead = via.p50 - direct.p50;
    // The daemon's own provider code (reqwest, the OpenAI body and parser)
    // called from the bench, and one durable call (a flush) in the same
    // daemon: the two parts of the overhead that are not the dispatcher.
    let provider = provider_floor(ctx, s.infer)?;
    let pid = spawn(
        &mut c,
        agent_req(
            ctx,
            "durable",
            &args(&[&"send-self", &s.infer.min(500)]),
            &["ipc"],
        ),
    )?;
    wait_exit(d, &mut c, pid, Duration::from_secs(300))?;
    let durable = Summary::of_ns(&read_result(d, pid)?.1);

    // Throughput and equal shares.
    let n = s.sched_agents;
    progress(&format!(
        "scheduler: {n} agents, 16 slots, mock at 50 ms, for {} ms",
        s.sched_ms
    ));
    let mk = |name: String, depth: u32, priority: u32| SpawnRequest {
        model: Some("mock50".into()),
        priority: Some(priority),
        ..agent_req(
            ctx,
            &name,
            &args(&[&"infer-until", &depth]),
            &["inference", "ipc"],
        )
    };
    let together = run_together(
        d,
        (0..n).map(|i| mk(format!("eq{i}"), 1, 1)).collect(),
        s.sched_ms,
    )?;
    let res = &together.results;
    let (done, rate) = aggregate(res, "count");
    let tokens: Vec<f64> = res
        .iter()
        .map(|(h, _)| h.get("tokens").copied().unwrap_or(0) as f64)
        .collect();
    let (tmax, tmin) = (
        tokens.iter().cloned().fold(0.0, f64::max),
        tokens.iter().cloned().fold(f64::INFINITY, f64::min),
    );
    let tsum: f64 = tokens.iter().sum();
    let tsq: f64 = tokens.iter().map(|t| t * t).sum();
    let jain = if tsq > 0.0 {
        tsum * tsum / (tokens.len() as f64 * tsq)
    } else {
        0.0
    };
    let lat: Vec<u64> = res.iter().flat_map(|(_, v)| v.iter().copied()).collect();
    let lat = Summary::of_ns(&lat);
    let ideal = 16.0 / 0.050;

    // Weights 2:1, every agent backlogged (4 requests in flight each).
    let half = n / 2;
    progress(&format!(
        "scheduler: {half} agents of weight 2 and {half} of weight 1, 4 requests in flight each"
    ));
    let reqs = (0..2 * half)
        .map(|i| mk(format!("w{i}"), 4, if i < half { 2 } else { 1 }))
        .collect();
    let wres = run_together(d, reqs, s.sched_ms)?.results;
    let group = |r: std::ops::Range<usize>| -> f64 {
        let len = r.len().max(1) as f64;
        wres[r]
            .iter()
            .map(|(h, _)| h.get("tokens").copied().unwrap_or(0) as f64)
            .sum::<f64>()
            / len
    };
    let (w2, w1) = (group(0..half), group(half..2 * half));
    let wratio = ratio(w2, w1);
    let (_, wrate) = aggregate(&wres, "count");

    ctx.target(
        "scheduler",
        "LLM_INFER overhead over a direct call (p50)",
        format!(
            "{} (via AgentOS {}, direct {})",
            dur(overhead),
            via.text(),
            direct.text()
        ),
        "≤ 200 µs",
        Some(overhead <= 200.0),
        Some(overhead),
    );
    ctx.row(
        "scheduler",
        "  the provider code alone (reqwest → mock), from the bench",
        provider.text(),
    );
    ctx.row(
        "scheduler",
        "  one durable call (SEND_MSG to itself) in this daemon",
        durable.text(),
    );
    ctx.target(
        "scheduler",
        &format!("throughput, {n} agents, 16 slots, 50 ms"),
        format!(
            "{rate:.0}/s = {:.0}% of {ideal:.0}/s (latency {})",
            rate / ideal * 100.0,
            lat.text()
        ),
        "≥ 90% of 320/s",
        Some(rate >= 0.9 * ideal),
        Some(rate),
    );
    ctx.row(
        "scheduler",
        "equal weights: tokens per agent",
        format!(
            "max/min {:.2}, (max-min)/mean {:.1}%, Jain index {jain:.3}",
            ratio(tmax, tmin).unwrap_or(0.0),
            (tmax - tmin) / (tsum / tokens.len().max(1) as f64).max(1e-9) * 100.0
        ),
    );
    ctx.target(
        "scheduler",
        "weights 2:1, token share ratio",
        format!("{:.2} ({wrate:.0}/s in total)", wratio.unwrap_or(0.0)),
        "≈ 2 (1.8-2.2)",
        wratio.map(|r| (1.8..=2.2).contains(&r)),
        wratio,
    );
    Ok(json!({
        "measured": "LLM_INFER from a confined agent (examples/bench-agent) to an OpenAI-compatible mock in the bench (std HTTP/1.1, keep-alive), against the bench calling the mock directly with a raw keep-alive HTTP client. Throughput: closed-loop agents (one request each in flight) over max_concurrency 16, mock latency 50 ms.",
        "infer_via_agentos": via.json(),
        "infer_direct": direct.json(),
        "overhead_p50_us": round(overhead),
        "provider_code_direct": provider.json(),
        "durable_call_same_daemon": durable.json(),
        "throughput": {
            "agents": n,
            "completed": done,
            "per_s": round(rate),
            "ideal_per_s": ideal,
            "fraction_of_ideal": round(rate / ideal),
            "latency": lat.json(),
            "cpu": together.cpu.json(),
        },
        "fairness_equal": {
            "tokens_max": tmax,
            "tokens_min": tmin,
            "max_over_min": ratio(tmax, tmin).map(round),
            "jain_index": round(jain),
        },
        "weights_2_1": {
            "agents_per_group": half,
            "tokens_per_agent_weight2": round(w2),
            "tokens_per_agent_weight1": round(w1),
            "ratio": wratio.map(round),
            "per_s": round(wrate),
        },
        "mock_requests": ctx.mock.requests.load(std::sync::atomic::Ordering::Relaxed),
    }))
}

/// The daemon's OpenAI provider code (`agentos::llm::openai::infer` over
/// the same reqwest client settings) calling the mock from the bench, on a
/// multi-threaded tokio runtime like the daemon's.
fn provider_floor(ctx: &Ctx, n: usize) -> Result<Summary, String> {
    use agentos::llm::{ChatMessage, InferRequest, Role};
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let base = ctx.mock.base_url();
    rt.block_on(async move {
        let client = agentos::llm::http::client_builder(Duration::from_secs(30))
            .build()
            .map_err(|e| e.to_string())?;
        let req = InferRequest {
            model: "lat0".into(),
            messages: vec![ChatMessage::new(Role::User, "Say ok.")],
            tools: Vec::new(),
            max_tokens: Some(16),
            temperature: None,
            constraint: None,
            ..Default::default()
        };
        let policy = agentos::llm::http::RetryPolicy::default();
        let mut v = Vec::new();
        for i in 0..n + n / 10 {
            let t = mono_ns();
            agentos::llm::openai::infer(&client, Some(&base), None, &req, &policy)
                .await
                .map_err(|e| e.to_string())?;
            if i >= n / 10 {
                v.push(mono_ns() - t);
            }
        }
        Ok(Summary::of_ns(&v))
    })
}
