"""The baseline of agent-tasks: the simplest loop a user would write around
the same model, run through AgentOS like any program (LLM_INFER and the
syscalls on fd 3): a short prompt with one example per tool, the first
call of each reply run, unknown argument fields dropped, numbers in strings
coerced, at most MAX_TURNS inferences.

Usage: baseline-loop.py TASK GROUPS   (GROUPS: comma-separated permission groups)
"""
import json
import re
import socket
import sys

MAX_TURNS = 15
sock = socket.socket(fileno=3)
rfile = sock.makefile("rb")
next_id = 0


def call(name, args):
    global next_id
    next_id += 1
    sock.sendall((json.dumps({"id": next_id, "call": name, "args": args}) + "\n").encode())
    while True:
        reply = json.loads(rfile.readline())
        if reply.get("id") == next_id:
            return reply


# name: (group, example arguments, integer fields)
TOOLS = {
    "FS_WRITE": ("fs", {"path": "/file.txt", "content": "text"}, []),
    "FS_READ": ("fs", {"path": "/file.txt"}, []),
    "FS_LIST": ("fs", {"path": "/"}, []),
    "FS_DELETE": ("fs", {"path": "/file.txt"}, []),
    "EXEC_CMD": ("exec", {"cmd": "ls"}, []),
    "SEND_MSG": ("ipc", {"to": 1, "body": "text"}, ["to"]),
    "RECV_MSG": ("ipc", {"wait_ms": 1000}, ["wait_ms"]),
    "MEM_WRITE": ("memory", {"key": "name", "value": "text"}, []),
    "MEM_READ": ("memory", {"query": "text"}, []),
    "SPAWN_AGENT": ("process", {"name": "helper", "role": "what it must do"}, []),
    "WAIT": ("process", {"pid": 2}, ["pid"]),
    "SYS_EXIT": (None, {"code": 0}, ["code"]),
}


def main():
    task, groups = sys.argv[1], sys.argv[2].split(",")
    tools = {n: t for n, t in TOOLS.items() if t[0] is None or t[0] in groups}
    prompt = (
        "You are an agent. You act only by calling tools. Reply with exactly one line:\n"
        "CALL NAME {json arguments}\nTools:\n"
        + "".join(f"CALL {n} {json.dumps(t[1])}\n" for n, t in tools.items())
        + "The result comes back in the next message. When the task is done, reply "
        'CALL SYS_EXIT {"code": 0}'
    )
    messages = [{"role": "system", "content": prompt}, {"role": "user", "content": task}]
    pattern = re.compile(r"\b(" + "|".join(tools) + r")\b\W*?(\{)")
    for turn in range(MAX_TURNS):
        r = call("LLM_INFER", {"messages": messages, "max_tokens": 256})
        if r["status"] != "SUCCESS":
            call("SYS_EXIT", {"code": 4, "reason": f"LLM_INFER: {r['error']}"})
            return
        text = r["result"]["content"]
        print(f"turn {turn + 1}: {text.strip()}", flush=True)
        messages.append({"role": "assistant", "content": text})
        m = pattern.search(text)
        args = None
        if m:
            try:
                args, _ = json.JSONDecoder().raw_decode(text[m.start(2):])
            except ValueError:
                args = None
        if not isinstance(args, dict):
            messages.append({"role": "user", "content": "Reply with one line: CALL NAME {json arguments}"})
            continue
        name, (_, example, ints) = m.group(1), tools[m.group(1)]
        args = {k: v for k, v in args.items() if k in example or k == "permissions"}
        for k in ints:
            if isinstance(args.get(k), str) and args[k].strip().lstrip("-").isdigit():
                args[k] = int(args[k])
        reply = call(name, args)
        if name == "SYS_EXIT" and reply["status"] == "SUCCESS":
            return
        outcome = reply.get("result") if reply["status"] == "SUCCESS" else {"error": reply["error"]}
        messages.append({"role": "user", "content": "RESULT: " + json.dumps(outcome)[:2000]})
    call("SYS_EXIT", {"code": 6, "reason": f"no SYS_EXIT within {MAX_TURNS} turns"})


main()
