#!/usr/bin/env python3
"""Hostile agent for tests/quotas.rs: tries to make the supervisor store or
hold unbounded bytes on its behalf. The mode is argv[1]:

- neighbour: a well-behaved agent; GETPID round trip, report, exit 0.
- recv_flood: fills its own inbox with 256 KiB messages (until refused or
  200 are in), sends twelve RECV_MSG {"max":1000,"keep":true} without
  reading the replies, creates /workspace/flooded, waits for the test to
  create /workspace/go, then reads every reply and reports their sizes.
- self_inbox: sends 256 KiB messages to itself until refused (at most 200),
  then drains its inbox and reports what was sent, refused and received.
- stdout_flood: prints 4 MB of lines on stdout.
- write_stdout_flood: 40 SYS_WRITE_STDOUT calls of 200 KB each.
- newlines: one SYS_WRITE_STDOUT of 200,000 newlines.
- denied: 5000 calls its permissions do not grant (FS_READ).
- mem_fill: MEM_WRITE of 60 KiB values under new keys until refused (at
  most 100), then rewrites the first key (a replacement must not be
  charged twice).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402

BIG = 256 * 1024


def write_report(obj) -> None:
    # Directly: the replies to FS_WRITE may be queued behind others.
    with open("/workspace/report.json.tmp", "w") as f:
        f.write(json.dumps(obj))
    os.rename("/workspace/report.json.tmp", "/workspace/report.json")


def fill_inbox(me: int, limit: int):
    sent, refusal = 0, None
    body = "m" * (BIG - 64)
    while sent < limit:
        r = aos.call("SEND_MSG", to=me, body=body)
        if r["status"] != "SUCCESS":
            refusal = r["error"]
            break
        sent += 1
    return sent, refusal


def recv_flood(me: int) -> None:
    sent, refusal = fill_inbox(me, 200)
    ids = []
    for i in range(12):
        ids.append(1000 + i)
        line = json.dumps({"id": 1000 + i, "call": "RECV_MSG",
                           "args": {"max": 1000, "keep": True}})
        aos.send_raw((line + "\n").encode())
    open("/workspace/flooded", "w").close()
    while not os.path.exists("/workspace/go"):
        time.sleep(0.05)
    sizes, counts, more = [], [], []
    for _ in ids:
        line = aos._rfile.readline()
        reply = json.loads(line)
        sizes.append(len(line))
        res = reply.get("result") or {}
        counts.append(len(res.get("messages", [])))
        more.append(bool(res.get("more", False)))
    write_report({"sent": sent, "refusal": refusal, "sizes": sizes,
                  "counts": counts, "more": more})


def self_inbox(me: int) -> None:
    sent, refusal = fill_inbox(me, 200)
    got = 0
    while True:
        r = aos.ok("RECV_MSG", max=1000)
        if not r["messages"]:
            break
        got += len(r["messages"])
    write_report({"sent": sent, "refusal": refusal, "received": got,
                  "message_bytes": BIG - 64})


def stdout_flood() -> None:
    line = "o" * 999 + "\n"
    for _ in range(4000):
        sys.stdout.write(line)
    sys.stdout.flush()
    write_report({"printed": 4000 * 1000})


def write_stdout_flood() -> None:
    data = "w" * 199_999 + "\n"
    replies = [aos.code(aos.call("SYS_WRITE_STDOUT", data=data)) for _ in range(40)]
    write_report({"replies": replies})


def newlines() -> None:
    r = aos.call("SYS_WRITE_STDOUT", data="\n" * 200_000)
    write_report({"reply": aos.code(r)})


def denied() -> None:
    codes = set()
    for _ in range(5000):
        codes.add(aos.code(aos.call("FS_READ", path="/nothing")))
    write_report({"codes": sorted(codes)})


def journal_flood(me: int) -> None:
    """Makes 600 state-changing calls with ~3 KiB of arguments each."""
    body = "j" * 3000
    codes = set()
    for _ in range(300):
        codes.add(aos.code(aos.call("SEND_MSG", to=me, body=body)))
        codes.add(aos.code(aos.call("RECV_MSG")))
    write_report({"codes": sorted(codes)})


def mem_fill() -> None:
    value = "v" * (60 * 1024)
    stored, refusal = 0, None
    while stored < 100:
        r = aos.call("MEM_WRITE", key=f"k{stored}", value=value)
        if r["status"] != "SUCCESS":
            refusal = r["error"]
            break
        stored += 1
    again = aos.code(aos.call("MEM_WRITE", key="k0", value=value))
    write_report({"stored": stored, "refusal": refusal, "value_bytes": len(value),
                  "rewrite_first": again})


def main() -> None:
    mode = sys.argv[1]
    me = aos.ok("GETPID")["pid"]
    if mode == "neighbour":
        write_report({"pid": me})
    elif mode == "recv_flood":
        recv_flood(me)
    elif mode == "self_inbox":
        self_inbox(me)
    elif mode == "stdout_flood":
        stdout_flood()
    elif mode == "write_stdout_flood":
        write_stdout_flood()
    elif mode == "newlines":
        newlines()
    elif mode == "denied":
        denied()
    elif mode == "journal_flood":
        journal_flood(me)
    elif mode == "mem_fill":
        mem_fill()
    else:
        raise SystemExit(f"unknown mode {mode}")
    aos.exit(0)


if __name__ == "__main__":
    main()
