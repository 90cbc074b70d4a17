//! Recovery and lifecycle of the daemon: agents survive a crash as
//! themselves, timers are durable and fire once, SIGTERM stops gracefully
//! and leaves agents recoverable, SIGHUP reloads the configuration without
//! touching agents, and a restart with 200 live agents brings every one
//! back talking.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::State;
use common::{Daemon, eventually, python_agent, require_root};
use std::time::{Duration, Instant};

fn recovery_agent(d: &Daemon, name: &str, scenario: &str) -> agentos::kernel::pcb::Pcb {
    d.spawn(python_agent(
        name,
        "recovery_agent.py",
        &[scenario],
        Some(&["ipc", "time", "fs"]),
    ))
}

fn sigterm(d: &mut Daemon) -> std::process::ExitStatus {
    let mut child = d.child.take().expect("daemon running");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "agentosd did not stop within 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn timers_fire_in_order_as_inbox_events() {
    if !require_root("timers_fire_in_order_as_inbox_events") {
        return;
    }
    let d = Daemon::start();
    let a = recovery_agent(&d, "timers", "timers");
    let report = d.finish(a.pid, Duration::from_secs(30));
    let got = report["got"].as_array().cloned().unwrap_or_default();
    assert_eq!(got.len(), 2, "{report}");
    assert_eq!(
        (got[0][0].as_str(), got[0][1].as_str()),
        (Some("one"), Some("timer")),
        "{report}"
    );
    assert_eq!(got[1][0], "two", "{report}");
    let (t1, t2) = (
        got[0][2].as_f64().unwrap_or(0.0),
        got[1][2].as_f64().unwrap_or(0.0),
    );
    assert!(
        (0.8..3.0).contains(&t1) && (1.8..4.0).contains(&t2),
        "{report}"
    );
}

#[test]
fn kept_messages_come_back_after_a_crash_until_acknowledged() {
    if !require_root("kept_messages_come_back_after_a_crash_until_acknowledged") {
        return;
    }
    let mut d = Daemon::start();
    let a = recovery_agent(&d, "acker", "acked_inbox");
    d.call(AdminRequest::Send {
        pid: a.pid,
        body: "important".into(),
    })
    .expect("send");
    eventually(Duration::from_secs(20), || {
        d.workspace(a.pid)
            .join("life-0.json")
            .exists()
            .then_some(())
    })
    .expect("the message was received once");
    d.crash();
    d.launch();
    let report = d.finish(a.pid, Duration::from_secs(30));
    assert_eq!(
        report["again"],
        serde_json::json!(["important"]),
        "{report}"
    );
    assert_eq!(report["after_ack"], serde_json::json!([]), "{report}");
    let inbox = d.inbox(a.pid);
    assert!(inbox.is_empty());
}

#[test]
fn an_agents_timers_are_cancelled_when_it_ends() {
    if !require_root("an_agents_timers_are_cancelled_when_it_ends") {
        return;
    }
    let d = Daemon::start();
    let a = recovery_agent(&d, "brief", "schedule_and_exit");
    assert_eq!(
        d.wait(a.pid, Duration::from_secs(30)).code,
        0,
        "{}",
        d.logs(a.pid)
    );
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        d.inbox(a.pid).is_empty(),
        "a timer fired for an agent that had ended"
    );
    assert!(
        d.logs(a.pid).contains("SYS_SCHEDULE"),
        "the timer was never scheduled"
    );
}

#[test]
fn a_timer_due_while_the_daemon_is_down_fires_once_at_start() {
    if !require_root("a_timer_due_while_the_daemon_is_down_fires_once_at_start") {
        return;
    }
    let mut d = Daemon::start();
    let a = recovery_agent(&d, "sleeper", "timer_across_restart");
    eventually(Duration::from_secs(20), || {
        d.workspace(a.pid)
            .join("report.json")
            .exists()
            .then_some(())
    })
    .expect("timer scheduled");
    d.crash();
    std::thread::sleep(Duration::from_secs(3)); // the timer comes due meanwhile
    d.launch();
    let exit = d.wait(a.pid, Duration::from_secs(40));
    assert_eq!(exit.code, 0, "{exit:?}\n{}", d.logs(a.pid));
    let after: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.workspace(a.pid).join("after.json")).expect("after.json"),
    )
    .expect("json");
    assert_eq!(after["recovered"], 1);
    assert_eq!(
        after["got"],
        serde_json::json!([{"body": "wake up after the restart", "kind": "timer"}]),
        "the timer must fire exactly once"
    );
}

