//! A full disk: with the state directory on a small tmpfs, filling it makes
//! calls fail with clear errors (the daemon refuses to acknowledge what it
//! cannot make durable and exits rather than go on); once space is freed
//! the daemon works again and nothing acknowledged was lost.

mod common;

use agentos::admin::protocol::AdminRequest;
use common::{Daemon, require_root};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn mount_tmpfs(dir: &Path, size: &str) -> Tmpfs {
    std::fs::create_dir_all(dir).expect("mkdir");
    let ok = Command::new("mount")
        .args([
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size},mode=0711"),
            "tmpfs",
        ])
        .arg(dir)
        .status()
        .expect("mount");
    assert!(ok.success(), "mounting a tmpfs on {}", dir.display());
    Tmpfs(dir.to_path_buf())
}

fn free_bytes(dir: &Path) -> u64 {
    nix::sys::statvfs::statvfs(dir)
        .map(|s| s.blocks_available() * s.fragment_size())
        .unwrap_or(0)
}

#[test]
fn a_full_disk_refuses_acknowledgements_and_loses_nothing() {
    if !require_root("a_full_disk_refuses_acknowledgements_and_loses_nothing") {
        return;
    }
    // The state directory itself is what fills: no workspace image, and no
    // low-water mark (tests/floor.rs has that): this is what happens when
    // the disk fills all the same (other programs on the host).
    let mut d = Daemon::start_with(&["--workspace-quota", "off", "--min-free-bytes", "0"]);
    let state = d.state_dir();
    // Move the daemon onto a 48 MiB tmpfs.
    d.crash();
    let _ = std::fs::remove_dir_all(&state);
    let _mount = mount_tmpfs(&state, "48m");
    d.launch();
    let recipient = d.spawn_probe("inbox", &["sleep", "100000000"], &[]).pid;

    // Fill the filesystem, leaving a little room.
    let filler = state.join("filler");
    let room = free_bytes(&state).saturating_sub(2 << 20);
    let chunk = vec![0u8; 1 << 20];
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).expect("filler");
        let mut written = 0u64;
        while written + chunk.len() as u64 <= room {
            if f.write_all(&chunk).is_err() {
                break;
            }
            written += chunk.len() as u64;
        }
        let _ = f.sync_all();
    }

    // Send until the daemon refuses; every Ok is an acknowledgement.
    let body = "x".repeat(16 * 1024);
    let mut acked = Vec::new();
    let mut refusal = None;
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in 0.. {
        assert!(Instant::now() < deadline, "the disk never filled up");
        let text = format!("{n} {body}");
        match agentos::admin::client::Client::connect(&d.socket).and_then(|mut c| {
            c.call(&AdminRequest::Send {
                pid: recipient,
                body: text.clone(),
            })
        }) {
            Ok(_) => acked.push(text),
            Err(e) => {
                refusal = Some(e.to_string());
                break;
            }
        }
    }
    let refusal = refusal.expect("a refusal");
    assert!(!acked.is_empty(), "nothing could be sent at all");
    // A clear error: the store could not make the change durable (or the
    // daemon already exited because of it).
    assert!(
        refusal.contains("No space left")
            || refusal.contains("EIO")
            || refusal.contains("closed")
            || refusal.contains("connect"),
        "unclear refusal: {refusal}"
    );
    // The daemon does not go on with a state it cannot make durable.
    let exited = common::eventually(Duration::from_secs(10), || {
        d.child.as_mut().and_then(|c| c.try_wait().ok()).flatten()
    });
    let log = d.log();
    assert!(
        exited.is_some(),
        "the daemon kept running on a full disk:\n{log}"
    );
    assert!(
        log.contains("flush failed"),
        "the log does not say why it stopped:\n{log}"
    );
    d.child = None;

    // Free the space; the daemon starts again and nothing acknowledged is lost.
    std::fs::remove_file(&filler).expect("free space");
    d.launch();
    let inbox = d.inbox(recipient);
    let bodies: std::collections::HashSet<&str> = inbox.iter().map(|m| m.body.as_str()).collect();
    let lost: Vec<&String> = acked
        .iter()
        .filter(|b| !bodies.contains(b.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged messages were lost",
        lost.len(),
        acked.len()
    );
    d.call(AdminRequest::Send {
        pid: recipient,
        body: "after".into(),
    })
    .expect("the daemon works again");
    d.crash();
}
