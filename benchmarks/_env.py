"""What every benchmark records about where it ran (commit, machine, how busy the CPUs were) and how it
runs a measured child process."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", "--no-optional-locks", *args], cwd=ROOT, capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip

    try:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, object]:
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {
        "nproc": os.cpu_count(),
        "ram_gb": round(ram / 2**30, 1),
        "cpu": _cpu_model(),
        "cpu_vector": _cpu_vector(),
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
    }


def _cpu_vector() -> str:
    """The widest vector extensions the CPU offers (BLAS and LightGBM pick kernels by them)."""
    try:
        flags = next(
            line.split(":", 1)[1].split()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return "unknown"
    return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "amx_tile") if f in flags) or "none"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over the next ``seconds`` (Linux /proc/stat), to flag a noisy machine."""

    def sample() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return idle, sum(fields[:8])

    try:
        idle0, total0 = sample()
        time.sleep(seconds)
        idle1, total1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def recctl_cmd() -> list[str]:
    """The recctl command of this interpreter's environment."""
    exe = Path(sys.executable).parent / "recctl"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("recctl")
    return [found] if found else [sys.executable, "-m", "recctl"]


@dataclass
class Child:
    code: int
    wall_s: float
    peak_mb: float
    cpu_s: float
    stdout: str
    stderr: str


def run_child(argv: list[str], out_path: Path, *, env: dict[str, str] | None = None) -> Child:
    """Run one child to completion from the project root: exit code, wall time, peak RSS (MiB) and CPU time
    (user + sys).

    The peak is ``ru_maxrss`` from ``os.wait4`` on this child's pid: this child alone (plus any children it
    waited for), not the max over every child the script ever ran as ``RUSAGE_CHILDREN`` would be. Its stdout
    and stderr go through ``out_path`` and ``out_path`` with suffix ``.err`` (deleted afterwards).
    """
    err_path = out_path.with_suffix(".err")
    try:
        with out_path.open("wb") as out, err_path.open("wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT, env=env)
            _, status, usage = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
        code = os.waitstatus_to_exitcode(status)
        stdout = out_path.read_text(errors="replace")
        stderr = err_path.read_text(errors="replace")
    finally:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    return Child(code, wall, usage.ru_maxrss / 1024.0, usage.ru_utime + usage.ru_stime, stdout, stderr)
