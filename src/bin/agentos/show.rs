//! What `agentos` prints for people: the tables of `ps`, `tree`, `top`
//! and `status`, and the times and names in them.

use agentos::kernel::pcb::{Pcb, State, now_ms};
use serde_json::Value;

pub(super) fn fmt_time(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}

pub(super) fn fmt_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, (s / 60) % 60),
        _ => format!("{}d{:02}h", s / 86400, (s / 3600) % 24),
    }
}

fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| uid.to_string())
}

pub(super) fn print_ps(pcbs: &[Pcb]) {
    println!(
        "{:>6} {:>6} {:<20} {:<10} {:>8} {:<10} {:>8} {:>9} {:>5}",
        "PID", "PPID", "NAME", "STATE", "UID", "OWNER", "UPTIME", "SYSCALLS", "RECOV"
    );
    let now = now_ms();
    for p in pcbs {
        let up = match (p.started_ms, p.ended_ms) {
            (Some(s), Some(e)) => fmt_duration(e.saturating_sub(s)),
            (Some(s), None) => fmt_duration(now.saturating_sub(s)),
            _ => "-".into(),
        };
        println!(
            "{:>6} {:>6} {:<20} {:<10} {:>8} {:<10} {:>8} {:>9} {:>5}",
            p.pid,
            p.ppid,
            truncate(&p.name, 20),
            p.state.as_str(),
            p.uid,
            truncate(&user_name(p.owner), 10),
            up,
            p.counters.syscalls,
            p.recoveries
        );
    }
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(['…']).collect()
    }
}

pub(super) fn print_tree(nodes: &[Value], all: bool) {
    let live = |n: &Value| all || n["state"].as_str() != Some(State::Terminated.as_str());
    fn walk(nodes: &[Value], parent: u64, prefix: &str, live: &dyn Fn(&Value) -> bool) {
        let kids: Vec<&Value> = nodes
            .iter()
            .filter(|n| n["ppid"].as_u64() == Some(parent) && live(n))
            .collect();
        for (i, n) in kids.iter().enumerate() {
            let last = i + 1 == kids.len();
            println!(
                "{prefix}{}{} {} [{}]",
                if last { "└─ " } else { "├─ " },
                n["pid"],
                n["name"].as_str().unwrap_or(""),
                n["state"].as_str().unwrap_or("")
            );
            let next = format!("{prefix}{}", if last { "   " } else { "│  " });
            walk(nodes, n["pid"].as_u64().unwrap_or(0), &next, live);
        }
    }
    // Roots: spawned by an admin, or whose parent is not listed.
    let pids: std::collections::HashSet<u64> =
        nodes.iter().filter_map(|n| n["pid"].as_u64()).collect();
    for n in nodes.iter().filter(|n| live(n)) {
        let ppid = n["ppid"].as_u64().unwrap_or(0);
        if ppid == 0 || !pids.contains(&ppid) {
            println!(
                "{} {} [{}]",
                n["pid"],
                n["name"].as_str().unwrap_or(""),
                n["state"].as_str().unwrap_or("")
            );
            walk(nodes, n["pid"].as_u64().unwrap_or(0), "", &live);
        }
    }
}

pub(super) fn print_top(v: &Value) {
    let s = &v["scheduler"];
    println!(
        "inference: {} of {} slots busy, {} waiting",
        s["in_flight"], s["max_concurrency"], s["waiting"]
    );
    for p in s["providers"].as_array().into_iter().flatten() {
        println!(
            "  provider {:<12} in flight {:>3}  waiting {:>3}  requests {:>7}  tokens {:>10}  avg wait {} ms",
            p["name"].as_str().unwrap_or(""),
            p["in_flight"],
            p["waiting"],
            p["requests"],
            p["tokens"],
            p["avg_wait_ms"]
        );
    }
    println!(
        "\n{:>6} {:<16} {:<10} {:<14} {:>9} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>9} {:>5}",
        "PID",
        "NAME",
        "STATE",
        "MODEL",
        "TOK IN",
        "TOK OUT",
        "LLM",
        "SYSCALLS",
        "WAIT ms",
        "MEM MiB",
        "TREE MiB",
        "PIDS/TREE",
        "DESC"
    );
    for a in v["agents"].as_array().into_iter().flatten() {
        let Ok(p) = serde_json::from_value::<Pcb>(a.clone()) else {
            continue;
        };
        let u = &a["usage"];
        let mib = |x: &Value| format!("{:.1}", x.as_u64().unwrap_or(0) as f64 / 1048576.0);
        println!(
            "{:>6} {:<16} {:<10} {:<14} {:>9} {:>9} {:>6} {:>9} {:>8} {:>8} {:>8} {:>9} {:>5}",
            p.pid,
            truncate(&p.name, 16),
            p.state.as_str(),
            truncate(p.model.as_deref().unwrap_or("-"), 14),
            p.counters.tokens_in,
            p.counters.tokens_out,
            p.counters.llm_calls,
            p.counters.syscalls,
            p.counters.llm_wait_ms,
            mib(&u["own"]["memory_bytes"]),
            mib(&u["tree"]["memory_bytes"]),
            format!(
                "{}/{}",
                u["own"]["pids"].as_u64().unwrap_or(0),
                u["tree"]["pids"].as_u64().unwrap_or(0)
            ),
            u["descendants"].as_u64().unwrap_or(0)
        );
    }
}

pub(super) fn print_status(v: &Value) {
    let k = &v["kernel"];
    println!(
        "agentosd {} (pid {}), up {}",
        v["version"].as_str().unwrap_or("?"),
        v["daemon_pid"],
        fmt_duration(v["uptime_s"].as_u64().unwrap_or(0) * 1000)
    );
    println!(
        "agents:      {} live, {} total",
        v["agents_live"], v["agents_total"]
    );
    println!("state dir:   {}", v["state_dir"].as_str().unwrap_or("?"));
    println!("uid range:   {}", v["uid_range"].as_str().unwrap_or("?"));
    println!("kernel:      {}", k["kernel"].as_str().unwrap_or("?"));
    println!("landlock:    ABI {}", k["landlock_abi"]);
    println!(
        "seccomp:     {}",
        if k["seccomp_filter"].as_bool() == Some(true) {
            "filter mode available"
        } else {
            "UNAVAILABLE"
        }
    );
    println!("cgroups:     {}", k["cgroup"].as_str().unwrap_or("?"));
    let ns: Vec<&str> = k["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .collect();
    println!("namespaces:  {}", ns.join(" "));
    let profiles: Vec<&str> = v["profiles"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str())
        .collect();
    println!("profiles:    {}", profiles.join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_duration(5_000), "5s");
        assert_eq!(fmt_duration(125_000), "2m05s");
        assert_eq!(fmt_duration(7_200_000), "2h00m");
    }
}
