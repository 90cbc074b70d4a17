"""Test agent for tests/permissions.rs.

Usage: permissions.py <mode> [args...]. Reports go to /workspace/report.json,
written directly (not through FS_WRITE, which most of these agents lack and
whose refusal would count as one more denied call).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402

SELF = os.path.abspath(__file__)
PYTHON = "/usr/bin/python3"
WS = "/workspace"


def write_report(obj):
    with open(WS + "/report.json", "w") as f:
        json.dump(obj, f)


def brief(reply):
    """The code, message and result of a reply, for the report."""
    return {"code": aos.code(reply),
            "message": (reply.get("error") or {}).get("message"),
            "result": reply.get("result")}


def wait_for_file(path, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        time.sleep(0.05)
    return False


def mode_empty():
    """No permissions at all: everything but GETPID and SYS_EXIT is refused."""
    rep = {"getpid": brief(aos.call("GETPID"))}
    me = rep["getpid"]["result"]["pid"] if rep["getpid"]["code"] == "SUCCESS" else 1
    rep["FS_WRITE"] = brief(aos.call("FS_WRITE", path="/x.txt", content="x"))
    rep["SEND_MSG"] = brief(aos.call("SEND_MSG", to=me, body="hello"))
    rep["SPAWN_AGENT"] = brief(aos.call("SPAWN_AGENT", name="child", program=PYTHON,
                                        args=[SELF, "child", "probe"], permissions=[]))
    rep["SLEEP"] = brief(aos.call("SLEEP", ms=1))
    rep["PS"] = brief(aos.call("PS"))
    rep["getpid_again"] = brief(aos.call("GETPID"))
    write_report(rep)


def spawn(name, child_args, **extra):
    return aos.call("SPAWN_AGENT", name=name, program=PYTHON,
                    args=[SELF, "child"] + child_args, **extra)


def mode_parent(memory_bytes, low_bytes):
    memory_bytes = int(memory_bytes)
    low_bytes = int(low_bytes)
    rep = {"getpid": brief(aos.call("GETPID"))}
    rep["spawn_fs_send"] = brief(spawn("too-many-perms", ["probe"], permissions=["fs", "SEND_MSG"]))
    rep["spawn_fs"] = brief(spawn("fs-child", ["probe"], permissions=["fs"]))
    if rep["spawn_fs"]["code"] == "SUCCESS":
        rep["wait_fs"] = brief(aos.call("WAIT", pid=rep["spawn_fs"]["result"]["pid"],
                                        timeout_ms=30000))
    rep["spawn_mem_over"] = brief(spawn("too-much-mem", ["probe"], permissions=["fs"],
                                        limits={"memory_bytes": memory_bytes + 1}))
    rep["spawn_mem_low"] = brief(spawn("low-mem", ["hold"], permissions=["fs"],
                                       limits={"memory_bytes": low_bytes}))
    if rep["spawn_mem_low"]["code"] == "SUCCESS":
        low = rep["spawn_mem_low"]["result"]["pid"]
        # Tell the test which child to look at while it is alive.
        aos.ok("FS_WRITE", path="/spawned.json", content=json.dumps({"low": low}))
        rep["wait_low"] = brief(aos.call("WAIT", pid=low, timeout_ms=40000))
    rep["spawn_none"] = brief(spawn("no-perms", ["probe"], permissions=[]))
    if rep["spawn_none"]["code"] == "SUCCESS":
        rep["wait_none"] = brief(aos.call("WAIT", pid=rep["spawn_none"]["result"]["pid"],
                                          timeout_ms=30000))
    rep["spawn_absent"] = brief(spawn("absent-perms", ["probe"]))
    if rep["spawn_absent"]["code"] == "SUCCESS":
        rep["wait_absent"] = brief(aos.call("WAIT", pid=rep["spawn_absent"]["result"]["pid"],
                                            timeout_ms=30000))
    write_report(rep)


def mode_child(action):
    rep = {"getpid": brief(aos.call("GETPID"))}
    parent = rep["getpid"]["result"]["ppid"] if rep["getpid"]["code"] == "SUCCESS" else 0
    rep["FS_WRITE"] = brief(aos.call("FS_WRITE", path="/probe.txt", content="probe"))
    rep["SEND_MSG"] = brief(aos.call("SEND_MSG", to=parent, body="hi"))
    if action == "hold":
        with open(WS + "/held", "w") as f:
            f.write("held")
        rep["released"] = wait_for_file(WS + "/release", 40)
    write_report(rep)
    if action == "hold" and not rep["released"]:
        aos.exit(3)


def mode_idle(seconds):
    """Stays alive until /workspace/release appears (or the time runs out)."""
    with open(WS + "/started", "w") as f:
        f.write("started")
    released = wait_for_file(WS + "/release", float(seconds))
    write_report({"released": released})


def mode_killer(sibling):
    sibling = int(sibling)
    rep = {"getpid": brief(aos.call("GETPID"))}
    rep["kill_sibling"] = brief(aos.call("KILL", pid=sibling))
    rep["kill_missing"] = brief(aos.call("KILL", pid=987654321))
    # Control: its own child may be killed.
    child = aos.call("SPAWN_AGENT", name="own-child", program=PYTHON,
                     args=[SELF, "idle", "30"], permissions=[])
    rep["spawn_child"] = brief(child)
    if aos.code(child) == "SUCCESS":
        cpid = child["result"]["pid"]
        rep["kill_child"] = brief(aos.call("KILL", pid=cpid))
        rep["wait_child"] = brief(aos.call("WAIT", pid=cpid, timeout_ms=20000))
    rep["kill_sibling_again"] = brief(aos.call("KILL", pid=sibling))
    write_report(rep)


def mode_waiter(sibling):
    sibling = int(sibling)
    rep = {"getpid": brief(aos.call("GETPID"))}
    me = rep["getpid"]["result"]["pid"]
    rep["wait_sibling"] = brief(aos.call("WAIT", pid=sibling, timeout_ms=2000))
    rep["wait_missing"] = brief(aos.call("WAIT", pid=987654321, timeout_ms=2000))
    rep["wait_self"] = brief(aos.call("WAIT", pid=me, timeout_ms=2000))
    rep["wait_parentless"] = brief(aos.call("WAIT", pid=0, timeout_ms=2000))
    # Control: its own child may be waited for.
    child = aos.call("SPAWN_AGENT", name="own-child", program=PYTHON,
                     args=[SELF, "child", "probe"], permissions=[])
    rep["spawn_child"] = brief(child)
    if aos.code(child) == "SUCCESS":
        rep["wait_child"] = brief(aos.call("WAIT", pid=child["result"]["pid"], timeout_ms=20000))
    write_report(rep)


def main():
    mode = sys.argv[1]
    args = sys.argv[2:]
    {
        "empty": mode_empty,
        "parent": mode_parent,
        "child": mode_child,
        "idle": mode_idle,
        "killer": mode_killer,
        "waiter": mode_waiter,
    }[mode](*args)
    aos.exit(0)


if __name__ == "__main__":
    main()
