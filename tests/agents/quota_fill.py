"""Fills a workspace until the filesystem refuses, for tests/workspace_quota.rs
(run on the host as the workspace's uid) and for agents in a sandbox.

Usage: quota_fill.py <mode> [dir] [--chunk BYTES] [--report PATH]

Modes (dir defaults to /workspace):
  file      write DIR/fill in chunks until a write fails;
  nested    create a btrfs subvolume DIR/inner (no privilege needed), fill it;
  snapshot  snapshot DIR into DIR/snap (as its owner), fill the snapshot;
  many      create 4 KiB files DIR/many/<n> until one fails.

Prints one JSON line: {"mode", "written", "error", "setup_error"}, where
"written" counts the bytes the kernel accepted and "error" is the errno
name of the refusal. With --report, the filled data is deleted and synced
first, then the same JSON is also written to PATH (a full workspace would
refuse the report itself).
"""
import errno
import fcntl
import json
import os
import shutil
import struct
import sys

# <linux/btrfs.h>: _IOW(0x94, 14 / 1, struct btrfs_ioctl_vol_args) with
# struct btrfs_ioctl_vol_args { __s64 fd; char name[4088]; }.
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E
BTRFS_IOC_SNAP_CREATE = 0x50009401


def vol_args(fd, name):
    # Mutable: fcntl.ioctl copies immutable arguments only up to 1024 bytes.
    return bytearray(struct.pack("q4088s", fd, name.encode()))


def fill_file(path, chunk):
    written = 0
    data = b"\xa5" * chunk
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as e:
        return written, errno.errorcode.get(e.errno, str(e.errno))
    try:
        while True:
            try:
                n = os.write(fd, data)
            except OSError as e:
                return written, errno.errorcode.get(e.errno, str(e.errno))
            if n == 0:
                return written, "zero-length write"
            written += n
    finally:
        try:
            os.close(fd)
        except OSError:
            pass


def fill_many(path):
    os.makedirs(path, exist_ok=True)
    written, n = 0, 0
    data = b"\x5a" * 4096
    while True:
        try:
            with open(os.path.join(path, str(n)), "wb") as f:
                f.write(data)
                f.flush()
        except OSError as e:
            return written, errno.errorcode.get(e.errno, str(e.errno))
        written += len(data)
        n += 1


def main():
    args = sys.argv[1:]
    chunk, report = 64 * 1024, None
    if "--chunk" in args:
        i = args.index("--chunk")
        chunk = int(args[i + 1])
        del args[i:i + 2]
    if "--report" in args:
        i = args.index("--report")
        report = args[i + 1]
        del args[i:i + 2]
    mode = args[0]
    base = args[1] if len(args) > 1 else "/workspace"
    out = {"mode": mode, "written": 0, "error": None, "setup_error": None}
    target = base
    try:
        if mode == "nested":
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.ioctl(fd, BTRFS_IOC_SUBVOL_CREATE, vol_args(0, "inner"))
            os.close(fd)
            target = os.path.join(base, "inner")
        elif mode == "snapshot":
            fd = os.open(base, os.O_RDONLY | os.O_DIRECTORY)
            fcntl.ioctl(fd, BTRFS_IOC_SNAP_CREATE, vol_args(fd, "snap"))
            os.close(fd)
            target = os.path.join(base, "snap")
    except OSError as e:
        out["setup_error"] = errno.errorcode.get(e.errno, str(e.errno))
    if out["setup_error"] is None:
        if mode == "many":
            out["written"], out["error"] = fill_many(os.path.join(base, "many"))
        else:
            out["written"], out["error"] = fill_file(os.path.join(target, "fill"), chunk)
    line = json.dumps(out)
    print(line, flush=True)
    if report:
        for p in ("fill", "many", "inner/fill", "snap/fill"):
            full = os.path.join(base, p)
            if os.path.isdir(full):
                shutil.rmtree(full, ignore_errors=True)
            elif os.path.exists(full):
                os.unlink(full)
        os.sync()
        with open(report, "w") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
