//! Quotas, usage, recursive deletion, type errors and bad arguments.

use super::*;

#[test]
fn quota_and_size_limits() {
    let t = setup(FsLimits {
        quota_bytes: 1000,
        max_file_bytes: 600,
        max_read_bytes: 100,
    });
    let ws = &*t.ws;
    let data = |n: usize, c: char| c.to_string().repeat(n);
    write(ws, "a.txt", &data(500, 'a')).unwrap();
    assert_eq!(ws.usage_bytes().unwrap(), 500);

    let e = err(write(ws, "b.txt", &data(600, 'b')));
    assert_eq!(e.code, Errno::EQUOTA, "{e}");
    assert!(
        e.message.contains("500") && e.message.contains("1100") && e.message.contains("1000"),
        "{e}"
    );
    assert!(!t.dir.join("b.txt").exists());
    assert_eq!(ws.usage_bytes().unwrap(), 500);

    let e = err(write(ws, "c.txt", &data(601, 'c')));
    assert_eq!(e.code, Errno::EQUOTA, "{e}");
    assert!(
        e.message.contains("601") && e.message.contains("600"),
        "{e}"
    );
    assert!(!t.dir.join("c.txt").exists());

    // Replacing a file counts only the difference.
    write(ws, "a.txt", &data(600, 'A')).unwrap();
    assert_eq!(ws.usage_bytes().unwrap(), 600);
    // Appending past the per-file limit: refused, the file untouched.
    let e = err(fs_write(
        ws,
        &json!({ "path": "a.txt", "content": "x", "append": true }),
    ));
    assert_eq!(e.code, Errno::EQUOTA, "{e}");
    assert_eq!(
        std::fs::read_to_string(t.dir.join("a.txt")).unwrap(),
        data(600, 'A')
    );

    write(ws, "c.txt", &data(400, 'c')).unwrap(); // exactly at the quota
    assert_eq!(ws.usage_bytes().unwrap(), 1000);
    assert_eq!(err(write(ws, "d/e.txt", "x")).code, Errno::EQUOTA);
    assert_eq!(ws.usage_bytes().unwrap(), 1000);
    // Shrinking is always allowed.
    write(ws, "a.txt", &data(100, 'a')).unwrap();
    assert_eq!(ws.usage_bytes().unwrap(), 500);
    write(ws, "b.txt", &data(450, 'b')).unwrap();
    // Overwriting a.txt (100) with 200 bytes: 950 - 100 + 200 = 1050 > 1000.
    let e = err(write(ws, "a.txt", &data(200, 'z')));
    assert_eq!(e.code, Errno::EQUOTA, "{e}");
    assert_eq!(
        std::fs::read_to_string(t.dir.join("a.txt")).unwrap(),
        data(100, 'a')
    );
    assert_eq!(ws.usage_bytes().unwrap(), 950);

    // Reads are capped at max_read_bytes.
    let r = read(ws, "c.txt").unwrap();
    assert_eq!(r["content"].as_str().unwrap().len(), 100);
    assert_eq!(
        (r["size"].clone(), r["truncated"].clone()),
        (json!(400), json!(true))
    );
    let r = fs_read(ws, &json!({ "path": "c.txt", "max_bytes": 5000 })).unwrap();
    assert_eq!(r["content"].as_str().unwrap().len(), 100);
    // (content, truncated) of an FS_READ with `args`.
    let read_window = |args: Value| {
        let r = fs_read(ws, &args).unwrap();
        (r["content"].clone(), r["truncated"].clone())
    };
    assert_eq!(
        read_window(json!({ "path": "c.txt", "offset": 395, "max_bytes": 10 })),
        (json!("ccccc"), json!(false))
    );
    assert_eq!(
        read_window(json!({ "path": "c.txt", "offset": 10, "max_bytes": 0 })),
        (json!(""), json!(true))
    );
    assert_eq!(
        read_window(json!({ "path": "c.txt", "offset": u64::MAX })),
        (json!(""), json!(false))
    );
}

#[test]
fn usage_counts_files_without_following_symlinks() {
    let t = setup(BIG);
    let ws = &*t.ws;
    assert_eq!(ws.usage_bytes().unwrap(), 0);
    write(ws, "a/b/c", &"x".repeat(1000)).unwrap();
    write(ws, "a/d", &"y".repeat(24)).unwrap();
    let big = host_file(&t, "big", &vec![0u8; 1 << 20]);
    symlink(&big, t.dir.join("a/big")).unwrap(); // counts its own length only
    symlink(&t.base, t.dir.join("up")).unwrap(); // not followed
    let expected = 1024 + big.as_os_str().len() as u64 + t.base.as_os_str().len() as u64;
    assert_eq!(ws.usage_bytes().unwrap(), expected);
}

#[test]
fn recursive_delete_stays_beneath() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let host_dir = t.base.join("host");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let keep = host_dir.join("keep");
    std::fs::write(&keep, b"keep").unwrap();
    chown(&keep, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    let mut deep = String::from("top");
    for i in 0..50 {
        deep.push_str(&format!("/l{i}"));
    }
    write(ws, &format!("{deep}/leaf"), "x").unwrap();
    write(ws, "top/file", "x").unwrap();
    symlink(&host_dir, t.dir.join("top/abs")).unwrap();
    symlink("../../host", t.dir.join("top/l0/rel")).unwrap();
    std::fs::hard_link(&keep, t.dir.join("top/hl")).unwrap();
    fs_delete(ws, &json!({ "path": "/workspace/top", "recursive": true })).unwrap();
    assert!(!t.dir.join("top").exists());
    assert_eq!(std::fs::read(&keep).unwrap(), b"keep");
    assert_eq!(names_in(&host_dir), vec!["keep"]);
    assert!(names_in(&t.dir).is_empty());
}

