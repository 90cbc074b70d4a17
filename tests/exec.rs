//! EXEC_CMD against real components: the sandbox driver through the real
//! launcher, and the docker driver against the engine CI starts
//! (`AGENTOS_TEST_DOCKER_SOCK`, image `AGENTOS_TEST_DOCKER_IMAGE` or
//! `agentos-busybox:test`, built by `tests/docker-image.sh`). The agent is
//! `tests/agents/exec_run.py`, which runs the calls it is given and reports
//! every reply.

mod common;

use agentos::admin::protocol::SpawnRequest;
use agentos::kernel::pcb::{LimitsPatch, Pcb};
use common::{Daemon, python_agent, require_root};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static CONFIGS: AtomicU32 = AtomicU32::new(0);
/// Config lines every test daemon gets: no webhook listener (parallel
/// daemons would fight over its port).
const QUIET: &str = "[webhooks]\nlisten = \"off\"\n";

/// Starts a daemon with `exec_toml` as the `[exec]` section of its config.
fn daemon(exec_toml: &str) -> Daemon {
    let n = CONFIGS.fetch_add(1, Ordering::SeqCst);
    let path =
        std::env::temp_dir().join(format!("agentos-exec-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&path, format!("{QUIET}[exec]\n{exec_toml}\n")).expect("write config");
    let d = Daemon::start_with(&["--config", &path.display().to_string()]);
    let _ = std::fs::remove_file(&path);
    d
}

/// Spawns exec_run.py with `calls`, waits for it and returns its PCB and the
/// summarised replies (one per call).
fn run_calls(
    d: &Daemon,
    name: &str,
    calls: &[Value],
    permissions: &[&str],
    limits: Option<LimitsPatch>,
) -> (Pcb, Vec<Value>) {
    let calls = Value::Array(calls.to_vec()).to_string();
    let req = SpawnRequest {
        limits,
        ..python_agent(name, "exec_run.py", &[&calls], Some(permissions))
    };
    let pcb = d.spawn(req);
    let report = d.finish(pcb.pid, Duration::from_secs(180));
    let results = report["results"].as_array().cloned().expect("results");
    (pcb, results)
}

/// The result object of a reply that must have succeeded.
fn ok(r: &Value) -> &Value {
    assert_eq!(r["code"], "SUCCESS", "EXEC_CMD failed: {r}");
    &r["result"]
}

fn stdout(r: &Value) -> &str {
    ok(r)["stdout"].as_str().expect("stdout")
}

/// Host processes running as `uid`.
fn processes_of(uid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(status) = std::fs::read_to_string(e.path().join("status")) else {
            continue;
        };
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        };
        if field("Uid:").as_deref() == Some(uid.to_string().as_str()) {
            out.push(format!(
                "{} {}",
                e.file_name().to_string_lossy(),
                field("Name:").unwrap_or_default()
            ));
        }
    }
    out
}

/// cgroup directories `exec-<pid>-*` the daemon left behind.
fn exec_cgroups(d: &Daemon, pid: u64) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];
    while let Some((dir, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if !e.file_type().is_ok_and(|t| t.is_dir()) || depth > 10 {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            // An EXEC_CMD's cgroup nests in its agent's: `.../agent-<pid>/exec-<n>`.
            let in_agent = dir
                .file_name()
                .is_some_and(|n| *n == *format!("agent-{pid}"))
                && dir.to_string_lossy().contains(&d.cgroup_name);
            if in_agent && name.starts_with("exec-") {
                found.push(e.path());
            } else {
                stack.push((e.path(), depth + 1));
            }
        }
    }
    found
}

