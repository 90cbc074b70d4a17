//! Workspace seeding and `agentos cp` through the real CLI and daemon:
//! files are in place, owned by the agent, before its program starts; a
//! hostile agent's symlinks never lead a copy outside its workspace, in
//! either direction; the workspace quota holds for copies too.

mod common;

use common::{Daemon, agentos, require_root};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "agentos failed ({:?}): {}{}",
        o.status.code(),
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// A host directory for one test, removed on drop.
struct HostDir(PathBuf);

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let p = std::env::temp_dir().join(format!("agentos-copy-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("host dir");
        HostDir(p)
    }
}

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A python agent whose program is `code`.
fn python(d: &Daemon, name: &str, code: &str, extra: &[&str]) -> u64 {
    let mut args = vec![
        "--json",
        "spawn",
        "--name",
        name,
        "--program",
        "/usr/bin/python3",
        "--allow",
        "none",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "-c", code]);
    let v: serde_json::Value = serde_json::from_str(&ok(&agentos(d, &args))).expect("json");
    v["pid"].as_u64().expect("pid")
}

#[test]
fn spawn_copy_puts_files_in_place_before_the_agent_starts() {
    if !require_root("spawn_copy_puts_files_in_place_before_the_agent_starts") {
        return;
    }
    let d = Daemon::start();
    let host = HostDir::new("seed");
    let src = host.0.join("project");
    std::fs::create_dir_all(src.join("lib")).unwrap();
    std::fs::write(src.join("calc.py"), "print(2 + 3)\n").unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(src.join("lib/util.py"), "X = 1\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", src.join("shadow")).unwrap();
    let single = host.0.join("notes.txt");
    std::fs::write(&single, "seeded note\n").unwrap();

    // The program reads the seeded files as its very first action.
    let code = "import os\n\
                print(open('/workspace/src/calc.py').read().strip())\n\
                print(open('/workspace/src/lib/util.py').read().strip())\n\
                print(open('/workspace/notes.txt').read().strip())\n\
                print('shadow' in os.listdir('/workspace/src'))\n";
    let spec = format!("{}:/src", src.display());
    let out = agentos(
        &d,
        &[
            "--json",
            "spawn",
            "--name",
            "seeded",
            "--program",
            "/usr/bin/python3",
            "--allow",
            "none",
            "--copy",
            &spec,
            "--copy",
            &single.display().to_string(),
            "--",
            "-c",
            code,
        ],
    );
    let pid = serde_json::from_str::<serde_json::Value>(&ok(&out)).unwrap()["pid"]
        .as_u64()
        .unwrap();
    assert!(
        text(&out.stderr).contains("shadow") && text(&out.stderr).contains("left out"),
        "the symlink is reported as left out: {}",
        text(&out.stderr)
    );
    let exit = d.wait(pid, Duration::from_secs(30));
    let logs = d.logs(pid);
    assert_eq!(exit.code, 0, "{exit:?}\n{logs}");
    for want in [
        "stdout print(2 + 3)",
        "stdout X = 1",
        "stdout seeded note",
        "stdout False",
    ] {
        assert!(
            logs.contains(want),
            "the agent saw {want:?} at start:\n{logs}"
        );
    }

    let pcb = d.inspect(pid);
    let ws = d.workspace(pid);
    for f in [
        "src",
        "src/calc.py",
        "src/lib",
        "src/lib/util.py",
        "src/run.sh",
        "notes.txt",
    ] {
        let m = std::fs::symlink_metadata(ws.join(f)).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (pcb.uid, pcb.gid),
            "{f} belongs to the agent"
        );
    }
    let mode = |f: &str| std::fs::metadata(ws.join(f)).unwrap().mode() & 0o777;
    assert_eq!(
        mode("src/run.sh"),
        0o700,
        "executable stays executable (by the agent)"
    );
    assert_eq!(mode("src/calc.py"), 0o600);
    assert!(!ws.join("src/shadow").exists(), "symlinks are not copied");

    // A source that is a symlink is refused, and nothing is spawned.
    let link = host.0.join("link");
    std::os::unix::fs::symlink(&single, &link).unwrap();
    let o = agentos(
        &d,
        &[
            "spawn",
            "--name",
            "refused",
            "--program",
            "/bin/true",
            "--copy",
            &link.display().to_string(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("symlink"), "{}", text(&o.stderr));
    let ps = ok(&agentos(&d, &["--json", "ps", "--all"]));
    assert!(!ps.contains("\"refused\""), "no agent was created: {ps}");
}

#[test]
fn cp_moves_files_as_the_agent_and_never_through_its_symlinks() {
    if !require_root("cp_moves_files_as_the_agent_and_never_through_its_symlinks") {
        return;
    }
    let d = Daemon::start();
    let host = HostDir::new("cp");
    // A hostile agent: plants symlinks to host paths where copies go,
    // then waits.
    let code = "import os, time\n\
                os.symlink('/etc', '/workspace/etc')\n\
                os.makedirs('/workspace/out')\n\
                open('/workspace/out/result.txt', 'w').write('forty-two\\n')\n\
                os.symlink('/etc/passwd', '/workspace/out/passwd')\n\
                open('/workspace/ready', 'w').write('')\n\
                time.sleep(600)\n";
    let pid = python(&d, "hostile", code, &["--workspace", "1M"]);
    let ws = d.workspace(pid);
    for _ in 0..200 {
        if ws.join("ready").exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    assert!(ws.join("ready").exists(), "{}", d.logs(pid));

    // In: a file larger than one request goes in pieces and arrives whole.
    let big: Vec<u8> = (0..600_000u32).map(|i| (i % 253) as u8).collect();
    let big_src = host.0.join("big.bin");
    std::fs::write(&big_src, &big).unwrap();
    let into = format!("{pid}:/data/big.bin");
    let said = ok(&agentos(&d, &["cp", &big_src.display().to_string(), &into]));
    assert!(said.contains("copied 1 files"), "{said}");
    assert_eq!(std::fs::read(ws.join("data/big.bin")).unwrap(), big);
    let pcb = d.inspect(pid);
    assert_eq!(
        std::fs::metadata(ws.join("data/big.bin")).unwrap().uid(),
        pcb.uid
    );

    // In, through the agent's symlink: refused, nothing written on the host.
    let small = host.0.join("x.txt");
    std::fs::write(&small, "not for /etc\n").unwrap();
    let o = agentos(
        &d,
        &[
            "cp",
            &small.display().to_string(),
            &format!("{pid}:/etc/agentos-cp-escape"),
        ],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        !Path::new("/etc/agentos-cp-escape").exists(),
        "cp wrote outside the workspace"
    );

    // In, over the quota: EQUOTA, the workspace stays within it.
    let huge = host.0.join("huge.bin");
    std::fs::write(&huge, vec![7u8; 2 << 20]).unwrap();
    let o = agentos(
        &d,
        &[
            "cp",
            &huge.display().to_string(),
            &format!("{pid}:/huge.bin"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o.stderr).contains("EQUOTA"), "{}", text(&o.stderr));

    // Out: the tree without the symlink, which is reported.
    let dest = host.0.join("got");
    let o = agentos(
        &d,
        &["cp", &format!("{pid}:/out"), &dest.display().to_string()],
    );
    ok(&o);
    assert_eq!(
        std::fs::read_to_string(dest.join("result.txt")).unwrap(),
        "forty-two\n"
    );
    assert!(!dest.join("passwd").exists(), "a symlink was followed out");
    assert!(text(&o.stderr).contains("passwd"), "{}", text(&o.stderr));
    // Out through a symlink named directly: refused.
    let o = agentos(
        &d,
        &[
            "cp",
            &format!("{pid}:/etc/hostname"),
            &host.0.join("h").display().to_string(),
        ],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o.stdout));
    assert!(!host.0.join("h").exists());

    // Out of an ended agent: its workspace is still there to copy.
    ok(&agentos(&d, &["kill", &pid.to_string()]));
    let file = host.0.join("after.txt");
    ok(&agentos(
        &d,
        &[
            "cp",
            &format!("{pid}:/out/result.txt"),
            &file.display().to_string(),
        ],
    ));
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "forty-two\n");
    // ...but nothing goes into one.
    let o = agentos(
        &d,
        &[
            "cp",
            &small.display().to_string(),
            &format!("{pid}:/late.txt"),
        ],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o.stderr).contains("not running"),
        "{}",
        text(&o.stderr)
    );

    // Neither side an agent, or both: a usage error.
    let o = agentos(&d, &["cp", "a", "b"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
}
