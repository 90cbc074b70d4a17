"""Minimal AgentOS client for test agents: speaks the fd-3 JSON syscall ABI."""
import json
import os
import socket

_sock = socket.socket(fileno=3)
_rfile = _sock.makefile("rb")
_next_id = 0


def send_raw(data: bytes) -> None:
    _sock.sendall(data)


def read_reply() -> dict:
    line = _rfile.readline()
    if not line:
        raise EOFError("supervisor closed the socket")
    return json.loads(line)


def call(name: str, /, **args) -> dict:
    """Performs one syscall and returns the whole reply object."""
    global _next_id
    _next_id += 1
    my_id = _next_id
    send_raw((json.dumps({"id": my_id, "call": name, "args": args}) + "\n").encode())
    while True:
        reply = read_reply()
        if reply.get("id") == my_id:
            return reply


def ok(name: str, /, **args) -> dict:
    """Performs a syscall that must succeed and returns its result."""
    reply = call(name, **args)
    if reply["status"] != "SUCCESS":
        raise RuntimeError(f"{name} failed: {reply['error']}")
    return reply["result"]


def code(reply: dict) -> str:
    return "SUCCESS" if reply["status"] == "SUCCESS" else reply["error"]["code"]


def report(obj) -> None:
    """Writes /report.json in the workspace through FS_WRITE if allowed, else directly."""
    text = json.dumps(obj)
    reply = call("FS_WRITE", path="/report.json", content=text)
    if reply["status"] != "SUCCESS":
        with open("/workspace/report.json", "w") as f:
            f.write(text)


def exit(status: int = 0) -> None:
    import sys
    sys.stdout.flush()
    sys.stderr.flush()
    call("SYS_EXIT", code=status)
    os._exit(status)