#[test]
fn sandbox_runs_commands_confined_as_the_agent() {
    if !require_root("sandbox_runs_commands_confined_as_the_agent") {
        return;
    }
    let d = daemon("");
    let state = d.state_dir().display().to_string();
    let agents_dir = common::repo().join("tests/agents").display().to_string();
    let calls = [
        // 0: output, exit code
        json!({"cmd": "echo hello; echo oops >&2; exit 3"}),
        // 1: cwd and the agent's own files
        json!({"cmd": "pwd; cat seed.txt"}),
        // 2: writes land in the workspace, as the agent
        json!({"cmd": "echo made > made.txt; id -u; id -g", "driver": "sandbox"}),
        // 3: no capabilities
        json!({"cmd": "grep -E '^Cap(Eff|Prm|Bnd|Amb|Inh)' /proc/self/status"}),
        // 4: no network: only lo, and no inet socket
        json!({"cmd": "cat /proc/net/dev; readlink /proc/self/ns/net"}),
        json!({"cmd": "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM)' 2>&1; echo rc=$?"}),
        // 6: only the system directories, no host paths
        json!({"cmd": format!(
            "ls /; for p in {state} {agents_dir} /root /home /var /work /run; do test -e $p && echo VISIBLE $p; done; true"
        )}),
        // 7: fd 3 is no syscall socket
        json!({"cmd": "python3 -c '\nimport socket\ntry:\n s = socket.socket(fileno=3)\n s.settimeout(2)\n s.sendall(b\"{}\\n\")\n print(\"reply\", s.recv(4096))\nexcept Exception as e:\n print(\"error\", type(e).__name__)\n'"}),
        // 8: no_new_privs, seccomp, its own pid namespace
        json!({"cmd": "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status; echo pid=$$"}),
        // 9: a bad driver, a bad timeout, a missing cmd
        json!({"cmd": "true", "driver": "host"}),
        json!({"cmd": "true", "timeout_s": 0}),
        json!({"command": "true"}),
    ];
    let (pcb, r) = run_calls(&d, "exec-basic", &calls, &["EXEC_CMD"], None);

    let first = ok(&r[0]);
    assert_eq!(first["stdout"], "hello\n", "{first}");
    assert_eq!(first["stderr"], "oops\n", "{first}");
    assert_eq!(first["exit_code"], 3);
    assert_eq!(first["timed_out"], false);
    assert_eq!(first["truncated"], false);

    assert_eq!(stdout(&r[1]), "/workspace\nseeded by the agent\n");

    assert_eq!(stdout(&r[2]), format!("{}\n{}\n", pcb.uid, pcb.gid));
    let made = d.workspace(pcb.pid).join("made.txt");
    assert_eq!(std::fs::read_to_string(&made).expect("made.txt"), "made\n");
    let meta = std::fs::metadata(&made).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (pcb.uid, pcb.gid));
    assert_ne!(pcb.uid, 0);

    let caps = stdout(&r[3]);
    assert_eq!(caps.lines().count(), 5, "{caps}");
    for line in caps.lines() {
        assert!(
            line.ends_with("0000000000000000"),
            "capability left: {line}"
        );
    }

    let netdev = stdout(&r[4]);
    let daemon_net = std::fs::read_link(format!("/proc/{}/ns/net", d.pid())).expect("ns");
    assert!(
        netdev.contains("net:[") && !netdev.contains(daemon_net.to_string_lossy().as_ref()),
        "the command shares the daemon's network namespace: {netdev}"
    );
    let ifaces: Vec<&str> = netdev
        .lines()
        .skip(2)
        .filter(|l| !l.starts_with("net:["))
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{netdev}");
    let inet = stdout(&r[5]);
    assert!(
        inet.contains("PermissionError") && !inet.contains("rc=0"),
        "an AF_INET socket was created: {inet}"
    );

    let listing = stdout(&r[6]);
    assert!(
        !listing.contains("VISIBLE"),
        "host paths visible: {listing}"
    );
    let allowed = [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib32",
        "lib64",
        "libx32",
        "proc",
        "sbin",
        "tmp",
        "usr",
        "workspace",
    ];
    for entry in listing.lines() {
        assert!(
            allowed.contains(&entry),
            "unexpected /{entry} in:\n{listing}"
        );
    }

    let fd3 = stdout(&r[7]);
    assert!(
        fd3.starts_with("error") || fd3.trim() == "reply b''",
        "fd 3 answered: {fd3}"
    );

    let status = stdout(&r[8]);
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    assert!(status.contains("Seccomp:\t2"), "{status}");
    assert!(status.contains("pid=1\n"), "{status}");

    for bad in &r[9..12] {
        assert_eq!(bad["code"], "EINVAL", "{bad}");
    }

    // Journaled and counted like every call; no cgroup left behind.
    let logs = d.logs(pcb.pid);
    assert!(
        logs.matches("EXEC_CMD").count() >= calls.len(),
        "journal:\n{logs}"
    );
    assert!(d.inspect(pcb.pid).counters.syscalls >= calls.len() as u64);
    assert!(exec_cgroups(&d, pcb.pid).is_empty());

    // Without the permission: EACCES, and nothing runs.
    let (denied, r) = run_calls(
        &d,
        "exec-denied",
        &[json!({"cmd": "touch /workspace/ran"})],
        &["fs"],
        None,
    );
    assert_eq!(r[0]["code"], "EACCES", "{}", r[0]);
    assert!(!d.workspace(denied.pid).join("ran").exists());
    assert_eq!(d.inspect(denied.pid).counters.denied, 1);
}

