//! Tests of the file driver (they run as root: the agent is a real uid).

#![allow(clippy::unwrap_used)]

use super::open::open_checked;
use super::path::WsPath;
use super::*;
use crate::abi::errno::Errno;
use crate::drivers::creds::{current_fsgid, current_fsuid, set_thread_groups};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::{Gid, getgroups};
use serde_json::{Value, json};
use std::collections::hash_map::DefaultHasher;
use std::fs::{File, OpenOptions};
use std::hash::{Hash, Hasher};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, chown, lchown, symlink};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const AGENT_UID: u32 = 2_900_001;
const AGENT_GID: u32 = 2_900_001;

const BIG: FsLimits = FsLimits {
    quota_bytes: 1 << 30,
    max_file_bytes: 1 << 26,
    max_read_bytes: 1 << 26,
};

/// A temporary directory `base` holding the workspace `base/ws` (owned by
/// the agent, 0700) and host files beside it. Removed on drop.
struct TestWs {
    base: PathBuf,
    dir: PathBuf,
    ws: Arc<Workspace>,
}

impl Drop for TestWs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

fn setup(limits: FsLimits) -> TestWs {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "these tests must run as root"
    );
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let base = std::env::temp_dir().join(format!(
        "agentos-fs-test-{}-{n}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir(&base).unwrap();
    std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = base.join("ws");
    std::fs::create_dir(&dir).unwrap();
    chown(&dir, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let ws = Arc::new(Workspace::open(&dir, AGENT_UID, AGENT_GID, limits).unwrap());
    TestWs { base, dir, ws }
}

/// A host file beside the workspace, owned by the agent and world-writable,
/// so that only the confinement (not DAC) keeps the agent away from it.
fn host_file(t: &TestWs, name: &str, content: &[u8]) -> PathBuf {
    let p = t.base.join(name);
    std::fs::write(&p, content).unwrap();
    chown(&p, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o666)).unwrap();
    p
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn err(r: Result<Value, SysError>) -> SysError {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e,
    }
}

fn write(ws: &Workspace, path: &str, content: &str) -> Result<Value, SysError> {
    fs_write(ws, &json!({ "path": path, "content": content }))
}

fn read(ws: &Workspace, path: &str) -> Result<Value, SysError> {
    fs_read(ws, &json!({ "path": path }))
}

fn read_text(ws: &Workspace, path: &str) -> String {
    read(ws, path).unwrap()["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn hash_file(p: &Path) -> u64 {
    let mut h = DefaultHasher::new();
    std::fs::read(p).unwrap().hash(&mut h);
    h.finish()
}

/// Runs `f` on another thread and fails if it takes more than 5 s.
fn within_5s<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("the operation hung for more than 5 s")
}

fn thread_creds() -> (u32, u32, Vec<u32>) {
    let groups = getgroups().unwrap().into_iter().map(Gid::as_raw).collect();
    (current_fsuid().as_raw(), current_fsgid().as_raw(), groups)
}

#[test]
fn round_trip_write_read_list_delete() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let r = write(ws, "a/b/c.txt", "hello").unwrap();
    assert_eq!(r, json!({ "bytes_written": 5, "size": 5 }));
    for (p, mode) in [("a", 0o700), ("a/b", 0o700), ("a/b/c.txt", 0o600)] {
        let md = std::fs::symlink_metadata(t.dir.join(p)).unwrap();
        assert_eq!((md.uid(), md.gid()), (AGENT_UID, AGENT_GID), "owner of {p}");
        assert_eq!(md.mode() & 0o7777, mode, "mode of {p}");
    }
    assert_eq!(std::fs::read(t.dir.join("a/b/c.txt")).unwrap(), b"hello");
    let r = read(ws, "a/b/c.txt").unwrap();
    assert_eq!(
        r,
        json!({ "content": "hello", "size": 5, "truncated": false, "encoding": "utf8" })
    );

    let r = fs_write(
        ws,
        &json!({ "path": "a/b/c.txt", "content": " world", "append": true }),
    )
    .unwrap();
    assert_eq!(r, json!({ "bytes_written": 6, "size": 11 }));
    assert_eq!(read_text(ws, "a/b/c.txt"), "hello world");
    // Overwriting truncates the old content.
    write(ws, "a/b/c.txt", "bye").unwrap();
    assert_eq!(read_text(ws, "a/b/c.txt"), "bye");
    // Appending to a missing file creates it.
    fs_write(
        ws,
        &json!({ "path": "new.txt", "content": "x", "append": true }),
    )
    .unwrap();
    assert_eq!(read_text(ws, "new.txt"), "x");

    let r = fs_list(ws, &json!({})).unwrap();
    assert_eq!(
        r,
        json!({ "entries": [
            { "name": "a", "type": "dir", "size": 0 },
            { "name": "new.txt", "type": "file", "size": 1 },
        ], "truncated": false })
    );
    let r = fs_list(ws, &json!({ "path": "/a/b" })).unwrap();
    assert_eq!(
        r["entries"],
        json!([{ "name": "c.txt", "type": "file", "size": 3 }])
    );

    let e = err(fs_delete(ws, &json!({ "path": "a" })));
    assert_eq!(e.code, Errno::ENOTEMPTY, "{e}");
    assert!(t.dir.join("a/b/c.txt").exists());
    assert_eq!(
        fs_delete(ws, &json!({ "path": "new.txt" })).unwrap(),
        json!({ "deleted": true })
    );
    assert!(!t.dir.join("new.txt").exists());
    fs_delete(ws, &json!({ "path": "a", "recursive": true })).unwrap();
    assert!(!t.dir.join("a").exists());
    assert_eq!(fs_list(ws, &Value::Null).unwrap()["entries"], json!([]));
    assert_eq!(err(read(ws, "a/b/c.txt")).code, Errno::ENOENT);
    assert_eq!(
        err(fs_delete(ws, &json!({ "path": "a" }))).code,
        Errno::ENOENT
    );
    // An empty directory goes without `recursive`.
    std::fs::create_dir(t.dir.join("empty")).unwrap();
    fs_delete(ws, &json!({ "path": "empty" })).unwrap();
    assert!(!t.dir.join("empty").exists());
}

