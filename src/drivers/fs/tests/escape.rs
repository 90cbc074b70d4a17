//! Escapes: symlinks, hard links, special files, races and credentials.

use super::*;

#[test]
fn symlinks_out_of_the_workspace_are_refused() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let shadow = Path::new("/etc/shadow");
    let shadow_hash = hash_file(shadow);
    let shadow_mtime = std::fs::metadata(shadow).unwrap().mtime();
    let host = host_file(&t, "host.txt", b"host secret");
    let host_dir = t.base.join("hostdir");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let links: [(&str, PathBuf); 6] = [
        ("shadow", shadow.into()),
        ("procroot", "/proc/self/root".into()),
        ("up", "../../..".into()),
        ("hostabs", host.clone()),
        ("hostrel", "../host.txt".into()),
        ("hostdir", host_dir.clone()),
    ];
    for (name, target) in &links {
        symlink(target, t.dir.join(name)).unwrap();
        lchown(t.dir.join(name), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    }
    let base_before = names_in(&t.base);
    // The symlink itself as final component: refused, never followed.
    for (name, _) in &links {
        let e = err(read(ws, name));
        assert_eq!(e.code, Errno::EFTYPE, "read {name}: {e}");
        assert!(e.message.contains("symlink"), "{e}");
        let e = err(write(ws, name, "pwned"));
        assert_eq!(e.code, Errno::EFTYPE, "write {name}: {e}");
        let e = err(fs_write(
            ws,
            &json!({ "path": name, "content": "pwned", "append": true }),
        ));
        assert_eq!(e.code, Errno::EFTYPE, "append {name}: {e}");
        let e = err(fs_list(ws, &json!({ "path": name })));
        assert_eq!(e.code, Errno::EFTYPE, "list {name}: {e}");
    }
    // Through the symlink as a directory: escapes.
    for p in [
        "procroot/etc/shadow",
        "procroot/etc/passwd",
        "up/etc/passwd",
        "up/tmp/pwned",
        "hostdir/pwned",
        "hostdir/x/y/z",
        "shadow/x",
    ] {
        let e = err(read(ws, p));
        assert!(
            matches!(e.code, Errno::EXDEV | Errno::ENOTDIR | Errno::ENOENT),
            "read {p}: {e}"
        );
        let e = err(write(ws, p, "pwned"));
        assert_eq!(e.code, Errno::EXDEV, "write {p}: {e}");
        let e = err(fs_delete(ws, &json!({ "path": p })));
        assert_eq!(e.code, Errno::EXDEV, "delete {p}: {e}");
    }
    std::fs::create_dir(host_dir.join("sub")).unwrap();
    for p in ["procroot/etc", "up/tmp", "up/etc/", "hostdir/sub"] {
        let e = err(fs_list(ws, &json!({ "path": p })));
        assert_eq!(e.code, Errno::EXDEV, "list {p}: {e}");
    }
    // Deleting a symlink removes the link, not its target.
    fs_delete(ws, &json!({ "path": "hostabs" })).unwrap();
    fs_delete(ws, &json!({ "path": "shadow", "recursive": true })).unwrap();
    fs_delete(ws, &json!({ "path": "hostdir", "recursive": true })).unwrap();
    assert_eq!(hash_file(shadow), shadow_hash);
    assert_eq!(std::fs::metadata(shadow).unwrap().mtime(), shadow_mtime);
    assert_eq!(std::fs::read(&host).unwrap(), b"host secret");
    assert_eq!(names_in(&host_dir), vec!["sub"]);
    assert!(names_in(&host_dir.join("sub")).is_empty());
    assert_eq!(names_in(&t.base), base_before);
    assert!(!Path::new("/tmp/pwned").exists());
}

#[test]
fn hard_links_to_host_files_are_refused() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let host = host_file(&t, "host.txt", b"host secret");
    std::fs::hard_link(&host, t.dir.join("hl")).unwrap();
    let e = err(read(ws, "hl"));
    assert_eq!(e.code, Errno::EFTYPE, "{e}");
    assert!(e.message.contains("hard-linked files are refused"), "{e}");
    for append in [false, true] {
        let e = err(fs_write(
            ws,
            &json!({ "path": "hl", "content": "pwned", "append": append }),
        ));
        assert_eq!(e.code, Errno::EFTYPE, "{e}");
    }
    assert_eq!(std::fs::read(&host).unwrap(), b"host secret");
    assert_eq!(std::fs::metadata(&host).unwrap().nlink(), 2);
    // Deleting the link is fine and leaves the host file alone.
    fs_delete(ws, &json!({ "path": "hl" })).unwrap();
    assert_eq!(std::fs::read(&host).unwrap(), b"host secret");
}