#[test]
fn sandbox_timeout_kills_the_whole_tree() {
    if !require_root("sandbox_timeout_kills_the_whole_tree") {
        return;
    }
    // max_timeout_s caps what a call asks for.
    let d = daemon("max_timeout_s = 3");
    let calls = [
        json!({"cmd": "sleep 100 & sleep 100", "timeout_s": 2}),
        json!({"cmd": "(setsid sleep 100 &); sleep 100 & wait", "timeout_s": 100000}),
        json!({"cmd": "echo quick", "timeout_s": 2}),
        // The shell's end ends what it left in the background (no timeout).
        json!({"cmd": "sleep 100 & echo started", "timeout_s": 3}),
    ];
    let (pcb, r) = run_calls(&d, "exec-timeout", &calls, &["EXEC_CMD"], None);
    for (i, (want, limit)) in [(true, 2.0), (true, 3.0), (false, 2.0)].iter().enumerate() {
        let res = ok(&r[i]);
        assert_eq!(res["timed_out"], *want, "call {i}: {}", r[i]);
        let elapsed = r[i]["elapsed_s"].as_f64().expect("elapsed");
        assert!(
            elapsed < limit + 5.0,
            "call {i} took {elapsed:.1} s for a limit of {limit} s"
        );
        if *want {
            assert!(elapsed >= limit - 0.5, "call {i} ended early: {elapsed}");
            assert_eq!(res["exit_code"], 137, "{}", r[i]);
        }
    }
    assert_eq!(stdout(&r[2]), "quick\n");
    assert_eq!(stdout(&r[3]), "started\n");
    assert_eq!(ok(&r[3])["timed_out"], false);
    // Nothing of the commands survives: no process of the agent's uid
    // (the agent itself has exited) and no command cgroup.
    let left = common::eventually(Duration::from_secs(5), || {
        let p = processes_of(pcb.uid);
        p.is_empty().then_some(())
    });
    assert!(
        left.is_some(),
        "survivors of uid {}: {:?}",
        pcb.uid,
        processes_of(pcb.uid)
    );
    assert!(
        exec_cgroups(&d, pcb.pid).is_empty(),
        "{:?}",
        exec_cgroups(&d, pcb.pid)
    );
}

