//! `quota-bench`: what btrfs quota groups cost at thousands of workspaces.
//!
//!     sudo target/release/examples/quota-bench [--count N] [--kind none|simple|full|all]
//!                                              [--dir DIR] [--image-size SIZE]
//!
//! For each kind of accounting it makes a fresh workspace image in DIR
//! (default /tmp), mounts it, and creates N workspaces (default 5,000)
//! exactly as the daemon does (`simple`: `WorkspaceQuotas::ensure_workspace`;
//! `full`: the same ioctls on a filesystem with full qgroup accounting;
//! `none`: plain subvolumes without quotas, the baseline),
//! each with a 1 MiB limit and a 4 KiB file written into it. It reports
//! the time per workspace created over the first and the last 100; at
//! 100, 1,000, 2,500 and N workspaces the time to commit the backlog
//! (workspaces made and written since the last checkpoint), then of a
//! 512 KiB write + fsync into a workspace with nothing else pending, then
//! of an idle commit; and the time to read one workspace's usage. Everything it made is unmounted and removed.
//! docs/BENCHMARKS.md ("Workspace quotas") has the latest figures.

use agentos::sandbox::quota::btrfs::{self, QgroupId, QuotaKind};
use agentos::sandbox::quota::{ByteSize, QuotaMode, WorkspaceQuotas, WorkspacesConfig, image};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const LIMIT: u64 = 1 << 20;
const UID: u32 = 5_900_000;

/// What the filesystem accounts: `None` is the baseline without quotas.
type Kind = Option<QuotaKind>;

