//! Attack 3 of issue 17 against a real daemon: an agent's own writes to
//! /workspace and its EXEC_CMD writes (sandbox and Docker) stop at the
//! workspace quota with EDQUOT, inside the sandbox.

mod common;

use agentos::admin::protocol::SpawnRequest;
use agentos::kernel::pcb::LimitsPatch;
use common::{Daemon, python_agent, require_root};
use serde_json::{Value, json};
use std::time::Duration;

const MIB: u64 = 1 << 20;

fn limits(bytes: u64) -> Option<LimitsPatch> {
    Some(LimitsPatch {
        workspace_bytes: Some(bytes),
        ..Default::default()
    })
}

#[test]
fn direct_and_exec_writes_stop_at_the_workspace_quota() {
    if !require_root("direct_and_exec_writes_stop_at_the_workspace_quota") {
        return;
    }
    let d = Daemon::start();
    // The agent itself.
    let req = SpawnRequest {
        limits: limits(MIB),
        ..python_agent(
            "filler",
            "quota_fill.py",
            &["file", "/workspace", "--report", "/workspace/report.json"],
            None,
        )
    };
    let pcb = d.spawn(req);
    let report = d.finish(pcb.pid, Duration::from_secs(60));
    assert_eq!(report["error"], "EDQUOT", "{report}");
    let written = report["written"].as_u64().unwrap_or(0);
    assert!(written > 0 && written <= MIB, "{report}");

    // A subvolume of its own does not help.
    let req = SpawnRequest {
        limits: limits(MIB),
        ..python_agent(
            "nester",
            "quota_fill.py",
            &["nested", "/workspace", "--report", "/workspace/report.json"],
            None,
        )
    };
    let pcb = d.spawn(req);
    let report = d.finish(pcb.pid, Duration::from_secs(60));
    assert_eq!(
        (report["setup_error"].clone(), report["error"].clone()),
        (Value::Null, json!("EDQUOT")),
        "{report}"
    );
    assert!(report["written"].as_u64().unwrap_or(0) <= MIB, "{report}");

    // EXEC_CMD in the sandbox.
    // (The file is removed afterwards so that the agent can write its report.)
    let calls = json!([{"cmd": "dd if=/dev/zero of=/workspace/big bs=64k count=100; stat -c %s /workspace/big; rm -f /workspace/big; sync", "timeout_s": 30}]).to_string();
    let req = SpawnRequest {
        limits: limits(MIB),
        ..python_agent("exec-filler", "exec_run.py", &[&calls], Some(&["EXEC_CMD"]))
    };
    let pcb = d.spawn(req);
    let report = d.finish(pcb.pid, Duration::from_secs(60));
    let r = &report["results"][0];
    let stderr = r["result"]["stderr"].as_str().unwrap_or("");
    assert!(stderr.contains("Disk quota exceeded"), "{r}");
    let size: u64 = r["result"]["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(
        size > 0 && size <= MIB,
        "{size} bytes through EXEC_CMD: {r}"
    );
    eprintln!(
        "{}",
        d.log()
            .lines()
            .find(|l| l.contains("workspace quotas"))
            .unwrap_or("")
    );
}

#[test]
fn docker_exec_writes_stop_at_the_workspace_quota() {
    if !require_root("docker_exec_writes_stop_at_the_workspace_quota") {
        return;
    }
    let Ok(sock) = std::env::var("AGENTOS_TEST_DOCKER_SOCK") else {
        eprintln!("\n!!!!! SKIPPED: set AGENTOS_TEST_DOCKER_SOCK (see .ci/run) !!!!!\n");
        return;
    };
    let image = std::env::var("AGENTOS_TEST_DOCKER_IMAGE")
        .unwrap_or_else(|_| "agentos-busybox:test".into());
    let path = std::env::temp_dir().join(format!("agentos-quota-e2e-{}.toml", std::process::id()));
    std::fs::write(
        &path,
        format!("[webhooks]\nlisten = \"off\"\n[exec]\ndocker_socket = {sock:?}\ndocker_image = {image:?}\n"),
    )
    .expect("config");
    let d = Daemon::start_with(&["--config", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    let calls = json!([{"cmd": "dd if=/dev/zero of=/workspace/big bs=65536 count=100; stat -c %s /workspace/big; rm -f /workspace/big; sync", "timeout_s": 60, "driver": "docker"}]).to_string();
    let req = SpawnRequest {
        limits: limits(MIB),
        ..python_agent(
            "docker-filler",
            "exec_run.py",
            &[&calls],
            Some(&["EXEC_CMD"]),
        )
    };
    let pcb = d.spawn(req);
    let report = d.finish(pcb.pid, Duration::from_secs(120));
    let r = &report["results"][0];
    let stderr = r["result"]["stderr"].as_str().unwrap_or("");
    assert!(stderr.contains("quota exceeded"), "{r}");
    let size: u64 = r["result"]["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0);
    assert!(size > 0 && size <= MIB, "{size} bytes through docker: {r}");
}