#[test]
fn sandbox_output_is_capped_and_limits_apply() {
    if !require_root("sandbox_output_is_capped_and_limits_apply") {
        return;
    }
    let d = daemon("");
    let before = d.rss_kib();
    let calls = [
        json!({"cmd": "head -c 5M /dev/zero"}),
        json!({"cmd": "head -c 300M /dev/zero; head -c 300M /dev/zero >&2; echo done >&2"}),
        json!({"cmd": "head -c 300M /dev/zero | tr '\\0' x"}),
        // The agent's memory limit applies to the command.
        json!({"cmd": "python3 -c 'b = bytearray(256 << 20); print(len(b))'"}),
    ];
    let limits = LimitsPatch {
        memory_bytes: Some(128 << 20),
        ..Default::default()
    };
    let (_pcb, r) = run_calls(&d, "exec-cap", &calls, &["EXEC_CMD"], Some(limits));
    let after = d.rss_kib();

    let first = ok(&r[0]);
    assert_eq!(first["stdout_len"], 1 << 20, "{}", r[0]);
    assert_eq!(first["truncated"], true);
    assert_eq!(first["exit_code"], 0);
    assert_eq!(first["stdout_distinct"], json!(["\u{0}"]));

    let both = ok(&r[1]);
    assert_eq!(both["stdout_len"], 1 << 20);
    assert_eq!(both["stderr_len"], 1 << 20);
    assert_eq!(both["truncated"], true);
    assert_eq!(both["exit_code"], 0, "the command ran to its end: {}", r[1]);

    let x = ok(&r[2]);
    assert_eq!(x["stdout_len"], 1 << 20);
    assert_eq!(x["stdout_distinct"], json!(["x"]));

    let oom = ok(&r[3]);
    assert_eq!(
        oom["exit_code"], 137,
        "256 MiB under a 128 MiB limit: {}",
        r[3]
    );

    // 1.2 GB went through the daemon; it kept about 2 MiB per call.
    assert!(
        after < before + 64 * 1024,
        "daemon RSS grew from {before} KiB to {after} KiB"
    );
}

/// The engine and image CI provides, or None after a loud skip (a
/// failure under CI).
fn docker_env(test: &str) -> Option<(String, String)> {
    if !require_root(test) {
        return None;
    }
    match std::env::var("AGENTOS_TEST_DOCKER_SOCK") {
        Ok(sock) if !sock.is_empty() => {
            let image = std::env::var("AGENTOS_TEST_DOCKER_IMAGE")
                .unwrap_or_else(|_| "agentos-busybox:test".into());
            Some((sock, image))
        }
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!(
                    "{test}: AGENTOS_TEST_DOCKER_SOCK is not set; .ci/run starts dockerd and sets it"
                );
            }
            eprintln!(
                "\n!!!!! SKIPPED {test}: set AGENTOS_TEST_DOCKER_SOCK to a running engine's socket (see .ci/run). !!!!!\n"
            );
            None
        }
    }
}

/// Containers this test's daemon created that still exist.
fn leftover_containers(sock: &str, daemon: &Daemon) -> Vec<String> {
    containers_labelled(sock, &format!("agentos.daemon={}", daemon.pid()))
}

/// Containers with the EXEC_CMD label and `label` (key=value).
fn containers_labelled(sock: &str, label: &str) -> Vec<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let docker = bollard::Docker::connect_with_unix(sock, 30, bollard::API_DEFAULT_VERSION)
            .expect("engine socket");
        let docker = docker.negotiate_version().await.expect("engine answers");
        let filters = HashMap::from([(
            "label".to_string(),
            vec!["agentos.exec=1".to_string(), label.to_string()],
        )]);
        docker
            .list_containers(Some(bollard::query_parameters::ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await
            .expect("list containers")
            .into_iter()
            .map(|c| format!("{:?} {:?}", c.names, c.state))
            .collect()
    })
}