#[test]
fn sigterm_stops_gracefully_and_agents_come_back() {
    if !require_root("sigterm_stops_gracefully_and_agents_come_back") {
        return;
    }
    let mut d = Daemon::start();
    let a = recovery_agent(&d, "blocked", "blocked");
    let b = d.spawn_probe("idle", &["sleep", "600000"], &[]);
    eventually(Duration::from_secs(20), || {
        (d.inspect(a.pid).state == State::Blocked).then_some(())
    })
    .expect("agent blocks in RECV_MSG");
    let started = Instant::now();
    let status = sigterm(&mut d);
    assert!(
        status.success(),
        "agentosd exited with {status}:\n{}",
        d.log()
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "shutdown took {:?}",
        started.elapsed()
    );
    // The agents' processes are gone, and they are recovered at the next start.
    d.launch();
    // The blocked call was answered (EINTR) before the agent was stopped,
    // and the journal says so.
    let log = d.logs(a.pid);
    assert!(
        log.lines()
            .any(|l| l.contains("RECV_MSG") && l.contains("EINTR")),
        "{log}"
    );
    for pcb in [&a, &b] {
        let now = eventually(Duration::from_secs(20), || {
            let p = d.inspect(pcb.pid);
            (p.host_pid.is_some() && p.is_live()).then_some(p)
        })
        .unwrap_or_else(|| panic!("agent {} not recovered:\n{}", pcb.pid, d.log()));
        assert_eq!(now.recoveries, 1);
        assert_eq!(now.uid, pcb.uid);
    }
    assert!(d.log().contains("recovered=2"), "{}", d.log());
}

