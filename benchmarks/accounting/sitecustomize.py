"""Process accounting for the benchmarks: with $DRP_ACCOUNTING_FILE set and this folder on
PYTHONPATH, every Python that starts appends one JSON line when it exits: its command line, its own
CPU seconds and its wall time. (Commands forked by a warm stack server do not start a Python: the
server logs them itself, see drp_campaign/stackside/warm.py.)"""

import atexit
import json
import os
import resource
import sys

_FILE = os.environ.get("DRP_ACCOUNTING_FILE")


def _record() -> None:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        ticks = float(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        wall = float(open("/proc/uptime").read().split()[0]) - ticks / os.sysconf("SC_CLK_TCK")
    except OSError:
        wall = -1.0
    line = json.dumps(
        {"pid": os.getpid(), "argv": sys.orig_argv[:8], "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": wall}
    )
    with open(_FILE, "a") as out:
        out.write(line + "\n")


if _FILE:
    atexit.register(_record)