struct Args {
    count: u64,
    kinds: Vec<Kind>,
    dir: PathBuf,
    image_size: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        count: 5000,
        kinds: vec![None, Some(QuotaKind::Simple), Some(QuotaKind::Full)],
        dir: PathBuf::from("/tmp"),
        image_size: 4 << 30,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--count" => a.count = value()?.parse().map_err(|e| format!("--count: {e}"))?,
            "--kind" => {
                a.kinds = match value()?.as_str() {
                    "none" => vec![None],
                    "simple" => vec![Some(QuotaKind::Simple)],
                    "full" => vec![Some(QuotaKind::Full)],
                    "all" => vec![None, Some(QuotaKind::Simple), Some(QuotaKind::Full)],
                    other => return Err(format!("--kind {other}: none, simple, full or all")),
                }
            }
            "--dir" => a.dir = PathBuf::from(value()?),
            "--image-size" => {
                a.image_size = ByteSize::parse(&value()?).map_err(|e| e.to_string())?.0
            }
            "-h" | "--help" => {
                return Err(
                    "usage: quota-bench [--count N] [--kind none|simple|full|all] [--dir DIR] [--image-size SIZE]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if a.count < 200 {
        return Err("--count must be at least 200 (first and last 100 are compared)".into());
    }
    Ok(a)
}

/// The workspaces of one run, made the daemon's way.
enum Maker {
    Simple(WorkspaceQuotas),
    /// Full accounting (which the daemon refuses), or no quotas: the
    /// bench repeats ensure_workspace's ioctls itself (`true`: with qgroups).
    Raw(std::fs::File, PathBuf, bool),
}

impl Maker {
    fn make(&self, pid: u64) -> PathBuf {
        match self {
            Maker::Simple(q) => q.ensure_workspace(pid, UID, UID, LIMIT).expect("workspace"),
            Maker::Raw(root, dir, qgroups) => {
                let root = root.as_fd();
                let group = QgroupId::new(1, pid);
                if *qgroups {
                    btrfs::create_qgroup(root, group).expect("qgroup");
                    btrfs::limit_qgroup(root, Some(group), LIMIT).expect("limit");
                    btrfs::create_subvolume(root, &pid.to_string(), LIMIT, &[group])
                        .expect("subvol");
                } else {
                    btrfs::create_subvolume(root, &pid.to_string(), LIMIT, &[]).expect("subvol");
                }
                let ws = dir.join(pid.to_string());
                std::os::unix::fs::chown(&ws, Some(UID), Some(UID)).expect("chown");
                ws
            }
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    let mean = s.iter().sum::<Duration>() / s.len() as u32;
    format!(
        "mean {:.2} ms, p50 {:.2} ms, p99 {:.2} ms",
        ms(mean),
        ms(percentile(&s, 0.5)),
        ms(percentile(&s, 0.99))
    )
}

fn write_sync(path: &Path, bytes: usize) -> Duration {
    let t = Instant::now();
    let mut f = std::fs::File::create(path).expect("create");
    f.write_all(&vec![0x42; bytes]).expect("write");
    f.sync_all().expect("fsync");
    t.elapsed()
}

/// Unmounts the workspaces and removes the state directory, also when a
/// step panics.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let ws_dir = self.0.join("workspaces");
        for _ in 0..50 {
            match nix::mount::umount2(&ws_dir, nix::mount::MntFlags::empty()) {
                Err(nix::errno::Errno::EBUSY) => std::thread::sleep(Duration::from_millis(50)),
                _ => break,
            }
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(kind: Kind, a: &Args, n: usize) {
    let state = a
        .dir
        .join(format!("agentos-quota-bench-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).expect("state dir");
    let cleanup = Cleanup(state.clone());
    let ws_dir = state.join("workspaces");
    let image_path = state.join("workspaces.img");
    let maker = match kind {
        Some(QuotaKind::Simple) => {
            let config = WorkspacesConfig {
                quota: QuotaMode::Image,
                image: Some(image_path.clone()),
                image_size: ByteSize(a.image_size),
            };
            Maker::Simple(WorkspaceQuotas::open(&config, &state).expect("open"))
        }
        raw => {
            std::fs::create_dir_all(&ws_dir).expect("dir");
            image::ensure_image(&image_path, a.image_size).expect("image");
            image::attach_and_mount(&image_path, &ws_dir).expect("mount");
            let root = std::fs::File::open(&ws_dir).expect("open");
            if let Some(kind) = raw {
                btrfs::enable_quota(root.as_fd(), kind).expect("quotas");
            }
            btrfs::sync(root.as_fd()).expect("sync");
            Maker::Raw(root, ws_dir.clone(), raw.is_some())
        }
    };
    let commit = |maker: &Maker| {
        let root = match maker {
            Maker::Simple(q) => std::fs::File::open(q.dir()).expect("open"),
            Maker::Raw(..) => std::fs::File::open(&ws_dir).expect("open"),
        };
        let t = Instant::now();
        btrfs::sync(root.as_fd()).expect("sync");
        t.elapsed()
    };

    let count = a.count;
    let mut creates = Vec::with_capacity(count as usize);
    let mut checkpoints = Vec::new();
    let started = Instant::now();
    for pid in 1..=count {
        let t = Instant::now();
        let ws = maker.make(pid);
        creates.push(t.elapsed());
        std::fs::write(ws.join("small"), [7u8; 4096]).expect("small write");
        if [100, 1000, 2500].contains(&pid) || pid == count {
            // The backlog since the last checkpoint (subvolumes made and
            // written, not yet committed), then a write + fsync with
            // nothing else pending, then an idle commit.
            let backlog = commit(&maker);
            let steady = write_sync(&ws.join("big"), 512 << 10);
            let idle = commit(&maker);
            checkpoints.push((pid, backlog, steady, idle));
        }
    }
    let total = started.elapsed();
    let usage_t = match &maker {
        Maker::Simple(q) => {
            let t = Instant::now();
            for pid in 1..=100 {
                q.usage(pid).expect("usage").expect("tracked");
            }
            Some(t.elapsed() / 100)
        }
        Maker::Raw(..) => None,
    };
    let name = match kind {
        None => "no quotas (baseline)",
        Some(QuotaKind::Simple) => "simple quotas",
        Some(QuotaKind::Full) => "full qgroups",
    };
    println!("== {name}: {count} workspaces (1 MiB limit, 4 KiB written in each)");
    println!(
        "  create, workspaces 1-100:       {}",
        summary(&creates[..100])
    );
    println!(
        "  create, workspaces {}-{}: {}",
        count - 99,
        count,
        summary(&creates[creates.len() - 100..])
    );
    for (pid, backlog, steady, idle) in &checkpoints {
        println!(
            "  at {pid:>5}: commit of the backlog {:.1} ms, then 512 KiB write+fsync {:.1} ms, idle commit {:.1} ms",
            ms(*backlog),
            ms(*steady),
            ms(*idle)
        );
    }
    if let Some(u) = usage_t {
        println!("  usage(pid): {:.3} ms", ms(u));
    }
    println!(
        "  total {:.1} s ({:.2} ms per workspace, write included)",
        total.as_secs_f64(),
        ms(total) / count as f64
    );
    drop(maker);
    drop(cleanup);
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    if !nix::unistd::geteuid().is_root() {
        eprintln!("quota-bench needs root (loop devices, mounts, btrfs quota ioctls)");
        std::process::exit(1);
    }
    for (n, kind) in args.kinds.iter().enumerate() {
        run(*kind, &args, n);
    }
}
