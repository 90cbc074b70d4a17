//! Webhook deliveries share the inbox cap with SEND_MSG.

use super::*;
use crate::kernel::ipc::MAX_QUEUED;
use crate::kernel::live::LiveAgents;
use crate::kernel::store::Store;
use std::sync::{Arc, Barrier};

/// A store in a fresh temporary directory, removed on drop.
struct TempStore {
    dir: std::path::PathBuf,
    store: Store,
}

impl TempStore {
    fn open() -> TempStore {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("agentos-webhook-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = Store::open(&dir.join("db")).expect("open a store");
        TempStore { dir, store }
    }
}

impl Drop for TempStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn agent(pid: Pid) -> Pcb {
    serde_json::from_value(json!({
        "pid": pid, "ppid": 0, "name": "hooked", "owner": 0, "uid": 70000, "gid": 70000,
        "state": "RUNNING", "profile": "default", "program": "/bin/true", "args": [],
        "ro_binds": [], "permissions": [], "pipe_to": null,
        "counters": crate::kernel::pcb::Counters::default(),
        "limits": {
            "memory_bytes": 1, "pids": 1, "cpu_percent": 1, "wall_time_s": 0,
            "workspace_bytes": 1, "max_file_bytes": 1, "max_read_bytes": 1, "nofile": 1,
            "syscalls_per_s": 0, "tmp_bytes": 1
        },
        "created_ms": 0, "started_ms": null, "ended_ms": null, "exit": null,
        "host_pid": null, "workspace": "/nonexistent"
    }))
    .expect("a PCB")
}

fn request(n: usize) -> WebhookRequest {
    WebhookRequest {
        method: "POST".into(),
        path: "/hook".into(),
        query: String::new(),
        headers: json!({}),
        body: format!("request {n}").into_bytes(),
        remote_addr: SocketAddr::from(([127, 0, 0, 1], 9)),
    }
}

#[test]
fn concurrent_deliveries_never_overfill_the_inbox() {
    const ROOM: usize = 3;
    const SENDERS: usize = 32;
    let t = TempStore::open();
    let live = LiveAgents::default();
    let webhooks = Webhooks::default();
    let owner = agent(7);
    // The inbox is nearly full: ROOM places are left.
    t.store
        .queues
        .inbox
        .add(owner.pid, (MAX_QUEUED - ROOM) as u64);
    let start = Arc::new(Barrier::new(SENDERS));
    let results: Vec<Result<String, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..SENDERS)
            .map(|n| {
                let (start, store, live, webhooks, owner) =
                    (start.clone(), &t.store, &live, &webhooks, &owner);
                s.spawn(move || {
                    start.wait();
                    match deliver(Inboxes::new(store, live), webhooks, owner, request(n)) {
                        // Keep the request waiting until every sender is done.
                        Ok(waiting) => {
                            let id = waiting.request_id.clone();
                            std::mem::forget(waiting);
                            Ok(id)
                        }
                        Err(e) => Err(e.to_string()),
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sender thread"))
            .collect()
    });
    let delivered = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(delivered, ROOM, "{results:?}");
    for refused in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(refused.contains("is full"), "{refused}");
    }
    assert_eq!(t.store.queues.inbox.get(owner.pid), MAX_QUEUED as u64);
    assert_eq!(t.store.count(&t.store.trees.inbox, owner.pid), ROOM);
}

#[test]
fn a_refused_request_gives_its_inbox_place_back() {
    let t = TempStore::open();
    let live = LiveAgents::default();
    let webhooks = Webhooks::default();
    let owner = agent(8);
    let inboxes = Inboxes::new(&t.store, &live);
    let mut waiting = Vec::new();
    for n in 0..MAX_PENDING_PER_AGENT {
        waiting.push(deliver(inboxes, &webhooks, &owner, request(n)).expect("delivered"));
    }
    let queued = t.store.queues.inbox.get(owner.pid);
    let e = deliver(inboxes, &webhooks, &owner, request(0))
        .err()
        .expect("too many waiting");
    assert!(matches!(e, DeliveryError::TooManyWaiting(8)), "{e}");
    assert_eq!(t.store.queues.inbox.get(owner.pid), queued);
    // A request that stops waiting makes room for another.
    drop(waiting.pop());
    deliver(inboxes, &webhooks, &owner, request(1)).expect("room again");
}
