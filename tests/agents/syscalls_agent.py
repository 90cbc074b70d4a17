"""Test agent for tests/syscalls.rs: argv[1] selects the scenario."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402


def states():
    # Blocks in RECV_MSG (state BLOCKED) until the test sends a message,
    # then sleeps (state SLEEPING), then exits.
    got = aos.ok("RECV_MSG", wait_ms=20000)["messages"]
    aos.ok("SLEEP", ms=1500)
    aos.report({"got": [m["body"] for m in got]})
    aos.exit(0)


def out_of_order():
    # A slow call first, a fast one second: the fast reply must come first.
    aos.send_raw(b'{"id": "slow", "call": "SLEEP", "args": {"ms": 700}}\n')
    aos.send_raw(b'{"id": "fast", "call": "GETPID"}\n')
    order = [aos.read_reply()["id"], aos.read_reply()["id"]]
    aos.report({"order": order})
    aos.exit(0)


def pipe_reader():
    aos.ok("RECV_MSG", wait_ms=20000)  # "go": the writer exists now
    data = ""
    deadline = time.time() + 20
    while time.time() < deadline:
        r = aos.ok("SYS_READ_STDIN", wait_ms=1000)
        data += r["data"]
        if r["eof"]:
            break
    aos.report({"data": data})
    aos.exit(0)


def pipe_writer():
    for line in ["line1\n", "line2\n", "line3\n"]:
        aos.ok("SYS_WRITE_STDOUT", data=line)
    aos.exit(0)


def quota():
    chunk = "x" * (600 * 1024)
    codes = [aos.code(aos.call("FS_WRITE", path="/a", content=chunk))]
    codes.append(aos.code(aos.call("FS_WRITE", path="/b", content=chunk)))
    listing = aos.ok("FS_LIST", path="/")["entries"]
    codes.append(aos.code(aos.call("FS_WRITE", path="/a", content="small")))
    aos.report({"codes": codes, "names": sorted(e["name"] for e in listing)})
    aos.exit(0)


def tree():
    me = aos.ok("GETPID")["pid"]
    script = os.path.abspath(__file__)
    child = aos.ok("SPAWN_AGENT", name="child", args=[script, "idle"], permissions=["RECV_MSG"])["pid"]
    ps = aos.ok("PS")["agents"]
    killed = aos.ok("KILL", pid=child)
    waited = aos.ok("WAIT", pid=child, timeout_ms=10000)
    aos.report({"me": me, "child": child, "ps": [a["pid"] for a in ps], "killed": killed, "waited": waited})
    aos.exit(0)


def idle():
    aos.call("RECV_MSG", wait_ms=60000)
    aos.exit(0)


def stdout_lines():
    print("hello on stdout", flush=True)
    print("hello on stderr", file=sys.stderr, flush=True)
    time.sleep(1.0)
    print("after a second", flush=True)
    sys.exit(3)


{
    "states": states,
    "out_of_order": out_of_order,
    "pipe_reader": pipe_reader,
    "pipe_writer": pipe_writer,
    "quota": quota,
    "tree": tree,
    "idle": idle,
    "stdout_lines": stdout_lines,
}[sys.argv[1]]()