#[test]
fn docker_runs_commands_locked_down_as_the_agent() {
    let Some((sock, image)) = docker_env("docker_runs_commands_locked_down_as_the_agent") else {
        return;
    };
    let d = daemon(&format!(
        "docker_socket = {sock:?}\ndocker_image = {image:?}\nmax_timeout_s = 3"
    ));
    let docker = |cmd: &str| json!({"cmd": cmd, "driver": "docker"});
    let calls = [
        docker("id -u; id -g; pwd"),
        docker("ls /workspace; cat /workspace/seed.txt; echo made > /workspace/from-docker"),
        docker("cat /proc/net/dev"),
        docker("ip link"),
        docker("touch /x; echo rc=$?; touch /tmp/ok && echo tmp-ok"),
        docker("grep -E '^Cap(Eff|Prm|Bnd)' /proc/self/status; grep NoNewPrivs /proc/self/status"),
        docker("echo out; echo err >&2; exit 7"),
        docker("head -c 5242880 /dev/zero"),
        json!({"cmd": "sleep 100 & sleep 100", "driver": "docker", "timeout_s": 60}),
        docker("cat /proc/mounts"),
        docker("ulimit -f; ulimit -n; sleep 100 & echo started"),
    ];
    let (pcb, r) = run_calls(&d, "exec-docker", &calls, &["EXEC_CMD"], None);

    assert_eq!(
        stdout(&r[0]),
        format!("{}\n{}\n/workspace\n", pcb.uid, pcb.gid),
        "{}",
        r[0]
    );

    let ls = stdout(&r[1]);
    assert!(
        ls.contains("seed.txt") && ls.contains("seeded by the agent"),
        "{ls}"
    );
    let made = d.workspace(pcb.pid).join("from-docker");
    let meta = std::fs::metadata(&made).expect("file written in the container");
    assert_eq!((meta.uid(), meta.gid()), (pcb.uid, pcb.gid));

    let net = stdout(&r[2]);
    let ifaces: Vec<&str> = net
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .map(str::trim)
        .collect();
    assert_eq!(ifaces, ["lo"], "{net}");
    let links = stdout(&r[3]);
    assert_eq!(
        links.lines().filter(|l| l.contains("link/")).count(),
        1,
        "ip link shows more than lo: {links}"
    );
    assert!(links.contains("link/loopback"), "{links}");

    let fs = ok(&r[4]);
    assert!(
        fs["stdout"]
            .as_str()
            .is_some_and(|s| s.contains("rc=1") && s.contains("tmp-ok")),
        "{fs}"
    );
    assert!(
        fs["stderr"]
            .as_str()
            .is_some_and(|s| s.contains("Read-only")),
        "{fs}"
    );

    let caps = stdout(&r[5]);
    assert_eq!(
        caps.lines().filter(|l| l.starts_with("Cap")).count(),
        3,
        "{caps}"
    );
    for line in caps.lines().filter(|l| l.starts_with("Cap")) {
        assert!(
            line.ends_with("0000000000000000"),
            "capability left: {line}"
        );
    }
    assert!(caps.contains("NoNewPrivs:\t1"), "{caps}");

    let exit = ok(&r[6]);
    assert_eq!(exit["stdout"], "out\n");
    assert_eq!(exit["stderr"], "err\n");
    assert_eq!(exit["exit_code"], 7);

    let big = ok(&r[7]);
    assert_eq!(big["stdout_len"], 1 << 20, "{}", r[7]["result"]["stderr"]);
    assert_eq!(big["truncated"], true);

    let slow = ok(&r[8]);
    assert_eq!(slow["timed_out"], true, "{}", r[8]);
    let elapsed = r[8]["elapsed_s"].as_f64().expect("elapsed");
    assert!(
        (2.5..15.0).contains(&elapsed),
        "timeout capped at 3 s took {elapsed:.1} s"
    );

    // The workspace is the only host path: no other bind in the container.
    let mounts = stdout(&r[9]);
    let binds: Vec<&str> = mounts
        .lines()
        .filter(|l| {
            let fs = l.split_whitespace().nth(2).unwrap_or("");
            !matches!(
                fs,
                "overlay" | "proc" | "tmpfs" | "devpts" | "mqueue" | "sysfs" | "cgroup" | "cgroup2"
            )
        })
        .collect();
    for b in &binds {
        let target = b.split_whitespace().nth(1).unwrap_or("");
        assert!(
            matches!(
                target,
                "/workspace" | "/etc/resolv.conf" | "/etc/hostname" | "/etc/hosts"
            ),
            "unexpected mount {b}\n{mounts}"
        );
    }

    // The agent's limits; the shell's end ends the container.
    let limits = d.inspect(pcb.pid).limits;
    let ulimits = stdout(&r[10]);
    assert_eq!(
        ulimits,
        format!(
            "{}\n{}\nstarted\n",
            limits.workspace_bytes.max(limits.tmp_bytes) / 512,
            limits.nofile
        ),
        "{}",
        r[10]
    );
    assert!(r[10]["elapsed_s"].as_f64().is_some_and(|e| e < 10.0));

    // Every container is gone, including the timed-out one.
    let left = leftover_containers(&sock, &d);
    assert!(left.is_empty(), "containers left: {left:?}");
    drop(d);

    // An image the engine does not have: EIO, never a pull.
    let d = daemon(&format!(
        "docker_socket = {sock:?}\ndocker_image = \"agentos-no-such-image:none\""
    ));
    let (_, r) = run_calls(&d, "exec-no-image", &[docker("true")], &["EXEC_CMD"], None);
    assert_eq!(r[0]["code"], "EIO", "{}", r[0]);
    assert!(
        r[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("agentos-no-such-image:none")),
        "{}",
        r[0]
    );
    assert!(leftover_containers(&sock, &d).is_empty());
}

