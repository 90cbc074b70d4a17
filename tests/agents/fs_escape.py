"""Test agent for tests/fs_escape.rs: tries to leave its workspace through
the FS_* syscalls and reports the error code of every attempt.

Usage: fs_escape.py <mode> [args...]; the report is /workspace/report.json.
Modes wait for an admin message "go" first where the test has to prepare the
workspace from the host after the agent's uid is known (hardlink, fifo).
"""
import ctypes
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import aos  # noqa: E402

WS = "/workspace"


def code(name, **args):
    return aos.code(aos.call(name, **args))


def timed(name, **args):
    t0 = time.monotonic()
    reply = aos.call(name, **args)
    return {"code": aos.code(reply), "ms": (time.monotonic() - t0) * 1000.0,
            "result": reply.get("result"), "message": (reply.get("error") or {}).get("message")}


def wait_go():
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = aos.ok("RECV_MSG", wait_ms=30000)
        if any(m["body"] == "go" for m in r["messages"]):
            return
    raise RuntimeError("no go message")


def write_report(obj):
    # Directly, not through FS_WRITE: the attack may have left odd things behind.
    with open(WS + "/report.json", "w") as f:
        json.dump(obj, f)


def mode_dotdot(marker):
    rep = {"read": {}, "write": {}, "list": {}, "delete": {}}
    for p in ["../x", "/../../etc/passwd", "a/../../x", "/workspace/../x",
              "../../../../../../../../etc/passwd", "..", "a/b/../../../x",
              "/workspace/a/../../etc/hostname", "./../victim-" + marker]:
        rep["read"][p] = code("FS_READ", path=p)
    for p in ["../" + marker, "a/../../" + marker, "/../../" + marker,
              "/workspace/../" + marker, "../../" + marker, "../../../" + marker,
              "../../../../../../../tmp/" + marker, "a/b/../../../tmp/" + marker,
              "/../../etc/" + marker]:
        rep["write"][p] = code("FS_WRITE", path=p, content="escaped " + marker)
    for p in ["..", "/..", "/workspace/..", "a/../..", "../.."]:
        rep["list"][p] = code("FS_LIST", path=p)
    for p in ["../victim-" + marker, "../../victim-" + marker,
              "a/../../victim-" + marker, "/../../../../tmp/victim-" + marker]:
        rep["delete"][p] = code("FS_DELETE", path=p)
    # Control: a legitimate `..` that stays inside works.
    rep["inside_write"] = code("FS_WRITE", path="a/../inside.txt", content="inside")
    rep["inside_read"] = aos.call("FS_READ", path="/workspace/b/../inside.txt")
    write_report(rep)


def mode_absolute():
    rep = {}
    rep["read_etc_passwd"] = aos.call("FS_READ", path="/etc/passwd")
    rep["read_ws_etc_passwd"] = aos.call("FS_READ", path="/workspace/etc/passwd")
    rep["read_proc_root"] = aos.call("FS_READ", path="/proc/self/root/etc/passwd")
    rep["list_etc"] = aos.call("FS_LIST", path="/etc")
    rep["write_etc_passwd"] = aos.call("FS_WRITE", path="/etc/passwd",
                                       content="agent-owned passwd\n")
    rep["reread_etc_passwd"] = aos.call("FS_READ", path="/etc/passwd")
    rep["reread_ws_etc_passwd"] = aos.call("FS_READ", path="/workspace/etc/passwd")
    rep["reread_rel_etc_passwd"] = aos.call("FS_READ", path="etc/passwd")
    write_report(rep)


def mode_symlinks(marker):
    links = {
        # final-component symlinks to files
        "shadow_link": "/etc/shadow",
        "procroot_link": "/proc/self/root/etc/shadow",
        "hostname_link": "../../../../etc/hostname",
        "hostfile_link": "../../../hostfile-" + marker,
        # symlinks used as directories
        "etc_dir": "/etc",
        "procroot_dir": "/proc/self/root",
        "up_dir": "../../..",
        "up_etc": "../../../../../../../../etc",
    }
    made = {}
    for name, target in links.items():
        try:
            os.symlink(target, os.path.join(WS, name))
            made[name] = os.readlink(os.path.join(WS, name))
        except OSError as e:
            made[name] = "ERROR " + str(e)
    rep = {"made": made, "read": {}, "write": {}, "list": {}, "delete": {}}
    for p in ["shadow_link", "procroot_link", "hostname_link", "hostfile_link",
              "/workspace/shadow_link"]:
        rep["read"][p] = code("FS_READ", path=p)
        rep["write"][p] = code("FS_WRITE", path=p, content="pwned " + marker)
    rep["append"] = {p: code("FS_WRITE", path=p, content="pwned", append=True)
                     for p in ["shadow_link", "hostfile_link"]}
    for p in ["etc_dir/shadow", "etc_dir/hostname", "procroot_dir/etc/shadow",
              "up_dir/hostfile-" + marker, "up_etc/hostname", "up_etc/shadow"]:
        rep["read"][p] = code("FS_READ", path=p)
    for p in ["etc_dir/agentos-" + marker, "up_dir/hostfile-" + marker,
              "up_dir/new-" + marker, "procroot_dir/tmp/" + marker,
              "etc_dir/sub/" + marker]:
        rep["write"][p] = code("FS_WRITE", path=p, content="pwned " + marker)
    for p in ["etc_dir", "up_dir", "etc_dir/ssl", "up_dir/state"]:
        rep["list"][p] = code("FS_LIST", path=p)
    rep["delete"]["up_dir/hostfile-" + marker] = code("FS_DELETE", path="up_dir/hostfile-" + marker)
    # Deleting the link itself is allowed and never touches its target.
    rep["delete"]["shadow_link"] = code("FS_DELETE", path="shadow_link")
    write_report(rep)


