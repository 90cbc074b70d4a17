//! Latency summaries: percentiles, mean, min and max of nanosecond samples,
//! reported in microseconds.

use serde_json::{Value, json};

/// A summary of latency samples, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub n: usize,
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
}

impl Summary {
    /// Summarises samples given in nanoseconds.
    pub fn of_ns(samples: &[u64]) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        let mut s = samples.to_vec();
        s.sort_unstable();
        let pct = |p: f64| {
            // Nearest rank: the smallest sample with at least p of the
            // samples at or below it.
            let rank = ((p * s.len() as f64).ceil() as usize).clamp(1, s.len());
            s[rank - 1] as f64 / 1000.0
        };
        Summary {
            n: s.len(),
            p50: pct(0.50),
            p99: pct(0.99),
            mean: s.iter().map(|&x| x as f64).sum::<f64>() / s.len() as f64 / 1000.0,
            min: s[0] as f64 / 1000.0,
            max: s[s.len() - 1] as f64 / 1000.0,
        }
    }

    pub fn json(&self) -> Value {
        json!({
            "n": self.n,
            "p50_us": round(self.p50),
            "p99_us": round(self.p99),
            "mean_us": round(self.mean),
            "min_us": round(self.min),
            "max_us": round(self.max),
        })
    }

    /// "p50 1.23 ms / p99 4.56 ms (mean 2.00 ms, n 200)"
    pub fn text(&self) -> String {
        format!(
            "p50 {} / p99 {} (mean {}, n {})",
            dur(self.p50),
            dur(self.p99),
            dur(self.mean),
            self.n
        )
    }
}

/// Rounds to three decimals for the JSON output.
pub fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// A duration given in microseconds, in a readable unit.
pub fn dur(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1_000_000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.1} µs")
    }
}

/// Ratio a/b, or None when b is zero.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}
