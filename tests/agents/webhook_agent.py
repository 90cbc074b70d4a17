"""Webhook test agent.

argv[1]: "echo" (answer every webhook request) or "silent" (never answer).
argv[2]: JSON list of SYS_REGISTER_WEBHOOK argument objects, registered at
start, or "@<path>" of a file holding that list (so that a secret is not in
the agent's argv, which `agentos inspect` shows).

Files it writes in its workspace (the test reads them from the host):
  ready.json   {"register": [<reply per registration>], "info": AGENT_INFO, "ps": PS}
  seen.json    every webhook event received so far
  results.json the replies of the commands run so far

Echo mode answers status 201 (or the query's status=N) with the header X-Echo: <method> <path> and a
JSON body {"request_id", "method", "path", "query", "upper", "encoding",
"x_test"}, where "upper" is the request body upper-cased.

Commands arrive as messages (SEND_MSG / `agentos send`) whose body is JSON:
  {"cmd": "register", "args": {...}}   SYS_REGISTER_WEBHOOK
  {"cmd": "reply", "args": {...}}      SYS_WEBHOOK_REPLY
  {"cmd": "exit", "code": n}           write report.json and exit
Each command's reply is appended to results.json as {"cmd", "code",
"message", "result"}.
"""
import json
import os
import sys

import aos

mode = sys.argv[1]
registrations = []
if len(sys.argv) > 2:
    if sys.argv[2].startswith("@"):
        with open(sys.argv[2][1:]) as f:
            registrations = json.load(f)
    else:
        registrations = json.loads(sys.argv[2])


def write(name, obj):
    tmp = f"/workspace/.{name}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, f"/workspace/{name}")


def summary(cmd, reply):
    ok = reply["status"] == "SUCCESS"
    return {
        "cmd": cmd,
        "code": aos.code(reply),
        "message": None if ok else reply["error"]["message"],
        "result": reply.get("result"),
    }


registered = [summary("register", aos.call("SYS_REGISTER_WEBHOOK", **a)) for a in registrations]
info = aos.call("AGENT_INFO").get("result")
ps = aos.call("PS").get("result")
write("ready.json", {"register": registered, "info": info, "ps": ps})

seen = []
results = []
write("seen.json", seen)
write("results.json", results)

while True:
    reply = aos.call("RECV_MSG", wait_ms=60000)
    if reply["status"] != "SUCCESS":
        results.append(summary("recv", reply))
        write("results.json", results)
        continue
    for m in reply["result"]["messages"]:
        if m.get("kind") == "webhook":
            ev = m["event"]
            seen.append(ev)
            write("seen.json", seen)
            if mode != "echo":
                continue
            body = ev["body"] if ev["encoding"] == "utf8" else ""
            answer = {
                "request_id": ev["request_id"],
                "method": ev["method"],
                "path": ev["path"],
                "query": ev["query"],
                "upper": body.upper(),
                "encoding": ev["encoding"],
                "x_test": ev["headers"].get("x-test"),
            }
            status = 201
            for kv in ev["query"].split("&"):
                if kv.startswith("status="):
                    status = int(kv[len("status="):])
            r = aos.call(
                "SYS_WEBHOOK_REPLY",
                request_id=ev["request_id"],
                status=status,
                body=json.dumps(answer),
                headers={"X-Echo": f"{ev['method']} {ev['path']}", "Content-Type": "application/json"},
            )
            results.append(summary("echo", r))
            write("results.json", results)
            continue
        try:
            cmd = json.loads(m["body"])
        except ValueError:
            continue
        if cmd.get("cmd") == "exit":
            aos.report({"seen": seen, "results": results})
            aos.exit(cmd.get("code", 0))
        name = {"register": "SYS_REGISTER_WEBHOOK", "reply": "SYS_WEBHOOK_REPLY"}.get(cmd.get("cmd"))
        if name:
            results.append(summary(cmd["cmd"], aos.call(name, **cmd.get("args", {}))))
            write("results.json", results)