def mode_hardlink():
    wait_go()
    rep = {
        "read": timed("FS_READ", path="hl"),
        "read_abs": timed("FS_READ", path="/workspace/hl"),
        "write": timed("FS_WRITE", path="hl", content="pwned"),
        "append": timed("FS_WRITE", path="hl", content="pwned", append=True),
        "read_sub": timed("FS_READ", path="sub/hl2"),
        "write_sub": timed("FS_WRITE", path="sub/hl2", content="pwned"),
        "list": aos.call("FS_LIST", path="/"),
    }
    write_report(rep)


def mode_fifo():
    wait_go()
    rep = {
        "read": timed("FS_READ", path="fifo"),
        "write": timed("FS_WRITE", path="fifo", content="data"),
        "append": timed("FS_WRITE", path="fifo", content="data", append=True),
        "read_abs": timed("FS_READ", path="/workspace/fifo"),
        "list": timed("FS_LIST", path="fifo"),
        "read_dirfifo": timed("FS_READ", path="fifo/x"),
    }
    write_report(rep)


RENAME_EXCHANGE = 2
AT_FDCWD = -100


def make_exchange():
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]

    def exchange(a, b):
        if fn(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
    return exchange


def mode_race(hostdir, name, rel_hostdir, rel_root_climb, seconds):
    content = "written-by-agent"
    d = WS + "/d"
    dreal = WS + "/d.real"
    dlink = WS + "/d.link"
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "w") as f:
        f.write(content)
    # Absolute, magic-link and relative routes to the host directory (the
    # relative ones only lead anywhere when resolved from the host side).
    targets = ["/etc", hostdir, rel_hostdir, rel_root_climb, "/proc/self/root" + hostdir,
               "/proc/self/root/etc"]
    exchange = make_exchange()
    stop = threading.Event()
    stats = {"exchanges": 0, "renames": 0, "swap_errors": 0, "exchange_error": None,
             "last_swap_error": None}

    def reset():
        # Back to: d is the real directory, no spare link.
        for p in (dlink,):
            if os.path.islink(p):
                os.unlink(p)
        if os.path.islink(d):
            os.unlink(d)
        if os.path.isdir(dreal) and not os.path.islink(dreal):
            if os.path.lexists(d):
                os.rename(d, WS + "/junk-%d" % time.monotonic_ns())
            os.rename(dreal, d)
        os.makedirs(d, exist_ok=True)

    def swapper():
        nonlocal exchange
        i = 0
        while not stop.is_set():
            target = targets[i % len(targets)]
            i += 1
            try:
                os.symlink(target, dlink)
                if exchange is not None and i % 2 == 0:
                    try:
                        exchange(d, dlink)  # d is now the symlink, dlink the dir
                        exchange(d, dlink)  # and back
                        stats["exchanges"] += 1
                    except OSError as e:
                        stats["exchange_error"] = str(e)
                        exchange = None
                    os.unlink(dlink)
                else:
                    os.rename(d, dreal)    # d vanishes
                    os.rename(dlink, d)    # d is a symlink
                    os.unlink(d)           # d vanishes
                    os.rename(dreal, d)    # d is the directory again
                    stats["renames"] += 1
            except OSError as e:
                stats["swap_errors"] += 1
                stats["last_swap_error"] = str(e)
                try:
                    reset()
                except OSError as e2:
                    stats["last_swap_error"] += " / reset: " + str(e2)

    codes = {"read": {}, "write": {}}
    contents = set()
    path = "d/" + name

    def tally(op, reply):
        c = aos.code(reply)
        codes[op][c] = codes[op].get(c, 0) + 1
        return c

    t = threading.Thread(target=swapper)
    t.start()
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            tally("write", aos.call("FS_WRITE", path=path, content=content))
            r = aos.call("FS_READ", path=path)
            if tally("read", r) == "SUCCESS":
                contents.add(r["result"]["content"])
    finally:
        stop.set()
        t.join()
    try:
        reset()
    except OSError:
        pass
    write_report({"codes": codes, "contents": sorted(contents), "stats": stats,
                  "targets": targets, "exchange_available": make_exchange() is not None})


def mode_list():
    os.symlink("/", WS + "/rootlink")
    os.symlink("../..", WS + "/uplink")
    os.symlink("/proc/self/root", WS + "/procroot")
    os.mkdir(WS + "/a")
    rep = {}
    for p in ["..", "/..", "/workspace/..", "a/../..", "../../..", "/workspace/../workspace"]:
        rep[p] = aos.call("FS_LIST", path=p)
    for p in ["rootlink", "rootlink/", "rootlink/.", "/workspace/rootlink", "uplink", "procroot",
              "rootlink/etc", "rootlink/proc", "uplink/workspaces", "procroot/etc",
              "a/../rootlink/etc"]:
        rep[p] = aos.call("FS_LIST", path=p)
    rep["/"] = aos.call("FS_LIST", path="/")
    write_report(rep)


def main():
    mode = sys.argv[1]
    args = sys.argv[2:]
    if mode == "dotdot":
        mode_dotdot(args[0])
    elif mode == "absolute":
        mode_absolute()
    elif mode == "symlinks":
        mode_symlinks(args[0])
    elif mode == "hardlink":
        mode_hardlink()
    elif mode == "fifo":
        mode_fifo()
    elif mode == "race":
        mode_race(args[0], args[1], args[2], args[3], float(args[4]))
    elif mode == "list":
        mode_list()
    else:
        raise SystemExit("unknown mode " + mode)
    aos.exit(0)


if __name__ == "__main__":
    main()