#[test]
fn fifos_and_sockets_are_refused_without_hanging() {
    let t = setup(BIG);
    nix::unistd::mkfifo(&t.dir.join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
    chown(t.dir.join("fifo"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(t.dir.join("sock")).unwrap();
    chown(t.dir.join("sock"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    for (name, kind) in [("fifo", "FIFO"), ("sock", "socket")] {
        let ws = Arc::clone(&t.ws);
        let started = Instant::now();
        let (r, w, a) = within_5s(move || {
            (
                read(&ws, name),
                write(&ws, name, "x"),
                fs_write(
                    &ws,
                    &json!({ "path": name, "content": "x", "append": true }),
                ),
            )
        });
        assert!(started.elapsed() < Duration::from_secs(5));
        for (what, r) in [("read", r), ("write", w), ("append", a)] {
            let e = err(r);
            assert_eq!(e.code, Errno::EFTYPE, "{what} {name}: {e}");
            assert!(e.message.contains(kind), "{e}");
        }
    }
    // Refused before open: also with the other end held open by a reader.
    let fifo_reader = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(t.dir.join("fifo"))
        .unwrap();
    let ws = Arc::clone(&t.ws);
    let e = err(within_5s(move || write(&ws, "fifo", "x")));
    assert_eq!(e.code, Errno::EFTYPE, "{e}");
    drop(fifo_reader);
    let r = fs_list(&t.ws, &json!({})).unwrap();
    assert_eq!(
        r["entries"],
        json!([
            { "name": "fifo", "type": "other", "size": 0 },
            { "name": "sock", "type": "other", "size": 0 },
        ])
    );
    assert!(t.dir.join("fifo").exists());
}

/// Gives the test thread supplementary group 0, as a daemon started from a
/// root login shell has, until dropped.
struct RootGroup(Vec<libc::gid_t>);

impl RootGroup {
    fn join() -> Self {
        let prev = getgroups().unwrap().into_iter().map(Gid::as_raw).collect();
        set_thread_groups(&[0]).unwrap();
        RootGroup(prev)
    }
}

impl Drop for RootGroup {
    fn drop(&mut self) {
        set_thread_groups(&self.0).unwrap();
    }
}

/// The checks made on the opened fd hold on their own, i.e. when the
/// object was swapped after the `O_PATH` probe.
#[test]
fn open_checked_refuses_without_the_probe() {
    let t = setup(BIG);
    nix::unistd::mkfifo(&t.dir.join("fifo"), Mode::from_bits_truncate(0o666)).unwrap();
    chown(t.dir.join("fifo"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    write(&t.ws, "target", "t").unwrap();
    symlink("target", t.dir.join("link")).unwrap();
    let host = host_file(&t, "host.txt", b"host");
    std::fs::hard_link(&host, t.dir.join("hl")).unwrap();
    std::fs::create_dir(t.dir.join("dir")).unwrap();
    let cases = [
        ("fifo", OFlag::O_RDONLY, Errno::EFTYPE),
        ("fifo", OFlag::O_WRONLY, Errno::EFTYPE),
        ("link", OFlag::O_RDONLY, Errno::EFTYPE),
        ("link", OFlag::O_WRONLY, Errno::EFTYPE),
        ("hl", OFlag::O_RDONLY, Errno::EFTYPE),
        ("hl", OFlag::O_WRONLY, Errno::EFTYPE),
        ("dir", OFlag::O_RDONLY, Errno::EISDIR),
    ];
    for (name, access, code) in cases {
        let ws = Arc::clone(&t.ws);
        let r = within_5s(move || {
            let _creds = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
            let path = WsPath::parse("TEST", name).unwrap();
            open_checked(
                ws.root().expect("root").as_fd(),
                name,
                access,
                "TEST",
                &path,
            )
            .map(drop)
        });
        let e = r.expect_err(name);
        assert_eq!(e.code, code, "{name} {access:?}: {e}");
    }
    assert_eq!(std::fs::read(&host).unwrap(), b"host");
}

#[test]
fn root_owned_files_are_out_of_reach() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let _root_group = RootGroup::join();
    assert_eq!(thread_creds().2, vec![0]);
    for (name, mode) in [("secret600", 0o600), ("secret640", 0o640)] {
        let p = t.dir.join(name);
        std::fs::write(&p, b"root only").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        // 0640 root:root would be readable through the daemon's group 0.
        let e = err(read(ws, name));
        assert_eq!(e.code, Errno::EACCES, "read {name}: {e}");
        let e = err(write(ws, name, "pwned"));
        assert_eq!(e.code, Errno::EACCES, "write {name}: {e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"root only");
    }
    // A root-owned directory: no creating inside, no listing.
    let d = t.dir.join("rootdir");
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    assert_eq!(err(write(ws, "rootdir/x", "pwned")).code, Errno::EACCES);
    assert_eq!(err(write(ws, "rootdir/sub/x", "pwned")).code, Errno::EACCES);
    assert_eq!(
        err(fs_list(ws, &json!({ "path": "rootdir" }))).code,
        Errno::EACCES
    );
    assert!(names_in(&d).is_empty());
    // ...but a world-readable root file can be read (DAC applies as "other").
    std::fs::write(t.dir.join("public"), b"hi").unwrap();
    assert_eq!(read_text(ws, "public"), "hi");
}

#[test]
fn credentials_are_restored_after_every_call() {
    let t = setup(BIG);
    let ws = &*t.ws;
    let _root_group = RootGroup::join();
    let before = thread_creds();
    assert_eq!(before, (0, 0, vec![0]));
    write(ws, "f", "x").unwrap();
    assert_eq!(thread_creds(), before);
    let _ = read(ws, "../x");
    let _ = read(ws, "missing");
    let _ = fs_list(ws, &json!({ "path": "f" }));
    let _ = fs_delete(ws, &json!({ "path": "f" }));
    assert_eq!(thread_creds(), before);
    {
        let _g = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
        assert_eq!(thread_creds(), (AGENT_UID, AGENT_GID, vec![]));
    }
    assert_eq!(thread_creds(), before);
    let r = std::panic::catch_unwind(|| {
        let _g = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
        panic!("unwinding through the guard");
    });
    assert!(r.is_err());
    assert_eq!(thread_creds(), before);
    // Other, already running threads are not affected while one is switched.
    let (ask_tx, ask_rx) = mpsc::channel::<()>();
    let (tell_tx, tell_rx) = mpsc::channel();
    let other = std::thread::spawn(move || {
        while ask_rx.recv().is_ok() {
            tell_tx.send(thread_creds()).unwrap();
        }
    });
    {
        let _g = AgentCreds::enter(AGENT_UID, AGENT_GID).unwrap();
        assert_eq!(thread_creds(), (AGENT_UID, AGENT_GID, vec![]));
        ask_tx.send(()).unwrap();
        assert_eq!(tell_rx.recv().unwrap(), before);
    }
    drop(ask_tx);
    other.join().unwrap();
}

#[test]
fn root_and_invalid_ids_are_refused() {
    let t = setup(BIG);
    for (uid, gid) in [
        (0, AGENT_GID),
        (AGENT_UID, 0),
        (u32::MAX, AGENT_GID),
        (AGENT_UID, u32::MAX),
    ] {
        let e = Workspace::open(&t.dir, uid, gid, BIG).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
    symlink(&t.dir, t.base.join("wslink")).unwrap();
    assert!(Workspace::open(&t.base.join("wslink"), AGENT_UID, AGENT_GID, BIG).is_err());
}

#[test]
fn symlink_swap_race_never_reaches_the_host() {
    let t = setup(BIG);
    let ws = &*t.ws;
    const SECRET: &str = "HOST-SENTINEL-CONTENT";
    let host_dir = t.base.join("host");
    std::fs::create_dir(&host_dir).unwrap();
    std::fs::set_permissions(&host_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sentinel = host_dir.join("sentinel");
    std::fs::write(&sentinel, SECRET).unwrap();
    chown(&sentinel, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    std::fs::set_permissions(&sentinel, std::fs::Permissions::from_mode(0o666)).unwrap();
    let sentinel_mtime = std::fs::metadata(&sentinel).unwrap().mtime_nsec();

    std::fs::create_dir(t.dir.join("d")).unwrap();
    chown(t.dir.join("d"), Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    symlink(&host_dir, t.dir.join("e")).unwrap(); // absolute
    symlink("../host", t.dir.join("f")).unwrap(); // relative, climbing out
    let ws_dir = File::open(&t.dir).unwrap();

    let stop = AtomicBool::new(false);
    let swaps = AtomicUsize::new(0);
    let ok_reads = AtomicUsize::new(0);
    let ok_writes = AtomicUsize::new(0);
    let refused = AtomicUsize::new(0);
    let leaked: Mutex<Vec<String>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        s.spawn(|| {
            let deadline = Instant::now() + Duration::from_secs(2);
            let mut i = 0usize;
            while Instant::now() < deadline {
                let other = if i % 2 == 0 { "e" } else { "f" };
                let exchange = || {
                    nix::fcntl::renameat2(
                        &ws_dir,
                        "d",
                        &ws_dir,
                        other,
                        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                    )
                    .unwrap();
                };
                exchange();
                exchange();
                // Leave `d` a symlink for a moment, too.
                exchange();
                std::thread::yield_now();
                exchange();
                swaps.fetch_add(4, Ordering::Relaxed);
                i += 1;
            }
            stop.store(true, Ordering::SeqCst);
        });
        for worker in 0..2 {
            let (stop, ok_reads, ok_writes, refused, leaked) =
                (&stop, &ok_reads, &ok_writes, &refused, &leaked);
            s.spawn(move || {
                let paths = ["d/sentinel", "/workspace/d/sentinel", "d/./sentinel"];
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) {
                    let p = paths[n % paths.len()];
                    n += 1;
                    let w = if worker == 0 {
                        write(ws, p, "AGENT")
                    } else {
                        fs_write(ws, &json!({ "path": "d/sub/sentinel", "content": "AGENT" }))
                    };
                    match w {
                        Ok(_) => ok_writes.fetch_add(1, Ordering::Relaxed),
                        Err(_) => refused.fetch_add(1, Ordering::Relaxed),
                    };
                    match read(ws, p) {
                        Ok(v) => {
                            ok_reads.fetch_add(1, Ordering::Relaxed);
                            // Empty while the other worker is between truncation and write.
                            let c = v["content"].as_str().unwrap_or_default().to_owned();
                            if c != "AGENT" && !c.is_empty() {
                                leaked.lock().unwrap().push(c);
                            }
                        }
                        Err(e) => {
                            assert!(
                                matches!(e.code, Errno::EXDEV | Errno::ENOENT | Errno::EAGAIN),
                                "unexpected error {e}"
                            );
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    let leaked = leaked.into_inner().unwrap();
    assert!(
        leaked.is_empty(),
        "reads returned foreign content: {leaked:?}"
    );
    assert_eq!(std::fs::read_to_string(&sentinel).unwrap(), SECRET);
    assert_eq!(
        std::fs::metadata(&sentinel).unwrap().mtime_nsec(),
        sentinel_mtime
    );
    assert_eq!(names_in(&host_dir), vec!["sentinel"]);
    let (swaps, reads, writes, refused) = (
        swaps.into_inner(),
        ok_reads.into_inner(),
        ok_writes.into_inner(),
        refused.into_inner(),
    );
    eprintln!(
        "race: {swaps} swaps, {writes} writes and {reads} reads succeeded, {refused} refused"
    );
    assert!(swaps > 100, "the swapper barely ran");
    assert!(refused > 0, "no operation ever met the symlink");
    assert!(
        writes > 0 && reads > 0,
        "no operation ever met the directory"
    );
}

#[test]
fn a_replaced_workspace_directory_is_refused() {
    let t = setup(BIG);
    write(&t.ws, "/a.txt", "mine").unwrap();
    // The directory is swapped for another of the same name (the agent
    // cannot do this; the check makes sure nobody's swap is followed).
    let moved = t.base.join("moved");
    std::fs::rename(&t.dir, &moved).unwrap();
    std::fs::create_dir(&t.dir).unwrap();
    chown(&t.dir, Some(AGENT_UID), Some(AGENT_GID)).unwrap();
    for r in [read(&t.ws, "/a.txt"), write(&t.ws, "/b.txt", "x")] {
        let e = err(r);
        assert_eq!(e.code, Errno::EIO, "{e}");
        assert!(e.message.contains("no longer the directory"), "{e}");
    }
    assert!(names_in(&t.dir).is_empty());
    // Back in place, it works again.
    std::fs::remove_dir(&t.dir).unwrap();
    std::fs::rename(&moved, &t.dir).unwrap();
    assert_eq!(read_text(&t.ws, "/a.txt"), "mine");
}
