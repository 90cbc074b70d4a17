"""Token budgets in a tree: run as `budget_tree.py parent` by an admin with
a token budget; it lends parts of its budget to children and reports what
it was told to /report.json. `budget_tree.py sleep` idles until killed."""
import os
import sys

import aos

SCRIPT = os.path.abspath(__file__)
ASK = [{"role": "user", "content": "who am I?"}]


def code_and_message(reply):
    if reply["status"] == "SUCCESS":
        return ["SUCCESS", ""]
    return [reply["error"]["code"], reply["error"]["message"]]


def remaining():
    return aos.ok("AGENT_INFO")["budget_remaining"]


def sleeper(name, limits=None):
    a = dict(name=name, program="/usr/bin/python3", args=[SCRIPT, "sleep"], permissions=["time"])
    if limits is not None:
        a["limits"] = limits
    return aos.call("SPAWN_AGENT", **a)


def parent():
    out = {"start": remaining()}
    # 1. An LLM child with 2000 of the 6000: it spends until its own budget ends.
    spender = aos.ok("SPAWN_AGENT", name="spender", role="Keep asking who you are.",
                     model="m", permissions=["inference"], limits={"budget_tokens": 2000})
    out["spender"] = spender["pid"]
    # 2. More than is left (6000 - 2000 lent) is refused.
    out["too_big"] = code_and_message(sleeper("too-big", {"budget_tokens": 4500}))
    aos.ok("WAIT", pid=spender["pid"], timeout_ms=60000)
    out["after_spender"] = remaining()
    # 3. A child that names no budget gets half of what is left; more than
    #    the other half is refused.
    half = aos.ok("SPAWN_AGENT", name="half", program="/usr/bin/python3",
                  args=[SCRIPT, "sleep"], permissions=["time"])
    out["half"] = half["pid"]
    out["beside_half"] = remaining()
    out["too_much"] = code_and_message(sleeper("too-much", {"budget_tokens": out["beside_half"] + 1}))
    # 4. A child given all that is left: the parent may not infer meanwhile.
    all_of_it = aos.ok("SPAWN_AGENT", name="all-of-it", program="/usr/bin/python3",
                       args=[SCRIPT, "sleep"], permissions=["time"],
                       limits={"budget_tokens": out["beside_half"]})
    out["all_of_it"] = all_of_it["pid"]
    out["while_lent"] = remaining()
    out["infer_while_lent"] = code_and_message(aos.call("LLM_INFER", model="m", messages=ASK))
    # Both end without spending: all of it comes back.
    for pid in (half["pid"], all_of_it["pid"]):
        aos.ok("KILL", pid=pid)
        aos.ok("WAIT", pid=pid, timeout_ms=60000)
    out["after_kill"] = remaining()
    # 5. The parent's own inference is charged to it, and only it.
    out["infer"] = code_and_message(aos.call("LLM_INFER", model="m", messages=ASK))
    out["end"] = remaining()
    aos.report(out)
    aos.exit(0)


if sys.argv[1] == "parent":
    parent()
else:
    while True:
        aos.call("SLEEP", ms=1000)