#[test]
fn type_errors() {
    let t = setup(BIG);
    let ws = &*t.ws;
    write(ws, "f", "x").unwrap();
    std::fs::create_dir(t.dir.join("dir")).unwrap();
    assert_eq!(err(read(ws, "dir")).code, Errno::EISDIR);
    assert_eq!(err(write(ws, "dir", "x")).code, Errno::EISDIR);
    assert_eq!(err(write(ws, "f/x", "x")).code, Errno::ENOTDIR);
    assert_eq!(err(read(ws, "f/x")).code, Errno::ENOTDIR);
    assert_eq!(
        err(fs_list(ws, &json!({ "path": "f" }))).code,
        Errno::ENOTDIR
    );
    assert_eq!(err(read(ws, "missing")).code, Errno::ENOENT);
    assert_eq!(
        err(fs_list(ws, &json!({ "path": "missing" }))).code,
        Errno::ENOENT
    );
    // A symlink inside the workspace may be a directory on the way.
    std::fs::create_dir(t.dir.join("real")).unwrap();
    chown(t.dir.join("real"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    symlink("real", t.dir.join("alias")).unwrap();
    write(ws, "alias/new/x", "via").unwrap();
    assert_eq!(std::fs::read(t.dir.join("real/new/x")).unwrap(), b"via");
    assert_eq!(read_text(ws, "alias/new/x"), "via");
    let long = "n".repeat(300);
    assert_eq!(err(write(ws, &long, "x")).code, Errno::EINVAL);
}

#[test]
fn bad_arguments_are_einval_naming_the_field() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let cases: Vec<(&str, Result<Value, SysError>, &str)> = vec![
        (
            "FS_WRITE",
            fs_write(ws, &json!({ "content": "x" })),
            "missing field `path`",
        ),
        (
            "FS_WRITE",
            fs_write(ws, &json!({ "path": "a" })),
            "missing field `content`",
        ),
        ("FS_READ", fs_read(ws, &json!({})), "missing field `path`"),
        (
            "FS_DELETE",
            fs_delete(ws, &Value::Null),
            "missing field `path`",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!({ "path": 5 })),
            "field `path`",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!({ "path": "a", "offset": "x" })),
            "field `offset`",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!({ "path": "a", "offset": -1 })),
            "field `offset`",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!({ "path": "a", "max_bytes": 1.5 })),
            "field `max_bytes`",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!({ "path": "a", "encoding": "latin1" })),
            "field `encoding`",
        ),
        (
            "FS_WRITE",
            fs_write(ws, &json!({ "path": "a", "content": 1 })),
            "field `content`",
        ),
        (
            "FS_WRITE",
            fs_write(ws, &json!({ "path": "a", "content": "x", "append": "yes" })),
            "field `append`",
        ),
        (
            "FS_DELETE",
            fs_delete(ws, &json!({ "path": "a", "recursive": 1 })),
            "field `recursive`",
        ),
        (
            "FS_LIST",
            fs_list(ws, &json!({ "path": ["a"] })),
            "field `path`",
        ),
        (
            "FS_WRITE",
            fs_write(ws, &json!({ "path": "a", "content": "x", "mode": 777 })),
            "unknown field `mode`",
        ),
        (
            "FS_LIST",
            fs_list(ws, &json!({ "recursive": true })),
            "unknown field `recursive`",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!(["a"])),
            "expected a JSON object",
        ),
        (
            "FS_READ",
            fs_read(ws, &json!("a")),
            "expected a JSON object",
        ),
        ("FS_READ", read(ws, "a\0b"), "NUL"),
        ("FS_WRITE", write(ws, "a\0b", "x"), "NUL"),
        ("FS_READ", read(ws, ""), "empty"),
        ("FS_LIST", fs_list(ws, &json!({ "path": "" })), "empty"),
        ("FS_READ", read(ws, &"a/".repeat(2049)), "longer than 4096"),
        (
            "FS_WRITE",
            fs_write(
                ws,
                &json!({ "path": "a", "content": "!!", "encoding": "base64" }),
            ),
            "field `content`",
        ),
    ];
    for (op, r, needle) in cases {
        let e = err(r);
        assert_eq!(e.code, Errno::EINVAL, "{e}");
        assert!(
            e.message.starts_with(&format!("bad arguments for {op}: ")),
            "{e}"
        );
        assert!(e.message.contains(needle), "{e} should mention {needle}");
    }
    assert!(names_in(&t.dir).is_empty());
    // A 4096-byte path is still accepted.
    let p = format!("{}/{}", "d".repeat(200), "f".repeat(200)).repeat(1);
    assert!(p.len() <= 4096);
    write(ws, &p, "ok").unwrap();
    // Huge junk is not echoed back whole.
    let junk = "j".repeat(100_000);
    let e = err(fs_read(ws, &json!({ "path": "a", "offset": junk })));
    assert!(
        e.message.len() < 1000,
        "message of {} bytes",
        e.message.len()
    );
}
