"""Test agent: keeps three LLM_INFER requests in flight until it is killed,
so that it always has work queued (fairness is a property of backlogged
agents: one that has nothing queued cannot be given its share)."""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402

IN_FLIGHT = 3
REQUEST = {"call": "LLM_INFER", "args": {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 80}}


def send(i):
    aos.send_raw((json.dumps(dict(REQUEST, id=i)) + "\n").encode())


next_id = 0
for _ in range(IN_FLIGHT):
    next_id += 1
    send(next_id)
while True:
    reply = aos.read_reply()
    if reply["status"] != "SUCCESS":
        print("LLM_INFER:", reply.get("error"), flush=True)
        time.sleep(0.05)
    next_id += 1
    send(next_id)
