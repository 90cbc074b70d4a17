//! The inference scheduler. LLM inference is the scarce
//! resource: a request needs a global slot and a slot of its provider, and
//! the provider's request and token rate limits must allow it.
//!
//! Waiting requests are served by start-time fair queuing over tokens: each
//! agent's requests get virtual start tags `max(V, F_agent)`, where `F_agent`
//! advances by `tokens / weight` per request, and the smallest tag goes
//! first. A request is charged its estimate when it starts and corrected to
//! the tokens the provider reported when it ends, so a chatty agent cannot
//! starve the others and weights 2:1 give token shares 2:1.

use super::pcb::Pid;
use serde::Serialize;
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Limits of one provider.
#[derive(Debug, Clone, Copy)]
pub struct ProviderLimits {
    pub max_concurrency: usize,
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u64>,
}

/// A token bucket refilled continuously at `per_minute / 60` per second,
/// holding at most five seconds' worth (the burst).
#[derive(Debug)]
struct Bucket {
    per_second: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

/// Seconds of rate a bucket may save up.
const BURST_SECONDS: f64 = 5.0;

impl Bucket {
    fn new(per_minute: f64) -> Self {
        let per_second = per_minute / 60.0;
        let capacity = (per_second * BURST_SECONDS).max(1.0);
        Bucket {
            per_second,
            capacity,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let add = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + add).min(self.capacity);
        self.last = now;
    }

