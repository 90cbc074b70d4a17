"""Test agent for tests/recovery.rs: argv[1] selects the scenario."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402

RECOVERED = int(os.environ.get("AGENTOS_RECOVERED", "0"))


def timer_across_restart():
    # First life: schedule a timer, report, idle. After the restart: collect
    # what arrives in the inbox for a while and report it.
    if RECOVERED == 0:
        t = aos.ok("SYS_SCHEDULE", seconds=2, prompt="wake up after the restart")
        aos.report({"scheduled": t})
        while True:
            time.sleep(60)
    got = []
    deadline = time.time() + 8
    while time.time() < deadline:
        for m in aos.ok("RECV_MSG", wait_ms=1000)["messages"]:
            got.append({"body": m["body"], "kind": m.get("kind")})
    with open("/workspace/after.json", "w") as f:
        json.dump({"recovered": RECOVERED, "got": got}, f)
    aos.exit(0)


def blocked():
    # Blocks in RECV_MSG; records what the call answered (EINTR at shutdown).
    reply = aos.call("RECV_MSG", wait_ms=60000)
    with open(f"/workspace/answer-{RECOVERED}.json", "w") as f:
        json.dump(reply, f)
    while True:
        time.sleep(60)


def timers():
    aos.ok("SYS_SCHEDULE", seconds=1, prompt="one")
    aos.ok("SYS_SCHEDULE", seconds=2, prompt="two")
    start = time.time()
    got = []
    while len(got) < 2 and time.time() - start < 15:
        for m in aos.ok("RECV_MSG", wait_ms=5000)["messages"]:
            got.append([m["body"], m.get("kind"), round(time.time() - start, 1)])
    aos.report({"got": got})
    aos.exit(0)


def acked_inbox():
    # First life: take messages with keep, never acknowledge, idle (the
    # daemon dies). Second life: they arrive again; acknowledge them; the
    # inbox is then empty.
    first = aos.ok("RECV_MSG", wait_ms=20000, keep=True)["messages"]
    with open(f"/workspace/life-{RECOVERED}.json", "w") as f:
        json.dump([m["body"] for m in first], f)
    if RECOVERED == 0:
        while True:
            time.sleep(60)
    last = max(m["seq"] for m in first)
    after = aos.ok("RECV_MSG", ack=last)["messages"]
    aos.report({"again": [m["body"] for m in first], "after_ack": after})
    aos.exit(0)


def schedule_and_exit():
    aos.ok("SYS_SCHEDULE", seconds=1, prompt="never delivered")
    aos.exit(0)


{
    "timer_across_restart": timer_across_restart,
    "blocked": blocked,
    "timers": timers,
    "schedule_and_exit": schedule_and_exit,
    "acked_inbox": acked_inbox,
}[sys.argv[1]]()