/// Kills the agent while its command runs; `gone` says when the command's
/// resources are released.
fn kill_mid_command(d: &Daemon, name: &str, driver: &str, running: impl Fn(&Pcb) -> bool) -> Pcb {
    let calls = [json!({"cmd": "sleep 100 & sleep 100", "timeout_s": 60, "driver": driver})];
    let req = python_agent(
        name,
        "exec_run.py",
        &[&Value::Array(calls.to_vec()).to_string()],
        Some(&["EXEC_CMD"]),
    );
    let pcb = d.spawn(req);
    assert!(
        common::eventually(Duration::from_secs(20), || running(&pcb).then_some(())).is_some(),
        "the command never started:\n{}",
        d.logs(pcb.pid)
    );
    d.call(agentos::admin::protocol::AdminRequest::Kill { pid: pcb.pid })
        .expect("kill");
    let exit = d.wait(pcb.pid, Duration::from_secs(20));
    assert_ne!(exit.code, 0, "{exit:?}");
    pcb
}

#[test]
fn killing_the_agent_ends_its_sandboxed_command() {
    if !require_root("killing_the_agent_ends_its_sandboxed_command") {
        return;
    }
    let d = daemon("");
    let pcb = kill_mid_command(&d, "exec-killed", "sandbox", |p| {
        !exec_cgroups(&d, p.pid).is_empty()
            && processes_of(p.uid)
                .iter()
                .filter(|l| l.ends_with(" sleep"))
                .count()
                == 2
    });
    let released = common::eventually(Duration::from_secs(10), || {
        (exec_cgroups(&d, pcb.pid).is_empty() && processes_of(pcb.uid).is_empty()).then_some(())
    });
    assert!(
        released.is_some(),
        "left: {:?} {:?}",
        exec_cgroups(&d, pcb.pid),
        processes_of(pcb.uid)
    );
    // The journal records the interrupted call.
    assert!(d.logs(pcb.pid).contains("EINTR"), "{}", d.logs(pcb.pid));
}

#[test]
fn killing_the_agent_removes_its_container() {
    let Some((sock, image)) = docker_env("killing_the_agent_removes_its_container") else {
        return;
    };
    let d = daemon(&format!(
        "docker_socket = {sock:?}\ndocker_image = {image:?}"
    ));
    kill_mid_command(&d, "exec-docker-killed", "docker", |_| {
        !leftover_containers(&sock, &d).is_empty()
    });
    let removed = common::eventually(Duration::from_secs(20), || {
        leftover_containers(&sock, &d).is_empty().then_some(())
    });
    assert!(removed.is_some(), "{:?}", leftover_containers(&sock, &d));
}

