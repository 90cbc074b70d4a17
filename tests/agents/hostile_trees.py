"""Hostile tree agent: each mode tries to get more than its own limits by
spreading over children, or to outlive its parent. Run as
`hostile_trees.py MODE [ARGS...]`; results go to /report.json."""
import os
import sys
import time

import aos

SCRIPT = os.path.abspath(__file__)


def spawn(name, mode, *args, perms=("process", "time", "fs"), limits=None):
    """SPAWN_AGENT of this script in `mode`; returns the whole reply."""
    a = dict(name=name, program="/usr/bin/python3", args=[SCRIPT, mode, *args],
             permissions=list(perms))
    if limits is not None:
        a["limits"] = limits
    return aos.call("SPAWN_AGENT", **a)


def idle():
    """Stays alive, answering nothing, until killed."""
    while True:
        aos.call("SLEEP", ms=1000)


def sleeper():
    print("sleeping", flush=True)
    idle()


def balloon(mib):
    """Allocates `mib` MiB in 1 MiB steps, touching every page, then holds it."""
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
    except OSError:
        pass
    held = []
    for _ in range(int(mib)):
        held.append(bytearray(b"x" * (1 << 20)))
    print(f"held {mib}", flush=True)
    idle()


def forker(n):
    """Forks `n` processes that each sleep, as fast as it can."""
    made = 0
    err = None
    for _ in range(int(n)):
        try:
            if os.fork() == 0:
                time.sleep(3600)
                os._exit(0)
            made += 1
        except OSError as e:
            err = str(e)
            break
    print(f"forked {made} {err}", flush=True)
    idle()


def fan(count, mode, *args):
    """Spawns `count` children running `mode ARGS`, reports their pids,
    then stays alive."""
    pids, errors = [], []
    for i in range(int(count)):
        r = spawn(f"c{i}", mode, *args)
        if r["status"] == "SUCCESS":
            pids.append(r["result"]["pid"])
        else:
            errors.append(r["error"])
    aos.report({"children": pids, "errors": errors})
    print("spawned", len(pids), flush=True)
    idle()


def tree(depth, width):
    """A tree of sleeping agents `depth` levels below this one."""
    depth, width = int(depth), int(width)
    pids = []
    if depth > 0:
        for i in range(width):
            r = spawn(f"t{depth}-{i}", "tree", str(depth - 1), str(width))
            if r["status"] == "SUCCESS":
                pids.append(r["result"]["pid"])
    aos.report({"children": pids})
    print("tree ready", flush=True)
    idle()


def spawn_then_exit(count):
    """Spawns `count` sleeping children, then exits through SYS_EXIT."""
    pids = []
    for i in range(int(count)):
        r = spawn(f"orphan{i}", "sleeper")
        if r["status"] == "SUCCESS":
            pids.append(r["result"]["pid"])
    # Wait until every child reached its program, so they are really running.
    for _ in range(600):
        ps = aos.ok("PS")["agents"]
        running = [p for p in ps if p["pid"] in pids and p["state"] in ("RUNNING", "SLEEPING", "BLOCKED")]
        if len(running) == len(pids):
            break
        aos.call("SLEEP", ms=50)
    aos.report({"children": pids})
    aos.exit(0)


def chain():
    """Each agent spawns one more below itself until refused; the refused
    one reports the error and stays alive."""
    r = spawn("link", "chain")
    if r["status"] == "SUCCESS":
        aos.report({"child": r["result"]["pid"]})
    else:
        aos.report({"refused": r["error"]})
    print("chain done", flush=True)
    idle()


{
    "sleeper": sleeper,
    "balloon": balloon,
    "forker": forker,
    "fan": fan,
    "tree": tree,
    "spawn_then_exit": spawn_then_exit,
    "chain": chain,
}[sys.argv[1]](*sys.argv[2:])
