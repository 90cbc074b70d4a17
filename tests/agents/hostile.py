"""Hostile test agent: each mode tries one way of exhausting or fooling the
supervisor and reports what it saw. Run as `hostile.py MODE [ARGS...]`."""
import os
import sys
import time

import aos


def terminal():
    """Output that would drive an operator's terminal if printed raw."""
    sys.stdout.write("\x1b]52;c;cHduZWQ=\x07clipboard\n")
    sys.stdout.write("\x1b]0;window title\x07title\n")
    sys.stdout.write("\x1b[2J\x1b[Hcleared\n")
    sys.stdout.write("progress\rTERMINATED (exited with code 0)\n")
    sys.stdout.flush()
    aos.call("SYS_WRITE_STDOUT", data="via syscall\x1b[31m red\n")
    aos.call("SYS_EXIT", code=7, reason="done\x1b]52;c;cHduZWQ=\x07\nTERMINATED (exited with code 0)")
    os._exit(7)


{
    "terminal": terminal,
}[sys.argv[1]](*sys.argv[2:])
