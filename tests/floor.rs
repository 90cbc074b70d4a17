//! The state filesystem's low-water mark (kernel/floor.rs), from the
//! inside: a hostile agent fills the filesystem that holds the database
//! through FS_WRITE; the daemon refuses agents' writes once free space is
//! below `min_free_bytes`, keeps answering what frees space, keeps its own
//! journal and process table working, and a neighbour keeps answering.
//!
//! The state directory is a 160 MiB tmpfs made for the test, with the mark
//! at 64 MiB and workspace quotas off, so the workspace shares the
//! database's filesystem (the layout the mark protects).

mod common;

use agentos::admin::protocol::AdminRequest;
use common::{Daemon, python_agent, require_root};
use std::path::Path;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 160 * MIB;
const MARK: u64 = 64 * MIB;

/// Unmounts the state tmpfs when the test ends, passed or not (declared
/// before the daemon, so dropped after it).
struct Unmount(Option<std::path::PathBuf>);

impl Drop for Unmount {
    fn drop(&mut self) {
        if let Some(m) = self.0.take() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn free_bytes(dir: &Path) -> u64 {
    let st = nix::sys::statvfs::statvfs(dir).expect("statvfs");
    st.blocks_available() as u64 * st.fragment_size() as u64
}

#[test]
fn agent_writes_stop_at_the_low_water_mark_and_the_daemon_keeps_working() {
    if !require_root("agent_writes_stop_at_the_low_water_mark_and_the_daemon_keeps_working") {
        return;
    }
    let mark = MARK.to_string();
    let mut mounted = Unmount(None);
    let d = Daemon::start_prepared(
        &["--workspace-quota", "off", "--min-free-bytes", &mark],
        |state| {
            std::fs::create_dir_all(state).expect("state dir");
            nix::mount::mount(
                Some("tmpfs"),
                state,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                Some(format!("size={SIZE},mode=0711").as_str()),
            )
            .expect("mount the state tmpfs");
            mounted.0 = Some(state.to_path_buf());
        },
    );
    let state = d.state_dir();

    let neighbour = d.spawn(python_agent(
        "neighbour",
        "hostile_floor.py",
        &["neighbour", "12"],
        Some(&["process"]),
    ));
    let hostile = d.spawn(python_agent(
        "filler",
        "hostile_floor.py",
        &["fill"],
        Some(&["process", "ipc", "fs"]),
    ));
    let r = d.finish(hostile.pid, Duration::from_secs(120));

    // The fill stopped at the mark, refused with an error that names it.
    let refusal = &r["refusal"];
    assert_eq!(refusal["code"], "EQUOTA", "{r}");
    let msg = refusal["message"].as_str().unwrap_or("");
    assert!(
        msg.contains("low-water mark") && msg.contains("min_free_bytes"),
        "{msg}"
    );
    let written =
        r["written_chunks"].as_u64().expect("written") * r["chunk"].as_u64().expect("chunk");
    assert!(
        written > 16 * MIB,
        "refused too early: {written} bytes written; {r}"
    );
    // At most one chunk (and the journal's own entries) past the mark.
    let free = r["free_at_refusal"].as_u64().expect("free");
    assert!(
        free + 2 * MIB >= MARK && free < MARK,
        "free space at the refusal {free}, mark {MARK}; {r}"
    );
    // What adds to the store is refused at the floor; what frees it is not.
    assert_eq!(r["send_at_floor"], "EQUOTA", "{r}");
    assert!(r["freed_chunks"].as_u64().unwrap_or(0) >= 16, "{r}");
    assert_eq!(r["write_after_freeing"], "SUCCESS", "{r}");
    // Its output at the floor was not kept.
    let logs = d.logs(hostile.pid);
    assert!(!logs.contains("output at the floor"), "{logs}");

    // The daemon kept working: the neighbour never saw a failure, the
    // table answers, and a new agent can still be started and finish.
    let n = d.finish(neighbour.pid, Duration::from_secs(60));
    assert_eq!(n["failures"], 0, "{n}");
    assert!(n["calls"].as_u64().unwrap_or(0) > 50, "{n}");
    let ps = d.call(AdminRequest::Ps).expect("ps");
    assert!(ps.as_array().is_some_and(|a| a.len() >= 2), "{ps}");
    assert!(free_bytes(&state) > MARK - 2 * MIB);
}
