//! MEM_WRITE / MEM_READ against real daemons and real components: the
//! embedded backend, a real ChromaDB server started from the venv that
//! `.ci/run` installs, and a local OpenAI-compatible embeddings server.
//!
//! The same suites (top-k on a fixed corpus, isolation between agents,
//! shared collections and their permission, persistence across a daemon
//! crash) run against both backends. Without the ChromaDB venv the chroma
//! suite is skipped loudly, except under CI where it fails.

mod common;

use agentos::drivers::memory::embed::{lexical, words};
use agentos::drivers::memory::{Collection, Memory};
use common::{Daemon, python_agent, require_root};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);

/// Where `.ci/run` installs ChromaDB (override: `AGENTOS_CHROMA_VENV`).
const CHROMA_VENV: &str = "/opt/agentos-ci/chroma-venv";

/// Dimensions of the built-in embedding (the default).
const DIMS: usize = 512;

static SCRATCH: AtomicU32 = AtomicU32::new(0);

fn scratch(tag: &str) -> PathBuf {
    let n = SCRATCH.fetch_add(1, Ordering::SeqCst);
    let dir =
        std::env::temp_dir().join(format!("agentos-memtest-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A copy of the shipped policies plus profile `team`, the default profile
/// with `[memory] shared = ["team-notes", "handbook"]`, and `tight`.
fn team_policies(dir: &Path) -> PathBuf {
    let repo = common::repo().join("policies");
    let out = dir.join("policies");
    for sub in ["profiles", "seccomp"] {
        std::fs::create_dir_all(out.join(sub)).expect("mkdir");
        for e in std::fs::read_dir(repo.join(sub))
            .expect("policies")
            .flatten()
        {
            if e.path().is_file() {
                std::fs::copy(e.path(), out.join(sub).join(e.file_name())).expect("copy");
            }
        }
    }
    let default = std::fs::read_to_string(repo.join("profiles/default.toml")).expect("default");
    let team = default.replace("shared = []", "shared = [\"team-notes\", \"handbook\"]");
    assert_ne!(team, default, "default.toml no longer has `shared = []`");
    std::fs::write(out.join("profiles/team.toml"), team).expect("write team.toml");
    // `tight`: 8 KiB in the private collection and in shared "tight-notes".
    let tight = default
        .replace("shared = []", "shared = [\"tight-notes\"]")
        .replace("shared_bytes = 268435456", "shared_bytes = 8192")
        .replace("memory_store_bytes = 67108864", "memory_store_bytes = 8192");
    assert!(
        tight.contains("memory_store_bytes = 8192") && tight.contains("shared_bytes = 8192"),
        "default.toml changed"
    );
    std::fs::write(out.join("profiles/tight.toml"), tight).expect("write tight.toml");
    out
}

/// Which memory configuration a daemon runs with.
enum Backend<'a> {
    Embedded,
    Chroma(&'a ChromaServer),
    /// Embedded backend, embeddings from the local server.
    Http(&'a EmbedServer),
}

impl Backend<'_> {
    fn config(&self) -> String {
        match self {
            Backend::Embedded => "[memory]\nbackend = \"embedded\"\n".into(),
            Backend::Chroma(c) => format!(
                "[memory]\nbackend = \"chroma\"\nchroma_url = \"http://127.0.0.1:{}\"\nchroma_tenant = \"agentos_test\"\nchroma_database = \"memtest\"\n",
                c.port
            ),
            Backend::Http(s) => format!(
                "[memory]\nembeddings_url = \"http://127.0.0.1:{}/v1\"\nembeddings_model = \"concepts-v1\"\n",
                s.port
            ),
        }
    }
}

/// A daemon with a memory configuration and the `team` profile.
struct Env {
    daemon: Daemon,
    dir: PathBuf,
    config: String,
}

impl Env {
    fn start(backend: &Backend) -> Env {
        let dir = scratch("env");
        let policies = team_policies(&dir);
        let config = backend.config();
        let cfg_path = dir.join("agentosd.toml");
        std::fs::write(&cfg_path, &config).expect("config");
        let daemon = Daemon::start_with(&[
            "--config",
            &cfg_path.display().to_string(),
            "--policies",
            &policies.display().to_string(),
        ]);
        Env {
            daemon,
            dir,
            config,
        }
    }

    /// Runs `mem_ops.py` with `ops` under `profile` and `permissions`;
    /// returns the agent's pid and the replies.
    fn run(&self, name: &str, profile: &str, perms: &[&str], ops: Value) -> (u64, Vec<Value>) {
        let mut req = python_agent(name, "mem_ops.py", &[&ops.to_string()], Some(perms));
        req.profile = Some(profile.into());
        let pcb = self.daemon.spawn(req);
        let report = self.daemon.finish(pcb.pid, WAIT);
        let replies = report["replies"].as_array().cloned().expect("replies");
        assert_eq!(
            replies.len(),
            ops.as_array().map_or(0, Vec::len),
            "{report}"
        );
        (pcb.pid, replies)
    }

    /// Opens the (stopped) daemon's database and memory driver directly.
    fn open_memory(&self) -> (agentos::kernel::store::Store, Memory) {
        let cfg = agentos::config::FileConfig::parse(&self.config, "test.toml").expect("config");
        let store = agentos::kernel::store::Store::open(&self.daemon.state_dir().join("db"))
            .expect("open the stopped daemon's database");
        let memory = Memory::open(&cfg.memory, store.trees.memory.clone()).expect("memory driver");
        (store, memory)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const MEM: &[&str] = &["memory", "fs"];
const MEM_SHARED: &[&str] = &["memory", "fs", "MEM_SHARED"];

fn write(key: &str, value: &str) -> Value {
    json!({"call": "MEM_WRITE", "args": {"key": key, "value": value}})
}

fn read(args: Value) -> Value {
    json!({"call": "MEM_READ", "args": args})
}

#[track_caller]
fn result(reply: &Value) -> &Value {
    assert_eq!(reply["status"], "SUCCESS", "expected success: {reply}");
    &reply["result"]
}

#[track_caller]
fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["status"], "ERROR", "expected an error: {reply}");
    reply["error"]["code"].as_str().expect("code")
}

fn keys(reply: &Value) -> Vec<String> {
    result(reply)["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["key"].as_str().expect("key").to_string())
        .collect()
}

// ---- the suites ------------------------------------------------------------

/// Ten short documents, each with its own vocabulary.
const CORPUS: [(&str, &str); 10] = [
    (
        "apple",
        "Apples and pears grow in the orchard behind the farmhouse",
    ),
    (
        "rust",
        "The Rust compiler's borrow checker rejects dangling references",
    ),
    ("tides", "Ocean tides are driven by the gravity of the moon"),
    ("violin", "She practised the violin concerto every evening"),
    (
        "bread",
        "Sourdough bread needs a starter, flour, water and salt",
    ),
    (
        "kernel",
        "The Linux kernel schedules processes and manages memory",
    ),
    (
        "volcano",
        "Lava from the volcano buried the village in 79 AD",
    ),
    (
        "chess",
        "The grandmaster sacrificed a knight to win the chess endgame",
    ),
    (
        "glacier",
        "Glaciers carve deep valleys as they slowly move downhill",
    ),
    (
        "python",
        "Python lists are dynamic arrays of object references",
    ),
];

/// Cosine similarity computed independently of the driver: f64, explicit
/// norms.
fn cosine64(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let na = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb = b.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    if na == 0.0 || nb == 0.0 {
        return 0.0;
    }
    dot / (na * nb)
}

/// Checks a MEM_READ reply against the exact ranking of `docs` for
/// `query` under the lexical embedding: same scores (±1e-4), ranked best
/// first, and the top `k` (ties at the boundary allowed).
#[track_caller]
fn check_ranking(reply: &Value, docs: &BTreeMap<&str, &str>, query: &str, k: usize) {
    let q = lexical(query, DIMS);
    let expected: BTreeMap<&str, f64> = docs
        .iter()
        .map(|(key, text)| (*key, cosine64(&lexical(text, DIMS), &q)))
        .collect();
    let results = result(reply)["results"].as_array().expect("results");
    assert_eq!(results.len(), k.min(docs.len()), "{query:?}: {reply}");
    let mut previous = f64::INFINITY;
    for r in results {
        let key = r["key"].as_str().expect("key");
        let score = r["score"].as_f64().expect("score");
        let want = expected[key];
        assert!(
            (score - want).abs() < 1e-4,
            "{query:?}: {key} scored {score}, expected {want}"
        );
        assert!(score <= previous + 1e-6, "{query:?}: not ranked: {reply}");
        previous = score;
        assert_eq!(r["value"], docs[key]);
    }
    let returned: Vec<&str> = results.iter().filter_map(|r| r["key"].as_str()).collect();
    let worst_returned = results
        .iter()
        .filter_map(|r| r["score"].as_f64())
        .fold(f64::INFINITY, f64::min);
    for (key, s) in &expected {
        if !returned.contains(key) {
            assert!(
                *s <= worst_returned + 1e-4,
                "{query:?}: {key} (score {s}) should have been in the top {k}: {reply}"
            );
        }
    }
}

fn top_k_suite(env: &Env) {
    let mut ops: Vec<Value> = CORPUS.iter().map(|(k, v)| write(k, v)).collect();
    let queries: [(&str, Option<usize>, &str); 6] = [
        ("borrow checker", None, "rust"),
        ("sourdough starter", Some(3), "bread"),
        ("chess knight sacrifice", Some(1), "chess"),
        ("gravity of the moon", Some(100), "tides"),
        ("Linux kernel scheduling", Some(2), "kernel"),
        ("volcanoes", Some(4), "volcano"),
    ];
    for (q, k, _) in &queries {
        ops.push(read(match k {
            Some(k) => json!({"query": q, "k": k}),
            None => json!({"query": q}),
        }));
    }
    // Overwrite one key twice, with metadata that changes shape.
    let meta = json!({"rev": 2, "lang": "en", "reviewed": true, "weight": 0.5});
    ops.push(json!({"call": "MEM_WRITE", "args": {"key": "rust", "value": "Rust ownership: every value has exactly one owner", "metadata": meta}}));
    ops.push(read(json!({"query": "ownership owner", "k": 100})));
    ops.push(json!({"call": "MEM_WRITE", "args": {"key": "rust", "value": "Rust ownership: every value has exactly one owner", "metadata": {"rev": 3}}}));
    ops.push(read(json!({"query": "ownership owner", "k": 1})));
    let (pid, replies) = env.run("topk", "default", MEM, Value::Array(ops));

    for (i, (key, _)) in CORPUS.iter().enumerate() {
        assert_eq!(
            result(&replies[i]),
            &json!({"key": key, "collection": format!("agent-{pid}")})
        );
    }
    let docs: BTreeMap<&str, &str> = CORPUS.iter().copied().collect();
    for (i, (q, k, best)) in queries.iter().enumerate() {
        let reply = &replies[CORPUS.len() + i];
        assert_eq!(keys(reply)[0], *best, "{q:?}: {reply}");
        check_ranking(reply, &docs, q, k.unwrap_or(5));
        // The best match is unambiguous.
        let results = result(reply)["results"].as_array().expect("results");
        if results.len() > 1 {
            let (a, b) = (
                results[0]["score"].as_f64().expect("score"),
                results[1]["score"].as_f64().expect("score"),
            );
            assert!(a > b + 0.05, "{q:?}: best {a} vs next {b}");
        }
    }
    let n = CORPUS.len() + queries.len();
    assert_eq!(result(&replies[n])["key"], "rust");
    let after = &replies[n + 1];
    let ks = keys(after);
    assert_eq!(ks.len(), CORPUS.len(), "an overwrite must not add: {after}");
    assert_eq!(ks[0], "rust");
    let top = &result(after)["results"][0];
    assert_eq!(
        top["value"],
        "Rust ownership: every value has exactly one owner"
    );
    assert_eq!(top["metadata"], meta);
    for r in result(after)["results"]
        .as_array()
        .expect("results")
        .iter()
        .skip(1)
    {
        assert_eq!(r["metadata"], json!({}), "{r}");
    }
    let last = &result(&replies[n + 3])["results"][0];
    assert_eq!(
        last["metadata"],
        json!({"rev": 3}),
        "metadata is replaced, not merged"
    );
}

fn isolation_suite(env: &Env) {
    let (a, ra) = env.run(
        "alice",
        "default",
        MEM,
        json!([
            write("secret", "The vault code is swordfish"),
            write("note", "Meeting with the auditors on Friday"),
            read(json!({"query": "vault code swordfish"})),
        ]),
    );
    assert_eq!(result(&ra[0])["collection"], format!("agent-{a}"));
    assert_eq!(keys(&ra[2])[0], "secret");
    let theirs = format!("agent-{a}");
    let (b, rb) = env.run(
        "bob",
        "default",
        MEM,
        json!([
            write("mine", "Sunny weather expected all week"),
            read(json!({"query": "vault code swordfish", "k": 100})),
            read(json!({"query": "auditors meeting Friday", "k": 100})),
            read(json!({"query": "vault code", "collection": theirs})),
            {"call": "MEM_WRITE", "args": {"key": "x", "value": "planted", "collection": theirs}},
            read(json!({"query": "weather", "collection": "$SELF"})),
        ]),
    );
    assert_ne!(a, b);
    assert_eq!(keys(&rb[1]), vec!["mine"], "B saw A's memories: {}", rb[1]);
    assert_eq!(keys(&rb[2]), vec!["mine"], "B saw A's memories: {}", rb[2]);
    assert_eq!(error_code(&rb[3]), "EACCES");
    assert_eq!(error_code(&rb[4]), "EACCES");
    assert_eq!(keys(&rb[5]), vec!["mine"]);
    // And A's collection is untouched by B's attempt.
    let (_, rc) = env.run(
        "carol",
        "default",
        MEM,
        json!([read(json!({"query": "planted", "k": 100}))]),
    );
    assert!(keys(&rc[0]).is_empty(), "{}", rc[0]);
}

fn shared_suite(env: &Env) {
    let (w, rw) = env.run(
        "writer",
        "team",
        MEM_SHARED,
        json!([
            {"call": "MEM_WRITE", "args": {"key": "style", "value": "Use British spelling in every report", "collection": "team-notes", "metadata": {"author": "writer"}}},
            read(json!({"query": "British spelling"})),
        ]),
    );
    assert_eq!(
        result(&rw[0]),
        &json!({"key": "style", "collection": "team-notes"})
    );
    assert!(
        keys(&rw[1]).is_empty(),
        "a shared write must not land in the private collection: {}",
        rw[1]
    );

    let (_, rr) = env.run(
        "reader",
        "team",
        MEM_SHARED,
        json!([
            read(json!({"query": "British spelling", "collection": "team-notes"})),
            {"call": "MEM_WRITE", "args": {"key": "glossary", "value": "Colour, not color; organise, not organize", "collection": "team-notes"}},
            read(json!({"query": "anything", "collection": "handbook"})),
        ]),
    );
    let hit = &result(&rr[0])["results"][0];
    assert_eq!(hit["key"], "style");
    assert_eq!(hit["value"], "Use British spelling in every report");
    assert_eq!(hit["metadata"], json!({"author": "writer"}));
    result(&rr[1]);
    assert!(keys(&rr[2]).is_empty(), "handbook is empty: {}", rr[2]);

    // Listed in the profile but no MEM_SHARED: refused both ways.
    let (_, rn) = env.run(
        "no-perm",
        "team",
        MEM,
        json!([
            read(json!({"query": "British spelling", "collection": "team-notes"})),
            {"call": "MEM_WRITE", "args": {"key": "k", "value": "v", "collection": "team-notes"}},
        ]),
    );
    assert_eq!(error_code(&rn[0]), "EACCES");
    assert!(
        rn[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("MEM_SHARED")),
        "{}",
        rn[0]
    );
    assert_eq!(error_code(&rn[1]), "EACCES");

    // MEM_SHARED but a profile that does not list it: refused.
    let (_, rd) = env.run(
        "other-profile",
        "default",
        MEM_SHARED,
        json!([read(
            json!({"query": "British spelling", "collection": "team-notes"})
        )]),
    );
    assert_eq!(error_code(&rd[0]), "EACCES");
    assert!(
        rd[0]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("profile")),
        "{}",
        rd[0]
    );

    // Names: invalid, another agent's private collection, reserved.
    let (_, rx) = env.run(
        "names",
        "team",
        MEM_SHARED,
        json!([
            read(json!({"query": "q", "collection": "bad/name"})),
            read(json!({"query": "q", "collection": format!("agent-{w}")})),
            read(json!({"query": "q", "collection": "agent-notes"})),
            read(json!({"query": "q", "collection": "x".repeat(65)})),
            read(json!({"query": "colour organise", "collection": "team-notes"})),
        ]),
    );
    assert_eq!(error_code(&rx[0]), "EINVAL");
    assert_eq!(error_code(&rx[1]), "EACCES");
    assert_eq!(error_code(&rx[2]), "EINVAL");
    assert_eq!(error_code(&rx[3]), "EINVAL");
    assert_eq!(keys(&rx[4])[0], "glossary");
}

/// Writes, crashes the daemon (SIGKILL), restarts it and reads; then
/// crashes it again and reads the private collection of the first agent
/// straight from the database. Leaves the daemon stopped.
/// Writes of ~1.5 KiB values (plus a 2 KiB vector) until refused.
fn fill_ops(collection: Option<&str>) -> Value {
    let value = "q".repeat(1500);
    let ops: Vec<Value> = (0..8)
        .map(|i| {
            let mut args = json!({"key": format!("k{i}"), "value": value});
            if let Some(c) = collection {
                args["collection"] = json!(c);
            }
            json!({"call": "MEM_WRITE", "args": args})
        })
        .collect();
    Value::Array(ops)
}

/// The writes that succeeded, which must come first; every later one is
/// EQUOTA naming `limit`.
#[track_caller]
fn stored_then_refused(replies: &[Value], limit: &str) -> usize {
    let stored = replies
        .iter()
        .take_while(|r| r["status"] == "SUCCESS")
        .count();
    assert!(stored >= 1 && stored < replies.len(), "{replies:?}");
    for r in &replies[stored..] {
        assert_eq!(error_code(r), "EQUOTA", "{r}");
        let message = r["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(limit), "{message}");
    }
    stored
}

/// The private collection stops at memory_store_bytes and a shared one at
/// its profile's shared_bytes, counting every writer's records; an
/// overwrite is not counted twice.
fn quota_suite(env: &Env) {
    let (_, private) = env.run("filler", "tight", MEM, fill_ops(None));
    stored_then_refused(&private, "memory_store_bytes = 8192");
    let (_, shared) = env.run("sharer", "tight", MEM_SHARED, fill_ops(Some("tight-notes")));
    let stored = stored_then_refused(&shared, "shared_bytes = 8192");
    // Another writer finds the shared collection full, but may replace a
    // record of the same size.
    let value = "q".repeat(1500);
    let (_, other) = env.run(
        "other-sharer",
        "tight",
        MEM_SHARED,
        json!([
            {"call": "MEM_WRITE", "args": {"key": "new", "value": value, "collection": "tight-notes"}},
            {"call": "MEM_WRITE", "args": {"key": format!("k{}", stored - 1), "value": value, "collection": "tight-notes"}},
        ]),
    );
    assert_eq!(error_code(&other[0]), "EQUOTA", "{}", other[0]);
    result(&other[1]);
}

fn persistence_suite(env: &mut Env) {
    let (p, rp) = env.run(
        "before",
        "team",
        MEM_SHARED,
        json!([
            write("ferry", "Remember that the ferry leaves at noon"),
            {"call": "MEM_WRITE", "args": {"key": "staging", "value": "The staging server is named kestrel", "collection": "team-notes", "metadata": {"env": "staging"}}},
        ]),
    );
    result(&rp[0]);
    result(&rp[1]);
    env.daemon.crash();
    env.daemon.launch();
    let (_, ra) = env.run(
        "after",
        "team",
        MEM_SHARED,
        json!([
            read(json!({"query": "staging server kestrel", "collection": "team-notes"})),
            write("fresh", "Written after the restart"),
            read(json!({"query": "restart"})),
        ]),
    );
    let hit = &result(&ra[0])["results"][0];
    assert_eq!(hit["key"], "staging", "{}", ra[0]);
    assert_eq!(hit["value"], "The staging server is named kestrel");
    assert_eq!(hit["metadata"], json!({"env": "staging"}));
    assert_eq!(keys(&ra[2]), vec!["fresh"]);

    env.daemon.crash();
    let (_store, memory) = env.open_memory();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let hits = rt
        .block_on(memory.search(&Collection::Agent(p), "ferry at noon", 5))
        .expect("search");
    assert_eq!(hits.len(), 1, "{hits:?}");
    assert_eq!(hits[0].key, "ferry");
    assert_eq!(hits[0].value, "Remember that the ferry leaves at noon");
}

// ---- embedded backend ------------------------------------------------------

#[test]
fn embedded_top_k_on_a_fixed_corpus() {
    if !require_root("embedded_top_k_on_a_fixed_corpus") {
        return;
    }
    top_k_suite(&Env::start(&Backend::Embedded));
}

#[test]
fn embedded_agents_do_not_see_each_others_memories() {
    if !require_root("embedded_agents_do_not_see_each_others_memories") {
        return;
    }
    isolation_suite(&Env::start(&Backend::Embedded));
}

#[test]
fn embedded_shared_collections_need_the_profile_and_mem_shared() {
    if !require_root("embedded_shared_collections_need_the_profile_and_mem_shared") {
        return;
    }
    shared_suite(&Env::start(&Backend::Embedded));
}

#[test]
fn embedded_collections_stop_at_their_byte_quotas() {
    if !require_root("embedded_collections_stop_at_their_byte_quotas") {
        return;
    }
    quota_suite(&Env::start(&Backend::Embedded));
}

#[test]
fn embedded_memories_survive_a_daemon_crash() {
    if !require_root("embedded_memories_survive_a_daemon_crash") {
        return;
    }
    persistence_suite(&mut Env::start(&Backend::Embedded));
}

#[test]
fn bad_arguments_get_closed_codes_and_never_crash_the_daemon() {
    if !require_root("bad_arguments_get_closed_codes_and_never_crash_the_daemon") {
        return;
    }
    let mut env = Env::start(&Backend::Embedded);
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"call": "MEM_WRITE", "args": {"value": "v"}}),
            "EINVAL",
        ),
        (json!({"call": "MEM_WRITE", "args": {"key": "k"}}), "EINVAL"),
        (
            json!({"call": "MEM_WRITE", "args": {"key": 5, "value": "v"}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_WRITE", "args": {"key": "", "value": "v"}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_WRITE", "args": {"key": "k", "value": "v", "bogus": 1}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_WRITE", "args": {"key": "k", "value": "v", "metadata": {"a": {"b": 1}}}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_WRITE", "args": {"key": "k", "value": "v", "metadata": "x"}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_WRITE", "args": {"key": "big"}, "pad": {"field": "value", "bytes": 65537}}),
            "EMSGSIZE",
        ),
        (
            json!({"call": "MEM_WRITE", "args": {"key": "big"}, "pad": {"field": "value", "bytes": 65536}}),
            "SUCCESS",
        ),
        (json!({"call": "MEM_READ", "args": {}}), "EINVAL"),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "k": 0}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "k": 101}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "k": "many"}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "k": -3}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "collection": "../x"}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "collection": ""}}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q", "collection": "team-notes"}}),
            "EACCES",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "q"}, "pad": {"field": "query", "bytes": 65537}}),
            "EMSGSIZE",
        ),
        (
            json!({"raw": "{\"id\": \"list\", \"call\": \"MEM_READ\", \"args\": [1, 2]}"}),
            "EINVAL",
        ),
        (
            json!({"raw": "{\"id\": \"str\", \"call\": \"MEM_WRITE\", \"args\": \"key\"}"}),
            "EINVAL",
        ),
        (
            json!({"call": "MEM_READ", "args": {"query": "xxxx", "k": 100}}),
            "SUCCESS",
        ),
        (json!({"call": "GETPID"}), "SUCCESS"),
    ];
    let ops: Vec<Value> = cases.iter().map(|(op, _)| op.clone()).collect();
    let (_, replies) = env.run("bad", "default", MEM, Value::Array(ops));
    for ((op, want), reply) in cases.iter().zip(&replies) {
        let got = if reply["status"] == "SUCCESS" {
            "SUCCESS"
        } else {
            error_code(reply)
        };
        assert_eq!(got, *want, "{op} → {reply}");
        if got != "SUCCESS" {
            let msg = reply["error"]["message"].as_str().unwrap_or_default();
            assert!(!msg.is_empty(), "{reply}");
        }
    }
    let big = replies[8]["result"].clone();
    assert_eq!(big["key"], "big");
    assert_eq!(keys(&replies[20]), vec!["big"]);
    // Without the memory permission: EACCES.
    let (_, denied) = env.run(
        "no-memory",
        "default",
        &["fs"],
        json!([write("k", "v"), read(json!({"query": "v"}))]),
    );
    assert_eq!(error_code(&denied[0]), "EACCES");
    assert_eq!(error_code(&denied[1]), "EACCES");
    let child = env.daemon.child.as_mut().expect("daemon");
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "the daemon died:\n{}",
        env.daemon.log()
    );
}

