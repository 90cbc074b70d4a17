"""Test agent for tests/exec.rs: runs EXEC_CMD calls and reports every reply.

Usage: exec_run.py '<JSON list of EXEC_CMD argument objects>'

Before the calls it writes /workspace/seed.txt (so commands can see the
agent's files). Each reply is reported with the call's wall time; long
outputs are reported by length plus their first 64 KiB. The report is
/workspace/report.json, written directly (the agent may lack FS_WRITE).
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402

KEEP = 64 * 1024


def summary(reply):
    out = {"code": aos.code(reply),
           "message": (reply.get("error") or {}).get("message")}
    result = reply.get("result")
    if result is not None:
        result = dict(result)
        for stream in ("stdout", "stderr"):
            text = result.get(stream, "")
            result[stream + "_len"] = len(text)
            result[stream + "_distinct"] = sorted(set(text[:KEEP * 16]))[:8]
            result[stream] = text[:KEEP]
    out["result"] = result
    return out


def main():
    calls = json.loads(sys.argv[1])
    with open("/workspace/seed.txt", "w") as f:
        f.write("seeded by the agent\n")
    results = []
    for args in calls:
        started = time.monotonic()
        reply = aos.call("EXEC_CMD", **args)
        entry = summary(reply)
        entry["elapsed_s"] = time.monotonic() - started
        results.append(entry)
    with open("/workspace/report.json", "w") as f:
        json.dump({"results": results, "pid": os.getpid()}, f)
    aos.exit(0)


main()