    /// Time until `amount` is available (zero if it is now).
    fn wait_for(&mut self, amount: f64) -> Duration {
        self.refill();
        let amount = amount.min(self.capacity);
        if self.tokens >= amount {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((amount - self.tokens) / self.per_second)
        }
    }
}

struct Waiter {
    start_tag: f64,
    seq: u64,
    pid: Pid,
    weight: f64,
    estimate: u64,
    queued: Instant,
    tx: oneshot::Sender<Grant>,
}

impl PartialEq for Waiter {
    fn eq(&self, o: &Self) -> bool {
        self.seq == o.seq
    }
}
impl Eq for Waiter {}
impl PartialOrd for Waiter {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Waiter {
    /// Reversed: BinaryHeap is a max-heap and we want the smallest tag.
    fn cmp(&self, o: &Self) -> Ordering {
        o.start_tag
            .total_cmp(&self.start_tag)
            .then_with(|| o.seq.cmp(&self.seq))
    }
}

#[derive(Default)]
struct ProviderQueue {
    limits: Option<ProviderLimits>,
    in_flight: usize,
    waiting: BinaryHeap<Waiter>,
    rpm: Option<Bucket>,
    tpm: Option<Bucket>,
    /// A wake-up is scheduled for when the rate limits allow the next start.
    wake_pending: bool,
    requests: u64,
    tokens: u64,
    wait_total_ms: u64,
}

struct State {
    global_free: usize,
    queues: HashMap<String, ProviderQueue>,
    /// System virtual time: the start tag of the request that started last.
    vtime: f64,
    finish: HashMap<Pid, f64>,
    seq: u64,
}

/// Scheduler statistics for `agentos top`.
#[derive(Debug, Clone, Serialize)]
pub struct SchedulerStats {
    pub max_concurrency: usize,
    pub in_flight: usize,
    pub waiting: usize,
    pub providers: Vec<ProviderStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProviderStats {
    pub name: String,
    pub in_flight: usize,
    pub waiting: usize,
    pub requests: u64,
    pub tokens: u64,
    pub avg_wait_ms: u64,
}

pub struct Scheduler {
    max_concurrency: usize,
    state: Mutex<State>,
}

/// Permission to run one inference; releases its slots when dropped.
pub struct Grant {
    sched: Option<Arc<Scheduler>>,
    provider: String,
    pid: Pid,
    weight: f64,
    estimate: u64,
    /// When the request queued.
    pub queued: Instant,
}

impl Grant {
    /// Charges the tokens the provider reported (instead of the estimate).
    pub fn complete(mut self, tokens: u64) {
        if let Some(s) = self.sched.take() {
            s.release(
                &self.provider,
                self.pid,
                self.weight,
                self.estimate,
                Some(tokens),
            );
        }
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(s) = self.sched.take() {
            s.release(&self.provider, self.pid, self.weight, self.estimate, None);
        }
    }
}

impl Scheduler {
    pub fn new(max_concurrency: usize, providers: &[(String, ProviderLimits)]) -> Arc<Self> {
        let queues = providers
            .iter()
            .map(|(name, l)| {
                let q = ProviderQueue {
                    limits: Some(*l),
                    rpm: l.requests_per_minute.map(|r| Bucket::new(r as f64)),
                    tpm: l.tokens_per_minute.map(|t| Bucket::new(t as f64)),
                    ..Default::default()
                };
                (name.clone(), q)
            })
            .collect();
        Arc::new(Scheduler {
            max_concurrency,
            state: Mutex::new(State {
                global_free: max_concurrency,
                queues,
                vtime: 0.0,
                finish: HashMap::new(),
                seq: 0,
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot on `provider` for agent `pid` with `weight`,
    /// expecting to use about `estimate` tokens.
    pub async fn acquire(
        self: &Arc<Self>,
        provider: &str,
        pid: Pid,
        weight: u32,
        estimate: u64,
    ) -> Grant {
        let weight = f64::from(weight.max(1));
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.lock();
            let start = st.vtime.max(st.finish.get(&pid).copied().unwrap_or(0.0));
            st.finish.insert(pid, start + estimate as f64 / weight);
            st.seq += 1;
            let seq = st.seq;
            st.queues
                .entry(provider.to_string())
                .or_default()
                .waiting
                .push(Waiter {
                    start_tag: start,
                    seq,
                    pid,
                    weight,
                    estimate,
                    queued: Instant::now(),
                    tx,
                });
            self.pump(&mut st);
        }
        match rx.await {
            Ok(g) => g,
            // The scheduler never drops a waiter without granting it; if it
            // did, an ungranted request simply runs without a slot.
            Err(_) => Grant {
                sched: None,
                provider: provider.to_string(),
                pid,
                weight,
                estimate,
                queued: Instant::now(),
            },
        }
    }

    /// Starts every waiting request the slots and rate limits allow, the
    /// smallest start tag first.
    fn pump(self: &Arc<Self>, st: &mut State) {
        loop {
            if st.global_free == 0 {
                return;
            }
            let mut best: Option<(String, f64)> = None;
            let mut wakes: Vec<(String, Duration)> = Vec::new();
            for (name, q) in st.queues.iter_mut() {
                let Some(top) = q.waiting.peek() else {
                    continue;
                };
                let cap = q.limits.map(|l| l.max_concurrency).unwrap_or(usize::MAX);
                if q.in_flight >= cap {
                    continue;
                }
                let est = top.estimate as f64;
                let wait = q
                    .rpm
                    .as_mut()
                    .map(|b| b.wait_for(1.0))
                    .unwrap_or_default()
                    .max(q.tpm.as_mut().map(|b| b.wait_for(est)).unwrap_or_default());
                if wait > Duration::ZERO {
                    if !q.wake_pending {
                        q.wake_pending = true;
                        wakes.push((name.clone(), wait));
                    }
                    continue;
                }
                if best.as_ref().is_none_or(|(_, t)| top.start_tag < *t) {
                    best = Some((name.clone(), top.start_tag));
                }
            }
            for (name, wait) in wakes {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let mut st = me.lock();
                    if let Some(q) = st.queues.get_mut(&name) {
                        q.wake_pending = false;
                    }
                    me.pump(&mut st);
                });
            }
            let Some((name, _)) = best else { return };
            let Some(q) = st.queues.get_mut(&name) else {
                return;
            };
            let Some(w) = q.waiting.pop() else { return };
            let grant = Grant {
                sched: Some(self.clone()),
                provider: name.clone(),
                pid: w.pid,
                weight: w.weight,
                estimate: w.estimate,
                queued: w.queued,
            };
            match w.tx.send(grant) {
                Ok(()) => {
                    q.in_flight += 1;
                    q.requests += 1;
                    if let Some(b) = q.rpm.as_mut() {
                        b.tokens -= 1.0;
                    }
                    if let Some(b) = q.tpm.as_mut() {
                        b.tokens -= w.estimate as f64;
                    }
                    st.global_free -= 1;
                    st.vtime = st.vtime.max(w.start_tag);
                }
                Err(mut g) => {
                    // The agent stopped waiting (killed): nothing to release.
                    g.sched = None;
                }
            }
        }
    }

    fn release(
        self: &Arc<Self>,
        provider: &str,
        pid: Pid,
        weight: f64,
        estimate: u64,
        actual: Option<u64>,
    ) {
        let mut st = self.lock();
        if let Some(actual) = actual {
            if weight > 0.0 {
                if let Some(f) = st.finish.get_mut(&pid) {
                    *f += (actual as f64 - estimate as f64) / weight;
                }
            }
        }
        if let Some(q) = st.queues.get_mut(provider) {
            q.in_flight = q.in_flight.saturating_sub(1);
            let used = actual.unwrap_or(estimate);
            q.tokens += used;
            if let (Some(b), Some(actual)) = (q.tpm.as_mut(), actual) {
                b.tokens -= actual as f64 - estimate as f64;
            }
        }
        st.global_free = (st.global_free + 1).min(self.max_concurrency);
        self.pump(&mut st);
    }

    /// Records how long a granted request waited (for `top`).
    pub fn record_wait(&self, provider: &str, waited: Duration) {
        if let Some(q) = self.lock().queues.get_mut(provider) {
            q.wait_total_ms += waited.as_millis() as u64;
        }
    }

    /// Forgets an agent's fair-queuing history (it terminated).
    pub fn forget(&self, pid: Pid) {
        self.lock().finish.remove(&pid);
    }

    pub fn stats(&self) -> SchedulerStats {
        let st = self.lock();
        let mut providers: Vec<ProviderStats> = st
            .queues
            .iter()
            .map(|(name, q)| ProviderStats {
                name: name.clone(),
                in_flight: q.in_flight,
                waiting: q.waiting.len(),
                requests: q.requests,
                tokens: q.tokens,
                avg_wait_ms: q.wait_total_ms.checked_div(q.requests).unwrap_or(0),
            })
            .collect();
        providers.sort_by(|a, b| a.name.cmp(&b.name));
        SchedulerStats {
            max_concurrency: self.max_concurrency,
            in_flight: self.max_concurrency - st.global_free,
            waiting: providers.iter().map(|p| p.waiting).sum(),
            providers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(slots: usize, rpm: Option<u32>) -> ProviderLimits {
        ProviderLimits {
            max_concurrency: slots,
            requests_per_minute: rpm,
            tokens_per_minute: None,
        }
    }

    /// Runs `agents` (pid, weight) each with `backlog` requests always
    /// queued against one slot, for `rounds` grants, and counts grants.
    async fn serve(agents: &[(Pid, u32)], backlog: usize, rounds: usize) -> HashMap<Pid, u64> {
        let s = Scheduler::new(1, &[("p".to_string(), limits(1, None))]);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for &(pid, w) in agents {
            for _ in 0..backlog {
                let (s, tx) = (s.clone(), tx.clone());
                tokio::spawn(async move {
                    loop {
                        let g = s.acquire("p", pid, w, 100).await;
                        if tx.send(pid).is_err() {
                            return;
                        }
                        tokio::task::yield_now().await;
                        g.complete(100);
                    }
                });
            }
        }
        let mut counts = HashMap::new();
        for _ in 0..rounds {
            if let Some(pid) = rx.recv().await {
                *counts.entry(pid).or_insert(0) += 1;
            }
        }
        counts
    }

    #[tokio::test]
    async fn equal_weights_get_equal_shares() {
        let agents: Vec<(Pid, u32)> = (1..=10).map(|p| (p, 1)).collect();
        let counts = serve(&agents, 2, 2000).await;
        for (pid, n) in &counts {
            assert!(
                (180..=220).contains(n),
                "agent {pid} got {n} of 2000: {counts:?}"
            );
        }
    }

    #[tokio::test]
    async fn weights_two_to_one_get_two_to_one() {
        let counts = serve(&[(1, 2), (2, 1)], 2, 3000).await;
        let ratio = counts[&1] as f64 / counts[&2] as f64;
        assert!((1.9..=2.1).contains(&ratio), "{counts:?}");
    }

    #[tokio::test]
    async fn a_slot_is_never_exceeded() {
        let s = Scheduler::new(2, &[("p".to_string(), limits(1, None))]);
        let g1 = s.acquire("p", 1, 1, 10).await;
        let s2 = s.clone();
        let second = tokio::spawn(async move { s2.acquire("p", 2, 1, 10).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !second.is_finished(),
            "a second grant on a one-slot provider"
        );
        assert_eq!(s.stats().waiting, 1);
        drop(g1);
        let g2 = tokio::time::timeout(Duration::from_secs(1), second)
            .await
            .expect("granted after release")
            .expect("task");
        assert_eq!(s.stats().in_flight, 1);
        drop(g2);
        assert_eq!(s.stats().in_flight, 0);
    }

    #[tokio::test]
    async fn the_request_rate_limit_holds() {
        // 120 requests/minute: a burst of 10, then 2 per second.
        let s = Scheduler::new(8, &[("p".to_string(), limits(8, Some(120)))]);
        let started = Instant::now();
        for i in 0..14 {
            s.acquire("p", i, 1, 1).await.complete(1);
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(1800) && took < Duration::from_secs(4),
            "14 requests at 120/min (burst 10) took {took:?}"
        );
    }
}