#[test]
fn an_unreachable_chroma_is_eio_naming_the_backend() {
    if !require_root("an_unreachable_chroma_is_eio_naming_the_backend") {
        return;
    }
    // A port nobody listens on.
    let port = free_port();
    let fake = ChromaServer {
        child: None,
        port,
        dir: scratch("nochroma"),
    };
    let env = Env::start(&Backend::Chroma(&fake));
    let (_, r) = env.run(
        "lonely",
        "default",
        MEM,
        json!([write("k", "v"), read(json!({"query": "v"}))]),
    );
    for reply in &r {
        assert_eq!(error_code(reply), "EIO");
        let msg = reply["error"]["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains("chroma") && msg.contains(&port.to_string()),
            "{reply}"
        );
    }
}

// ---- ChromaDB --------------------------------------------------------------

/// A real ChromaDB server (`chroma run`) on 127.0.0.1, killed on drop.
struct ChromaServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl ChromaServer {
    /// Starts the server from the venv; None (after a loud message) when
    /// the venv is missing outside CI.
    fn start(test: &str) -> Option<ChromaServer> {
        let venv = std::env::var_os("AGENTOS_CHROMA_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(CHROMA_VENV));
        let bin = venv.join("bin/chroma");
        if !bin.exists() {
            let why = format!(
                "{test}: ChromaDB is not installed at {} (.ci/run creates it: python3 -m venv {} && {}/bin/pip install chromadb)",
                bin.display(),
                venv.display(),
                venv.display()
            );
            if std::env::var_os("CI").is_some() {
                panic!("{why}; refusing to skip under CI");
            }
            eprintln!("\n!!!!! SKIPPED {why} !!!!!\n");
            return None;
        }
        let dir = scratch("chroma");
        let port = free_port();
        let log = std::fs::File::create(dir.join("chroma.log")).expect("log");
        let child = Command::new(&bin)
            .args([
                "run",
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--path",
            ])
            .arg(dir.join("data"))
            .env("ANONYMIZED_TELEMETRY", "False")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start chroma");
        let mut server = ChromaServer {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok((200, _)) = http(port, "GET", "/api/v2/heartbeat", None) {
                return Some(server);
            }
            if let Some(Ok(Some(status))) = server.child.as_mut().map(Child::try_wait) {
                panic!("chroma exited with {status}:\n{}", server.log());
            }
            if Instant::now() > deadline {
                panic!("chroma did not answer its heartbeat:\n{}", server.log());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chroma.log")).unwrap_or_default()
    }

    fn get(&self, path: &str) -> Value {
        match http(self.port, "GET", path, None) {
            Ok((200, v)) => v,
            other => panic!("GET {path}: {other:?}"),
        }
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        match http(self.port, "POST", path, Some(body)) {
            Ok((200, v)) => v,
            other => panic!("POST {path}: {other:?}"),
        }
    }
}

impl Drop for ChromaServer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A minimal HTTP/1.1 client (Connection: close) for talking to the test
/// servers on 127.0.0.1.
fn http(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<(u16, Value)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let payload = if chunked {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    let v = serde_json::from_str(&payload).unwrap_or(Value::String(payload));
    Ok((status, v))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

#[test]
fn chroma_backend_passes_the_same_suite() {
    if !require_root("chroma_backend_passes_the_same_suite") {
        return;
    }
    let Some(chroma) = ChromaServer::start("chroma_backend_passes_the_same_suite") else {
        return;
    };
    let mut env = Env::start(&Backend::Chroma(&chroma));
    top_k_suite(&env);
    isolation_suite(&env);
    shared_suite(&env);
    quota_suite(&env);

    // What the server holds: collections in the configured (created)
    // tenant and database, cosine space, namespaced names, values in
    // documents, user metadata in metadatas (merged keys cleaned up).
    let db = "/api/v2/tenants/agentos_test/databases/memtest";
    let collections = chroma.get(&format!("{db}/collections"));
    let list = collections.as_array().expect("collections");
    let names: Vec<&str> = list.iter().filter_map(|c| c["name"].as_str()).collect();
    assert!(names.iter().all(|n| n.starts_with("agentos-")), "{names:?}");
    let team = list
        .iter()
        .find(|c| {
            c["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("-s-team-notes"))
        })
        .unwrap_or_else(|| panic!("no team-notes collection in {names:?}"));
    assert_eq!(team["configuration_json"]["hnsw"]["space"], "cosine");
    let items = chroma.post(
        &format!("{db}/collections/{}/get", team["id"].as_str().expect("id")),
        &json!({"ids": ["style"], "include": ["documents", "metadatas"]}),
    );
    assert_eq!(
        items["documents"][0],
        "Use British spelling in every report"
    );
    assert_eq!(items["metadatas"][0]["author"], "writer");
    let private = list
        .iter()
        .filter(|c| c["name"].as_str().is_some_and(|n| n.contains("-a-")))
        .count();
    assert!(private >= 3, "{names:?}");
    // The overwritten "rust" memory kept no stale metadata key.
    for c in list {
        let got = chroma.post(
            &format!("{db}/collections/{}/get", c["id"].as_str().expect("id")),
            &json!({"ids": ["rust"], "include": ["metadatas"]}),
        );
        if let Some(m) = got["metadatas"][0].as_object() {
            assert!(!m.contains_key("lang"), "stale metadata: {m:?}");
            assert_eq!(m["rev"], 3);
        }
    }

    persistence_suite(&mut env);
}

// ---- a local embeddings server ----------------------------------------------

/// One request the embeddings server received.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    authorization: Option<String>,
    body: Value,
}

/// An OpenAI-compatible `/v1/embeddings` server on 127.0.0.1 that maps
/// words to fixed "concept" directions, so that synonyms embed alike
/// (what the lexical embedding cannot do). The model name selects
/// failures: `always-500`, `bad-400`, `garbage`.
struct EmbedServer {
    port: u16,
    seen: Arc<Mutex<Vec<Seen>>>,
}

fn concept_vector(text: &str) -> Vec<f64> {
    let mut v = vec![0.0; 8];
    for w in words(text) {
        let (dim, weight) = match w.as_str() {
            "cat" | "cats" | "kitten" | "kittens" | "feline" | "kitty" => (0, 1.0),
            "car" | "cars" | "automobile" | "vehicle" | "truck" | "tires" => (1, 1.0),
            "bank" | "money" | "cash" | "interest" | "loan" => (2, 1.0),
            "ocean" | "sea" | "marine" | "waves" => (3, 1.0),
            other => (4 + other.len() % 4, 0.05),
        };
        v[dim] += weight;
    }
    if v.iter().all(|x| *x == 0.0) {
        v[7] = 1.0;
    }
    v
}

impl EmbedServer {
    fn start() -> EmbedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let _ = serve_one(conn, &log);
            }
        });
        EmbedServer { port, seen }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("lock").clone()
    }
}

fn serve_one(mut conn: TcpStream, log: &Mutex<Vec<Seen>>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let len: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body: Value = serde_json::from_slice(&buf[head_end..]).unwrap_or(Value::Null);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().expect("lock").push(Seen {
        path: path.clone(),
        authorization: header("authorization"),
        body: body.clone(),
    });
    let model = body["model"].as_str().unwrap_or("");
    let (status, answer) = if path != "/v1/embeddings" {
        (404, json!({"error": {"message": "not found"}}))
    } else {
        match model {
            "always-500" => (500, json!({"error": {"message": "the GPU caught fire"}})),
            "bad-400" => (
                400,
                json!({"error": {"message": "input too long for this model"}}),
            ),
            "garbage" => (200, json!({"nope": 1})),
            _ => {
                let inputs: Vec<String> = match &body["input"] {
                    Value::String(s) => vec![s.clone()],
                    Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect(),
                    _ => Vec::new(),
                };
                let data: Vec<Value> = inputs
                    .iter()
                    .enumerate()
                    .map(|(i, t)| json!({"object": "embedding", "index": i, "embedding": concept_vector(t)}))
                    .collect();
                (
                    200,
                    json!({"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 1, "total_tokens": 1}}),
                )
            }
        }
    };
    let text = answer.to_string();
    write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
        text.len()
    )?;
    conn.flush()
}

#[test]
fn the_embeddings_client_speaks_the_openai_protocol() {
    let server = EmbedServer::start();
    let dir = scratch("embed-client");
    let key_file = dir.join("key");
    std::fs::write(&key_file, "sk-test-0123456789\n").expect("key");
    let cfg = |model: &str| agentos::config::MemoryConfig {
        embeddings_url: Some(format!("http://127.0.0.1:{}/v1", server.port)),
        embeddings_model: Some(model.into()),
        embeddings_api_key_file: Some(key_file.display().to_string()),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let embed = |model: &str, text: &str| {
        let e =
            agentos::drivers::memory::embed::Embedder::from_config(&cfg(model)).expect("embedder");
        rt.block_on(e.embed(text))
    };

    let v = embed("concepts-v1", "a kitten").expect("embedding");
    assert_eq!(v.len(), 8);
    let norm: f32 = v.iter().map(|x| x * x).sum();
    assert!((norm - 1.0).abs() < 1e-5, "not normalised: {v:?}");
    assert!(v[0] > 0.99, "{v:?}");
    let seen = server.seen();
    let last = seen.last().expect("a request");
    assert_eq!(last.path, "/v1/embeddings");
    assert_eq!(last.body["model"], "concepts-v1");
    assert_eq!(last.body["input"], json!(["a kitten"]));
    assert_eq!(
        last.authorization.as_deref(),
        Some("Bearer sk-test-0123456789")
    );
    // Synonyms embed alike with this model, unlike the lexical embedding.
    let cat = embed("concepts-v1", "my cat").expect("embedding");
    let dot: f32 = v.iter().zip(&cat).map(|(a, b)| a * b).sum();
    assert!(dot > 0.99, "{dot}");

    let before = server.seen().len();
    let e = embed("always-500", "x").expect_err("500");
    assert_eq!(e.code, agentos::abi::Errno::EIO);
    assert!(e.message.contains("embeddings endpoint"), "{e}");
    assert!(e.message.contains(&server.port.to_string()), "{e}");
    assert_eq!(server.seen().len() - before, 3, "1 attempt + 2 retries");

    let before = server.seen().len();
    let e = embed("bad-400", "x").expect_err("400");
    assert_eq!(e.code, agentos::abi::Errno::EIO);
    assert!(e.message.contains("input too long"), "{e}");
    assert_eq!(server.seen().len() - before, 1, "a 400 is not retried");

    let e = embed("garbage", "x").expect_err("no data");
    assert!(e.message.contains("data"), "{e}");
    assert!(!e.message.contains("sk-test"), "the key leaked: {e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_daemon_embeds_with_the_configured_endpoint() {
    if !require_root("the_daemon_embeds_with_the_configured_endpoint") {
        return;
    }
    let server = EmbedServer::start();
    let env = Env::start(&Backend::Http(&server));
    let (_, r) = env.run(
        "semantic",
        "default",
        MEM,
        json!([
            write("pet", "My cat sleeps on the sofa all day"),
            write("garage", "The automobile needs new tires"),
            write("finance", "The bank raised its interest rate"),
            read(json!({"query": "kitten", "k": 3})),
            read(json!({"query": "vehicle", "k": 1})),
            read(json!({"query": "loan money", "k": 1})),
        ]),
    );
    for reply in &r[..3] {
        result(reply);
    }
    assert_eq!(keys(&r[3])[0], "pet", "{}", r[3]);
    let top = result(&r[3])["results"][0]["score"]
        .as_f64()
        .expect("score");
    assert!(top > 0.9, "{}", r[3]);
    assert_eq!(keys(&r[4]), vec!["garage"]);
    assert_eq!(keys(&r[5]), vec!["finance"]);
    let seen = server.seen();
    assert!(seen.len() >= 6, "{seen:?}");
    assert!(seen.iter().all(|s| s.body["model"] == "concepts-v1"));
}
