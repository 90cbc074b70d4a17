"""Test agent for tests/memory.rs: performs the calls listed as JSON in argv[1]
and reports every reply, in order, with its own pid.

Each operation is {"call": NAME, "args": {...}}, where "$SELF" anywhere in
the arguments becomes the agent's own collection name (agent-<pid>) and
{"pad": {"field": F, "bytes": N}} replaces args[F] with N bytes of "x";
or {"raw": LINE}, sent as is (for malformed requests).
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402


def main():
    ops = json.loads(sys.argv[1])
    me = aos.ok("GETPID")["pid"]
    replies = []
    for op in ops:
        if "raw" in op:
            aos.send_raw((op["raw"] + "\n").encode())
            replies.append(aos.read_reply())
            continue
        text = json.dumps(op.get("args", {})).replace("$SELF", f"agent-{me}")
        args = json.loads(text)
        pad = op.get("pad")
        if pad:
            args[pad["field"]] = "x" * pad["bytes"]
        replies.append(aos.call(op["call"], **args))
    aos.report({"pid": me, "replies": replies})
    aos.exit(0)


main()