#[test]
fn containers_left_by_a_crash_are_removed_at_the_next_start() {
    let Some((sock, image)) =
        docker_env("containers_left_by_a_crash_are_removed_at_the_next_start")
    else {
        return;
    };
    // The configuration must outlive the first daemon: the restart reads it.
    let config = std::env::temp_dir().join(format!(
        "agentos-exec-test-{}-sweep.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        format!("{QUIET}[exec]\ndocker_socket = {sock:?}\ndocker_image = {image:?}\n"),
    )
    .expect("write config");
    let mut d = Daemon::start_with(&["--config", &config.display().to_string()]);
    let owner = format!("agentos.state={}", d.state_dir().display());
    let calls = [json!({"cmd": "sleep 1000", "timeout_s": 600, "driver": "docker"})];
    let pcb = d.spawn(python_agent(
        "exec-orphan",
        "exec_run.py",
        &[&Value::Array(calls.to_vec()).to_string()],
        Some(&["EXEC_CMD"]),
    ));
    let running = common::eventually(Duration::from_secs(20), || {
        (!containers_labelled(&sock, &owner).is_empty()).then_some(())
    });
    assert!(running.is_some(), "no container:\n{}", d.logs(pcb.pid));
    // A crash leaves the container running on the engine...
    d.crash();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !containers_labelled(&sock, &owner).is_empty(),
        "the engine removed the container by itself"
    );
    // ...and the next start removes it.
    d.launch();
    let swept = common::eventually(Duration::from_secs(30), || {
        containers_labelled(&sock, &owner).is_empty().then_some(())
    });
    let _ = std::fs::remove_file(&config);
    assert!(
        swept.is_some(),
        "still there: {:?}\n{}",
        containers_labelled(&sock, &owner),
        d.log()
    );
}

