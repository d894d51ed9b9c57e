"""``python -m tests.terminal ARGS``: ``recctl ARGS`` with SIGINT at its default, as from a terminal.

A terminal's Ctrl-C reaches a process whose SIGINT is at its default, but under ``nohup`` or a
non-interactive shell's ``&`` (a CI runner, a background ``make test``) children inherit SIGINT ignored,
and recctl keeps an ignored SIGINT ignored (``recctl.signals.handled``). Tests that interrupt a child with
SIGINT start it through this module (no ``preexec_fn``: unsafe in the threaded pytest-xdist workers).
"""

import runpy
import signal
import sys

if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    sys.argv[0] = "recctl"
    runpy.run_module("recctl", run_name="__main__", alter_sys=True)
