"""``python -m tests.terminal ARGS``: ``recctl ARGS`` with SIGINT handled as Python does from a terminal.

A terminal's Ctrl-C reaches a process whose SIGINT is at its default, but under ``nohup`` or a
non-interactive shell's ``&`` (a CI runner, a background ``make test``) children inherit SIGINT ignored,
and recctl keeps an ignored SIGINT ignored (``recctl.signals.handled``). Tests that interrupt a child with
SIGINT start it through this module (no ``preexec_fn``: unsafe in the threaded pytest-xdist workers).
"""

import runpy
import signal
import sys

if __name__ == "__main__":
    # what Python installs at start-up when SIGINT is not ignored (SIG_DFL would kill the process
    # outright, not raise KeyboardInterrupt, when the signal lands before recctl's own handlers)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv[0] = "recctl"
    runpy.run_module("recctl", run_name="__main__", alter_sys=True)
