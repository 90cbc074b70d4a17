#!/usr/bin/env python3
"""Test agent: sends numbered messages to one agent with SEND_MSG.

Usage: send_many.py TO COUNT [DELAY_S] [TAG]

After each acknowledged send it prints `acked <seq> <i>` (flushed), so a
test can tell from the agent's log which messages the supervisor has
acknowledged. When all are sent it writes {"acks": [...]} to
/report.json, prints `done` and idles, so that the test decides when the
supervisor dies.
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402


def body(i: int) -> str:
    return f"durable message {i}"


def main() -> None:
    if os.environ.get("AGENTOS_RECOVERED"):
        # Restarted after a supervisor crash: the test owns what was sent.
        print("recovered; not sending again", flush=True)
        while True:
            time.sleep(60)
    to = int(sys.argv[1])
    count = int(sys.argv[2])
    delay = float(sys.argv[3]) if len(sys.argv) > 3 else 0.0
    acks = []
    tag = sys.argv[4] if len(sys.argv) > 4 else ""
    ack_log = open("/workspace/acks.txt", "a")
    for i in range(count):
        reply = aos.call("SEND_MSG", to=to, body=body(i) + tag)
        if reply["status"] != "SUCCESS":
            print(f"failed {i} {aos.code(reply)} {reply['error']['message']}", flush=True)
            aos.report({"acks": acks, "error": reply["error"]})
            aos.exit(1)
        seq = reply["result"]["seq"]
        acks.append({"i": i, "seq": seq, "body": body(i) + tag})
        # A host-side record of every acknowledgement, written before the
        # next send: it survives the supervisor being killed.
        ack_log.write(f"{seq} {i} {body(i) + tag}\n")
        ack_log.flush()
        print(f"acked {seq} {i}", flush=True)
        if delay:
            time.sleep(delay)
    aos.report({"acks": acks})
    print("done", flush=True)
    time.sleep(300)


main()