#[test]
fn base64_round_trip_and_utf8_refusal() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let bytes: Vec<u8> = (0..=255u8).collect();
    let b64 = STANDARD.encode(&bytes);
    let r = fs_write(
        ws,
        &json!({ "path": "bin", "content": b64, "encoding": "base64" }),
    )
    .unwrap();
    assert_eq!(r["bytes_written"], 256);
    assert_eq!(std::fs::read(t.dir.join("bin")).unwrap(), bytes);
    let r = fs_read(ws, &json!({ "path": "bin", "encoding": "base64" })).unwrap();
    assert_eq!(r["content"], json!(b64));
    assert_eq!(r["encoding"], "base64");
    let e = err(read(ws, "bin"));
    assert_eq!(e.code, Errno::EINVAL);
    assert!(e.message.contains("\"encoding\": \"base64\""), "{e}");
    // Unpadded base64 is accepted too.
    fs_write(
        ws,
        &json!({ "path": "p", "content": "YWI", "encoding": "base64" }),
    )
    .unwrap();
    assert_eq!(read_text(ws, "p"), "ab");
}

#[test]
fn utf8_character_cut_by_the_limit_is_left_out() {
    let t = setup(BIG);
    let ws = &*t.ws;
    write(ws, "e.txt", "ééé").unwrap(); // 6 bytes
    let r = fs_read(ws, &json!({ "path": "e.txt", "max_bytes": 3 })).unwrap();
    assert_eq!(r["content"], "é");
    assert_eq!(r["truncated"], true);
    let r = fs_read(ws, &json!({ "path": "e.txt", "offset": 2, "max_bytes": 4 })).unwrap();
    assert_eq!(r["content"], "éé");
    assert_eq!(r["truncated"], false);
    // A read starting inside a character is not UTF-8.
    assert_eq!(
        err(fs_read(ws, &json!({ "path": "e.txt", "offset": 1 }))).code,
        Errno::EINVAL
    );
}

#[test]
fn workspace_prefix_and_relative_paths_name_the_same_file() {
    let t = setup(BIG);
    let ws = &*t.ws;
    write(ws, "/a.txt", "1").unwrap();
    assert_eq!(read_text(ws, "a.txt"), "1");
    assert_eq!(read_text(ws, "/workspace/a.txt"), "1");
    assert_eq!(read_text(ws, "./a.txt"), "1");
    assert_eq!(read_text(ws, "//workspace//./a.txt"), "1");
    write(ws, "/workspace/a.txt", "2").unwrap();
    assert_eq!(read_text(ws, "/a.txt"), "2");
    write(ws, "a.txt", "3").unwrap();
    assert_eq!(read_text(ws, "/workspace/a.txt"), "3");
    assert_eq!(names_in(&t.dir), vec!["a.txt"]);
    for root in ["/", "/workspace", "/workspace/", ".", "sub/.."] {
        let r = fs_list(ws, &json!({ "path": root })).unwrap();
        assert_eq!(r["entries"][0]["name"], "a.txt", "listing {root}");
    }
    // Only a leading component of an absolute path is the mount point.
    write(ws, "workspace/b.txt", "4").unwrap();
    assert!(t.dir.join("workspace/b.txt").exists());
    assert_eq!(read_text(ws, "/workspace/workspace/b.txt"), "4");
    write(ws, "x/../c.txt", "5").unwrap();
    assert!(t.dir.join("c.txt").exists());
    assert!(!t.dir.join("x").exists());
    assert_eq!(err(read(ws, "/")).code, Errno::EISDIR);
    assert_eq!(err(write(ws, "/workspace", "x")).code, Errno::EISDIR);
}

#[test]
fn dotdot_escapes_are_exdev_and_touch_nothing() {
    let t = setup(BIG);
    let ws = &*t.ws;
    std::fs::create_dir(t.dir.join("a")).unwrap();
    chown(t.dir.join("a"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    let before = names_in(&t.base);
    for p in [
        "../x",
        "/../../etc/passwd",
        "a/../../x",
        "/workspace/../x",
        "..",
        "a/../..",
    ] {
        for (what, r) in [
            ("read", read(ws, p)),
            ("write", write(ws, p, "pwned")),
            ("list", fs_list(ws, &json!({ "path": p }))),
            (
                "delete",
                fs_delete(ws, &json!({ "path": p, "recursive": true })),
            ),
        ] {
            let e = err(r);
            assert_eq!(e.code, Errno::EXDEV, "{what} {p}: {e}");
            assert!(e.message.contains("escapes the workspace"), "{e}");
        }
    }
    assert_eq!(names_in(&t.base), before);
    assert_eq!(names_in(&t.dir), vec!["a"]);
    assert!(std::fs::metadata("/etc/passwd").unwrap().len() > 0);
}

#[test]
fn deleting_the_root_is_einval() {
    let t = setup(BIG);
    let ws = &*t.ws;
    write(ws, "f", "x").unwrap();
    for p in ["/", "/workspace", ".", "a/..", "/workspace/."] {
        let e = err(fs_delete(ws, &json!({ "path": p, "recursive": true })));
        assert_eq!(e.code, Errno::EINVAL, "{p}: {e}");
    }
    assert!(t.dir.join("f").exists());
}

mod escape;
mod limits;
