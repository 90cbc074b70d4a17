//! Owner ceilings (`[admin]` profiles, models, max_priority, max_agents,
//! max_memory_bytes): the real `agentos` CLI, run as an unprivileged member
//! of the socket's group, is refused each thing beyond its ceiling with an
//! error naming it, and leaves no agent behind; root may do each of them;
//! the user's allowed spawns work and a well-behaved agent keeps answering.

mod common;

use agentos::admin::protocol::{AdminRequest, SpawnRequest};
use agentos::kernel::pcb::{Pcb, State};
use common::{CliOut as Out, Daemon, neighbour_answers};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

/// The socket's group.
const GROUP: u32 = 4242;
/// An unprivileged member of GROUP.
const USER: u32 = 4545;
/// 1.25 GiB: two default-profile agents (512 MiB each) and a small one.
const MAX_MEMORY: u64 = 1_342_177_280;

/// A daemon whose socket is 0660 root:GROUP, with two configured models
/// ("a", the default, and "b") of which users may use only "a".
fn start(tag: &str) -> (Daemon, PathBuf) {
    let dir = std::env::temp_dir().join(format!("agentos-owners-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("config dir");
    let config = format!(
        r#"[scheduler]
default_model = "a"

[[providers]]
name = "script"
kind = "scripted"
script = "{}"

[[models]]
name = "a"
provider = "script"

[[models]]
name = "b"
provider = "script"

[admin]
models = ["a"]
max_agents = 3
max_memory_bytes = {MAX_MEMORY}
"#,
        common::repo().join("examples/scripts/team.json").display()
    );
    let path = dir.join("agentosd.toml");
    std::fs::write(&path, config).expect("config");
    let d = Daemon::start_with(&[
        "--socket-mode",
        "660",
        "--socket-group",
        "4242",
        "--config",
        &path.display().to_string(),
    ]);
    std::fs::set_permissions(&d.dir, std::fs::Permissions::from_mode(0o755)).expect("chmod dir");
    (d, dir)
}

/// Runs the real CLI as USER.
fn user(d: &Daemon, args: &[&str]) -> Out {
    common::cli_as(d, USER, GROUP, args)
}

/// `agentos spawn` of a sleeper as USER, with `extra` options.
fn user_spawn(d: &Daemon, name: &str, extra: &[&str]) -> Out {
    let mut args = vec!["spawn", "--name", name, "--program", "/usr/bin/sleep"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "300"]);
    user(d, &args)
}

fn user_pcb(d: &Daemon, out: &Out) -> Pcb {
    assert_eq!(out.code, 0, "allowed spawn refused: {out}\n{}", d.log());
    let pcb: Pcb =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not a PCB ({e}): {out}"));
    assert_eq!(pcb.owner, USER, "{pcb:?}");
    assert_eq!(d.inspect(pcb.pid).state, State::Running, "{}", d.log());
    pcb
}

/// Asserts a refusal with `code` whose message contains `why`.
fn assert_refused(d: &Daemon, what: &str, out: &Out, code: &str, why: &str) {
    assert_eq!(out.code, 1, "{what}: {out}\n{}", d.log());
    assert!(
        out.stderr.contains(code) && out.stderr.contains(why),
        "{what}: expected {code} mentioning {why:?}: {out}"
    );
}

/// The live agents of USER, as root sees them.
fn users_live(d: &Daemon) -> Vec<Pcb> {
    let all: Vec<Pcb> =
        serde_json::from_value(d.call(AdminRequest::Ps).expect("ps")).expect("pcbs");
    all.into_iter()
        .filter(|p| p.owner == USER && p.is_live())
        .collect()
}

fn root_sleeper(name: &str) -> SpawnRequest {
    SpawnRequest {
        name: name.into(),
        program: "/usr/bin/sleep".into(),
        args: vec!["300".into()],
        ..Default::default()
    }
}

#[test]
fn a_user_is_refused_priority_profile_and_model_beyond_its_ceiling() {
    if !common::require_root("a_user_is_refused_priority_profile_and_model_beyond_its_ceiling") {
        return;
    }
    let (d, dir) = start("choices");

    let out = user_spawn(&d, "greedy", &["--priority", "100"]);
    assert_refused(&d, "priority 100", &out, "EPERM", "max_priority = 1");
    let out = user_spawn(&d, "net", &["--profile", "networked"]);
    assert_refused(
        &d,
        "profile networked",
        &out,
        "EPERM",
        "profile \"networked\"",
    );
    let out = user(
        &d,
        &["spawn", "--name", "llm-b", "--model", "b", "--role", "x"],
    );
    assert_refused(&d, "model b", &out, "EPERM", "model \"b\"");
    let out = user_spawn(&d, "extra-b", &["--allow-model", "b"]);
    assert_refused(&d, "--allow-model b", &out, "EPERM", "[admin] models");
    assert!(
        users_live(&d).is_empty(),
        "a refused spawn left an agent: {:?}",
        users_live(&d)
    );

    // Within the ceiling the user's spawn works.
    let mine = user_pcb(
        &d,
        &user_spawn(&d, "mine", &["--priority", "1", "--allow-model", "a"]),
    );
    assert_eq!(mine.priority, 1);

    // Root may do each of them.
    let mut req = root_sleeper("roots-priority");
    req.priority = Some(100);
    assert_eq!(d.spawn(req).priority, 100);
    let mut req = root_sleeper("roots-profile");
    req.profile = Some("networked".into());
    assert_eq!(d.spawn(req).profile, "networked");
    let mut req = root_sleeper("roots-model");
    req.models = vec!["b".into()];
    assert!(d.spawn(req).models.contains("b"));

    neighbour_answers(&d, "neighbour");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_user_is_refused_agents_and_memory_beyond_its_ceiling() {
    if !common::require_root("a_user_is_refused_agents_and_memory_beyond_its_ceiling") {
        return;
    }
    let (d, dir) = start("counts");

    let first = user_pcb(&d, &user_spawn(&d, "one", &[]));
    user_pcb(&d, &user_spawn(&d, "two", &[]));
    // 2 × 512 MiB in use; another 512 MiB would pass 1.25 GiB.
    let out = user_spawn(&d, "three-big", &[]);
    assert_refused(
        &d,
        "memory",
        &out,
        "EQUOTA",
        &format!("max_memory_bytes = {MAX_MEMORY}"),
    );
    assert_eq!(users_live(&d).len(), 2, "{}", d.log());
    user_pcb(&d, &user_spawn(&d, "three", &["--memory", "128M"]));
    // The fourth is one more than max_agents = 3, however small.
    let out = user_spawn(&d, "four", &["--memory", "16M"]);
    assert_refused(&d, "fourth agent", &out, "EAGAIN", "max_agents = 3");
    let live = users_live(&d);
    assert_eq!(live.len(), 3, "{live:?}");
    let memory: u64 = live.iter().map(|p| p.limits.memory_bytes).sum();
    assert!(memory <= MAX_MEMORY, "{memory} > {MAX_MEMORY}");

    // Root's agents are not bounded by (nor counted in) the user's ceiling.
    for i in 0..4 {
        let pcb = d.spawn(root_sleeper(&format!("root-{i}")));
        assert_eq!(pcb.owner, 0);
    }

    // A slot freed by killing one of the user's agents can be used again.
    let out = user(&d, &["kill", &first.pid.to_string()]);
    assert_eq!(out.code, 0, "{out}");
    user_pcb(&d, &user_spawn(&d, "four", &["--memory", "16M"]));

    neighbour_answers(&d, "neighbour");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn concurrent_spawns_of_one_user_cannot_pass_max_agents() {
    if !common::require_root("concurrent_spawns_of_one_user_cannot_pass_max_agents") {
        return;
    }
    let (d, dir) = start("race");
    // Eight small spawns at once against max_agents = 3.
    let outs: Vec<Out> = std::thread::scope(|s| {
        let d = &d;
        let handles: Vec<_> = (0..8)
            .map(|i| s.spawn(move || user_spawn(d, &format!("racer-{i}"), &["--memory", "16M"])))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let ok = outs.iter().filter(|o| o.code == 0).count();
    assert_eq!(
        ok,
        3,
        "{}",
        outs.iter()
            .map(|o| o.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for o in outs.iter().filter(|o| o.code != 0) {
        assert!(o.stderr.contains("max_agents = 3"), "{o}");
    }
    assert_eq!(users_live(&d).len(), 3, "{}", d.log());
    neighbour_answers(&d, "neighbour");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn children_of_a_users_agents_count_towards_max_agents() {
    if !common::require_root("children_of_a_users_agents_count_towards_max_agents") {
        return;
    }
    let (d, dir) = start("children");
    let agents = common::repo().join("tests/agents");
    common::for_others(&agents.join("aos.py"));
    let script = common::for_others(&agents.join("hostile_trees.py"));
    let scripts = script.parent().expect("dir").display().to_string();
    let script = script.display().to_string();
    // One agent of the user's that tries five children: two fit in 3.
    let out = user(
        &d,
        &[
            "spawn",
            "--name",
            "fan",
            "--program",
            "/usr/bin/python3",
            "--ro",
            &scripts,
            "--memory",
            "128M",
            "--allow",
            "process,time,fs",
            "--",
            &script,
            "fan",
            "5",
            "sleeper",
        ],
    );
    let fan = user_pcb(&d, &out);
    let rep = d.report_when_written(fan.pid);
    let made = rep["children"].as_array().map(Vec::len);
    assert_eq!(made, Some(2), "{rep}\n{}", d.logs(fan.pid));
    let errors = rep["errors"].as_array().cloned().unwrap_or_default();
    assert_eq!(errors.len(), 3, "{rep}");
    for e in &errors {
        assert_eq!(e["code"], "EAGAIN", "{rep}");
        assert!(
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("max_agents = 3")),
            "{rep}"
        );
    }
    assert_eq!(users_live(&d).len(), 3, "{}", d.log());
    let out = user_spawn(&d, "one-more", &["--memory", "16M"]);
    assert_refused(&d, "a fourth agent", &out, "EAGAIN", "max_agents = 3");
    neighbour_answers(&d, "neighbour");
    let _ = std::fs::remove_dir_all(dir);
}
