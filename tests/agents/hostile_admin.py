"""Agents for the admin-socket and state-floor tests.

Modes (argv[1]):
  neighbour            GETPID round trips; reports how many answered.
  oom                  reports its own /proc/self/oom_score_adj.
  writes               tries every agent-driven write the daemon stores
                       (FS_WRITE, SEND_MSG to itself, MEM_WRITE, stdout)
                       and reports each result code and message.
"""
import sys
import time

import aos


def neighbour() -> None:
    me = aos.ok("GETPID")["pid"]
    answered = 0
    started = time.monotonic()
    for _ in range(20):
        if aos.ok("GETPID")["pid"] == me:
            answered += 1
    aos.report({"pid": me, "answered": answered, "seconds": time.monotonic() - started})
    aos.exit(0)


def oom() -> None:
    with open("/proc/self/oom_score_adj") as f:
        score = int(f.read().strip())
    aos.report({"oom_score_adj": score})
    aos.exit(0)


def brief(reply: dict) -> dict:
    if reply["status"] == "SUCCESS":
        return {"code": "SUCCESS"}
    return {"code": reply["error"]["code"], "message": reply["error"].get("message", "")}


def writes() -> None:
    me = aos.ok("GETPID")["pid"]
    rep = {"pid": me}
    rep["fs_write"] = brief(aos.call("FS_WRITE", path="/note.txt", content="x" * 1000))
    rep["send_msg"] = brief(aos.call("SEND_MSG", to=me, body="hello"))
    rep["mem_write"] = brief(aos.call("MEM_WRITE", key="k", text="remember this"))
    rep["write_stdout"] = brief(aos.call("SYS_WRITE_STDOUT", data="a line\n"))
    rep["getpid"] = brief(aos.call("GETPID"))
    # The report goes straight to the workspace (FS_WRITE may be refused).
    import json
    with open("/workspace/report.json", "w") as f:
        f.write(json.dumps(rep))
    aos.exit(0)


if __name__ == "__main__":
    {"neighbour": neighbour, "writes": writes, "oom": oom}[sys.argv[1]]()