#[test]
fn docker_unreachable_or_unconfigured_fails_cleanly() {
    if !require_root("docker_unreachable_or_unconfigured_fails_cleanly") {
        return;
    }
    let marker =
        std::env::temp_dir().join(format!("agentos-exec-ran-on-host-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    let cmd = format!("touch /workspace/ran; touch {}", marker.display());
    let call = json!({"cmd": cmd, "driver": "docker"});

    // An engine that is not there: EIO naming the socket, nothing runs.
    let d = daemon(
        "docker_socket = \"/nonexistent/agentos-test/docker.sock\"\ndocker_image = \"busybox\"",
    );
    let (pcb, r) = run_calls(
        &d,
        "exec-unreachable",
        std::slice::from_ref(&call),
        &["EXEC_CMD"],
        None,
    );
    assert_eq!(r[0]["code"], "EIO", "{}", r[0]);
    let msg = r[0]["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("unreachable") && msg.contains("/nonexistent/agentos-test/docker.sock"),
        "{msg}"
    );
    assert!(!d.workspace(pcb.pid).join("ran").exists());
    assert!(!marker.exists(), "the command ran on the host");
    drop(d);

    // A socket that is not an engine: the same.
    let fake_dir = std::env::temp_dir().join(format!("agentos-exec-fake-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&fake_dir);
    let fake = fake_dir.join("docker.sock");
    let _ = std::fs::remove_file(&fake);
    let listener = std::os::unix::net::UnixListener::bind(&fake).expect("fake socket");
    let closer = std::thread::spawn(move || {
        // Accept and hang up on everyone.
        for s in listener.incoming().take(8) {
            drop(s);
        }
    });
    let d = daemon(&format!(
        "docker_socket = {:?}\ndocker_image = \"busybox\"",
        fake.display().to_string()
    ));
    let (pcb, r) = run_calls(
        &d,
        "exec-fake-engine",
        std::slice::from_ref(&call),
        &["EXEC_CMD"],
        None,
    );
    assert_eq!(r[0]["code"], "EIO", "{}", r[0]);
    assert!(!d.workspace(pcb.pid).join("ran").exists());
    assert!(!marker.exists(), "the command ran on the host");
    drop(d);
    drop(closer);
    let _ = std::fs::remove_dir_all(&fake_dir);

    // No image configured: EINVAL, nothing runs.
    let d = daemon("");
    let (pcb, r) = run_calls(&d, "exec-unconfigured", &[call], &["EXEC_CMD"], None);
    assert_eq!(r[0]["code"], "EINVAL", "{}", r[0]);
    assert!(
        r[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not configured")),
        "{}",
        r[0]
    );
    assert!(!d.workspace(pcb.pid).join("ran").exists());
    assert!(!marker.exists());
}

/// A copy of the repository's policies with `exec.allow_network = true` in
/// the default profile.
fn networked_policies(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "agentos-exec-policies-{}-{tag}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    for sub in ["profiles", "seccomp"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(common::repo().join("policies").join(sub))
            .expect("policies")
            .flatten()
        {
            std::fs::copy(e.path(), dir.join(sub).join(e.file_name())).expect("copy");
        }
    }
    let profile = dir.join("profiles/default.toml");
    let text = std::fs::read_to_string(&profile).expect("default profile");
    assert!(text.contains("allow_network = false"), "{text}");
    std::fs::write(
        &profile,
        text.replace("allow_network = false", "allow_network = true"),
    )
    .expect("write profile");
    dir
}

#[test]
fn allow_network_shares_the_network() {
    if !require_root("allow_network_shares_the_network") {
        return;
    }
    let docker = std::env::var("AGENTOS_TEST_DOCKER_SOCK")
        .ok()
        .filter(|s| !s.is_empty());
    let policies = networked_policies("net");
    let mut toml = String::new();
    if let Some(sock) = &docker {
        let image = std::env::var("AGENTOS_TEST_DOCKER_IMAGE")
            .unwrap_or_else(|_| "agentos-busybox:test".into());
        toml = format!("docker_socket = {sock:?}\ndocker_image = {image:?}");
    }
    let n = CONFIGS.fetch_add(1, Ordering::SeqCst);
    let config =
        std::env::temp_dir().join(format!("agentos-exec-test-{}-{n}.toml", std::process::id()));
    std::fs::write(&config, format!("{QUIET}[exec]\n{toml}\n")).expect("config");
    let d = Daemon::start_with(&[
        "--config",
        &config.display().to_string(),
        "--policies",
        &policies.display().to_string(),
    ]);
    let mut calls = vec![json!({"cmd": "readlink /proc/self/ns/net"})];
    if docker.is_some() {
        calls.push(json!({"cmd": "cat /proc/net/dev", "driver": "docker"}));
    }
    let (_pcb, r) = run_calls(&d, "exec-net", &calls, &["EXEC_CMD"], None);
    let interfaces = |text: &str| -> Vec<String> {
        text.lines()
            .skip(2)
            .filter_map(|l| l.split(':').next())
            .map(|s| s.trim().to_string())
            .collect()
    };
    // The daemon's own network namespace.
    let daemon_net = std::fs::read_link(format!("/proc/{}/ns/net", d.pid())).expect("ns");
    assert_eq!(
        stdout(&r[0]).lines().next(),
        Some(daemon_net.to_string_lossy().as_ref()),
        "{}",
        r[0]
    );
    if docker.is_some() {
        let ifaces = interfaces(stdout(&r[1]));
        assert!(
            ifaces.iter().any(|i| i != "lo"),
            "a bridged container has an interface besides lo: {}",
            r[1]
        );
    } else {
        eprintln!(
            "allow_network_shares_the_network: docker part skipped (no AGENTOS_TEST_DOCKER_SOCK)"
        );
    }
    drop(d);
    let _ = std::fs::remove_file(&config);
    let _ = std::fs::remove_dir_all(&policies);
}