#[test]
fn sighup_reloads_models_without_touching_agents() {
    if !require_root("sighup_reloads_models_without_touching_agents") {
        return;
    }
    let dir = std::env::temp_dir().join(format!("agentos-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let script = dir.join("script.json");
    std::fs::write(
        &script,
        r#"{"default": ["[SYS_CALL::SYS_EXIT] {\"code\": 0}"]}"#,
    )
    .expect("script");
    let config = |models: &[&str]| {
        let mut text = format!(
            "[[providers]]\nname = \"s\"\nkind = \"scripted\"\nscript = \"{}\"\n",
            script.display()
        );
        for m in models {
            text.push_str(&format!("\n[[models]]\nname = \"{m}\"\nprovider = \"s\"\n"));
        }
        std::fs::write(dir.join("agentosd.toml"), text).expect("config");
    };
    config(&["first"]);
    let d = Daemon::start_with(&["--config", &dir.join("agentosd.toml").display().to_string()]);
    let idle = d.spawn_probe("idle", &["sleep", "600000"], &[]);
    let host_pid =
        eventually(Duration::from_secs(10), || d.inspect(idle.pid).host_pid).expect("running");
    let spawn_with = |model: &str| {
        d.call(AdminRequest::Spawn(Box::new(SpawnRequest {
            name: format!("with-{model}"),
            model: Some(model.into()),
            role: Some("exit".into()),
            ..Default::default()
        })))
    };
    let refused = spawn_with("second").expect_err("unknown model");
    assert!(refused.to_string().contains("no model named"), "{refused}");

    config(&["first", "second"]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    let ok = eventually(Duration::from_secs(10), || spawn_with("second").ok())
        .expect("model added by SIGHUP");
    let pid = ok["pid"].as_u64().expect("pid");
    assert_eq!(d.wait(pid, Duration::from_secs(30)).code, 0);

    // A broken file is refused and the running configuration stays.
    std::fs::write(dir.join("agentosd.toml"), "this is = = not toml").expect("write");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(d.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .expect("SIGHUP");
    eventually(Duration::from_secs(10), || {
        d.log().contains("configuration not reloaded").then_some(())
    })
    .expect("bad reload logged");
    assert!(
        spawn_with("second").is_ok(),
        "a bad reload dropped the running models"
    );

    let now = d.inspect(idle.pid);
    assert_eq!(
        (now.state, now.host_pid),
        (State::Running, Some(host_pid)),
        "the reload touched an agent"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn two_hundred_live_agents_all_answer_after_a_crash() {
    if !require_root("two_hundred_live_agents_all_answer_after_a_crash") {
        return;
    }
    let mut d = Daemon::start();
    let pids: Vec<u64> = (0..200)
        .map(|i| d.spawn_probe(&format!("echo{i}"), &["echo"], &["ipc"]).pid)
        .collect();
    d.crash();
    let started = Instant::now();
    d.launch();
    // Each recovered agent must take a message from its inbox over fd 3.
    for &pid in &pids {
        d.call(AdminRequest::Send {
            pid,
            body: "ping".into(),
        })
        .unwrap_or_else(|e| panic!("send to {pid}: {e}"));
    }
    let all_answered = eventually(Duration::from_secs(60), || {
        pids.iter()
            .all(|&pid| d.try_inbox(pid).is_ok_and(|m| m.is_empty()))
            .then_some(())
    });
    let took = started.elapsed();
    let silent: Vec<u64> = pids
        .iter()
        .copied()
        .filter(|&pid| d.try_inbox(pid).map_or(true, |m| !m.is_empty()))
        .collect();
    assert!(
        all_answered.is_some(),
        "{} agents did not answer after recovery: {silent:?}",
        silent.len()
    );
    for &pid in &pids {
        let p = d.inspect(pid);
        assert_eq!(
            (p.state == State::Terminated, p.recoveries),
            (false, 1),
            "agent {pid}: {p:?}"
        );
    }
    eprintln!("200 agents recovered and answering {took:?} after the restart");
}

#[test]
fn the_daemon_restarts_its_agents_when_the_launcher_dies() {
    if !require_root("the_daemon_restarts_its_agents_when_the_launcher_dies") {
        return;
    }
    // Every agent is a child of the launcher server and dies with it; the
    // daemon must not carry on unable to spawn: it exits so that its
    // supervisor restarts it, and the next start recovers the agents.
    let mut d = Daemon::start();
    let a = d.spawn_probe("survivor", &["sleep", "600000"], &[]);
    let host_pid =
        eventually(Duration::from_secs(5), || d.inspect(a.pid).host_pid).expect("agent runs");
    let server = std::fs::read_to_string(format!("/proc/{host_pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit(')').next().map(str::to_string))
        .and_then(|rest| rest.split_whitespace().nth(1).map(str::to_string))
        .and_then(|ppid| ppid.parse::<i32>().ok())
        .expect("parent of the agent's pid 1");
    let comm = std::fs::read_to_string(format!("/proc/{server}/comm")).unwrap_or_default();
    assert!(comm.starts_with("agentos-launche"), "parent is {comm:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the launcher");
    let mut child = d.child.take().expect("daemon running");
    let status = eventually(Duration::from_secs(10), || child.try_wait().ok().flatten())
        .expect("the daemon exits when its launcher dies");
    assert_eq!(status.code(), Some(70), "{}", d.log());
    // Gone, or a zombie waiting for init to reap it.
    let ended = eventually(Duration::from_secs(5), || {
        match std::fs::read_to_string(format!("/proc/{host_pid}/stat")) {
            Err(_) => Some(()),
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .is_some_and(|rest| rest.trim_start().starts_with('Z'))
                .then_some(()),
        }
    });
    assert!(ended.is_some(), "the agent outlived its launcher");
    d.launch();
    let back = eventually(Duration::from_secs(10), || {
        let p = d.inspect(a.pid);
        (p.is_live() && p.host_pid.is_some() && p.recoveries == 1).then_some(p)
    });
    assert!(
        back.is_some(),
        "agent not recovered: {:?}",
        d.inspect(a.pid)
    );
}
