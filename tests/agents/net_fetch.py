"""NET_FETCH test agent: performs the NET_FETCH calls given as a JSON list of
argument objects in argv[1], in order, and reports one entry per call:
{"code", "message", "result", "ms"} (message is the error message, result
the call's result; the other is null)."""
import json
import sys
import time

import aos

calls = json.loads(sys.argv[1])
out = []
for args in calls:
    started = time.monotonic()
    reply = aos.call("NET_FETCH", **args)
    ms = int((time.monotonic() - started) * 1000)
    out.append({
        "code": aos.code(reply),
        "message": reply.get("error", {}).get("message") if reply["status"] != "SUCCESS" else None,
        "result": reply.get("result"),
        "ms": ms,
    })
aos.report(out)
aos.exit(0)
