"""Hostile agent for the state filesystem's low-water mark. Modes:

fill      fills its workspace through FS_WRITE until the daemon refuses, then
          checks what is still answered at the floor (GETPID, FS_DELETE) and
          what is not (SEND_MSG, its output), frees space and writes again.
neighbour makes a GETPID every 20 ms for SECONDS and reports failures.
"""
import os
import sys
import time

import aos

CHUNK = 256 * 1024


def fill():
    chunk = "x" * CHUNK
    written = 0
    refusal = None
    for i in range(100_000):
        r = aos.call("FS_WRITE", path=f"/fill-{i}", content=chunk)
        if r["status"] != "SUCCESS":
            refusal = r["error"]
            break
        written += 1
    st = os.statvfs("/workspace")
    free_at_refusal = st.f_bavail * st.f_frsize
    me = aos.ok("GETPID")["pid"]
    send = aos.call("SEND_MSG", to=me, body="hello")
    print("output at the floor", flush=True)
    time.sleep(1.5)
    freed = 0
    for i in range(min(written, 64)):
        if aos.call("FS_DELETE", path=f"/fill-{i}")["status"] == "SUCCESS":
            freed += 1
    again = aos.call("FS_WRITE", path="/after", content="written again")
    aos.report({
        "written_chunks": written,
        "chunk": CHUNK,
        "refusal": refusal,
        "free_at_refusal": free_at_refusal,
        "send_at_floor": aos.code(send),
        "freed_chunks": freed,
        "write_after_freeing": aos.code(again),
    })
    aos.exit(0)


def neighbour(seconds):
    deadline = time.monotonic() + float(seconds)
    calls = failures = 0
    while time.monotonic() < deadline:
        r = aos.call("GETPID")
        calls += 1
        if r["status"] != "SUCCESS":
            failures += 1
        time.sleep(0.02)
    with open("/workspace/report.json", "w") as f:
        import json
        json.dump({"calls": calls, "failures": failures}, f)
    aos.exit(0)


{"fill": fill, "neighbour": neighbour}[sys.argv[1]](*sys.argv[2:])
