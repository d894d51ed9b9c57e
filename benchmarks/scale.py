#!/usr/bin/env python3
"""Growth curves (issue 15): every stage of the pipeline on synthetic shops of 1M, 10M (and 100M) events.

Usage (from anywhere; paths are relative to the repository root)::

    .venv/bin/python benchmarks/scale.py                          # `make bench-scale`: 1M and 10M
    .venv/bin/python benchmarks/scale.py --sizes 1M,10M,100M      # `make bench-scale-full` (hours)
    .venv/bin/python benchmarks/scale.py --sizes 1M --timeout 1800 --stage-timeout train=3600 --keep

For each size a shop is generated with ``recctl sample --scale N`` into ``benchmarks/work/scale/data/N/``
(kept and reused by a later run with the same seed and size; recorded, not a stage), then each stage runs
as its own ``recctl --json`` child process of this checkout's code (``python -m recctl``, ``PYTHONPATH`` =
the repository) in a fresh project ``benchmarks/work/scale/N/`` with ``benchmarks/scale/scale.toml``:

- ``ingest``: ``recctl ingest events|items|users`` (three children; wall and CPU summed, peak the max),
  with the ``scale-shop-*`` mappings; every row must load (no reject, no duplicate) or the run is wrong;
- ``features``: ``recctl features``; ``train``: ``recctl train`` (generators, ranker, promotion);
- ``evaluate``: ``recctl evaluate`` (the temporal split of the config, the models and one baseline);
- ``recommend``: ``recctl recommend --all`` (every user into the online store).

Each child is measured with ``os.wait4`` (wall, user + sys CPU, ``ru_maxrss``); its RSS is also sampled
from ``/proc`` twice a second, and the child is killed (SIGKILL to its process group) above ``--max-rss-mb``
or after its timeout. A failed, killed or timed-out stage is recorded with its stderr tail; the stages that
need it are recorded as skipped. ``benchmarks/results/scale.json`` (at the end; after every stage the figures
so far go to ``benchmarks/work/scale/scale.partial.json``): per size
per stage figures, totals, the machine's load, the commit, and per stage the growth exponent ``b`` of
``wall ∝ events^b`` fitted by least squares on log–log over the sizes where the stage succeeded.

Targets (issue 15): at 100M events ingest + features + train + recommend peak ≤ 16 GB and total ≤ 3 h;
every stage's exponent ≤ 1.15. ``met`` judges what was run (the 100M targets only with 100M). Exits 0 when
met, 1 when missed (a failed stage misses it; the JSON is written first), 2 when the run is wrong (the
generator failed or the ingest counts do not match the generated files; no JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _env import cpu_busy, git_commit, machine

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "benchmarks" / "work" / "scale"
DEFAULT_CONFIG = ROOT / "benchmarks" / "scale" / "scale.toml"
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "scale.json"
MAPPINGS = ROOT / "configs" / "mappings"
PARTIAL = WORK / "scale.partial.json"
STAGES = ("ingest", "features", "train", "evaluate", "recommend")
SERVED = ("ingest", "features", "train", "recommend")  # the stages of the 100M total and peak targets
NEEDS = {"features": "ingest", "train": "ingest", "evaluate": "ingest", "recommend": "train"}
TARGETS = {"events": 100_000_000, "peak_mb": 16 * 1024, "total_s": 3 * 3600, "exponent": 1.15}


class BenchError(Exception):
    """The run itself is wrong (exit 2)."""


@dataclass
class Stage:
    status: str  # ok | failed | timeout | killed-memory | skipped | not-run
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_mb: float = 0.0
    code: int | None = None
    load_at_start: float | None = None
    stderr_tail: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def parse_size(text: str) -> int:
    sys.path.insert(0, str(ROOT))
    from recctl.sample.scale import parse_count

    return parse_count(text)


def rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def run(argv: list[str], cwd: Path, timeout: float, max_rss_mb: float, tag: str) -> tuple[Stage, str]:
    """One measured child: its Stage (status, wall, CPU, ru_maxrss) and its stdout. Its stderr (recctl's
    timestamped stage log) stays in ``cwd/TAG.err`` and its RSS every 2 s in ``cwd/TAG.rss.tsv``: together
    they show which step holds the time and the memory."""
    argv = [a.replace("{tag}", tag) for a in argv]  # --profile: the stage's own .prof file
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECCTL_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    out_p, err_p, rss_p = cwd / f"{tag}.out", cwd / f"{tag}.err", cwd / f"{tag}.rss.tsv"
    load = os.getloadavg()[0]
    with out_p.open("wb") as out, err_p.open("wb") as err, rss_p.open("w") as trace:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=cwd, env=env, start_new_session=True)
        killed, sampled, tick = None, 0.0, 0
        while True:
            pid, wstatus, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = rss_mb(proc.pid)
            sampled, tick = max(sampled, now), tick + 1
            if tick % 4 == 1:
                trace.write(f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}\t{now:.0f}\n")
                trace.flush()
            over_time = time.perf_counter() - t0 > timeout
            if killed is None and (over_time or sampled > max_rss_mb):
                killed = "timeout" if over_time else "killed-memory"
                os.killpg(proc.pid, signal.SIGKILL)
            time.sleep(0.5)
        wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(wstatus)
    stdout, stderr = out_p.read_text(errors="replace"), err_p.read_text(errors="replace")
    out_p.unlink(missing_ok=True)
    status = killed or ("ok" if code == 0 else "failed")
    st = Stage(status, round(wall, 2), round(usage.ru_utime + usage.ru_stime, 2),
               round(max(usage.ru_maxrss / 1024.0, sampled), 1), code, round(load, 2))  # fmt: skip
    if status != "ok":
        tail = stderr.strip()[-3000:]
        if killed == "killed-memory":
            tail = f"killed by benchmarks/scale.py: RSS {sampled:,.0f} MB > {max_rss_mb:,.0f} MB\n{tail}"
        elif killed == "timeout":
            tail = f"killed by benchmarks/scale.py after the stage's timeout of {timeout:,.0f} s\n{tail}"
        st.stderr_tail = tail
    return st, stdout


def last_json(text: str) -> dict[str, Any]:
    for line in reversed([p for p in text.replace("\r", "\n").split("\n") if p.strip()]):
        try:
            doc = json.loads(line)
        except json.JSONDecodeError:
            continue
        return doc if isinstance(doc, dict) else {"result": doc}
    return {}


def generate(n: int, seed: int, chunk: int) -> tuple[Path, dict[str, Any]]:
    """The shop of ``n`` events (reused when already there for this seed and size) and its record."""
    data = WORK / "data" / str(n)
    stamp = data / "summary.json"
    if stamp.exists():
        done = json.loads(stamp.read_text())
        if done.get("seed") == seed and done.get("events") == n:
            return data, {**done["generate"], "reused": True}
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    argv = [sys.executable, "-m", "recctl", "--quiet", "--json", "sample", str(data), "--scale", str(n),
            "--seed", str(seed), "--chunk", str(chunk)]  # fmt: skip
    st, stdout = run(argv, data, timeout=6 * 3600, max_rss_mb=float("inf"), tag="generate")
    doc = last_json(stdout)
    if st.status != "ok" or doc.get("events") != n:
        raise BenchError(f"recctl sample --scale {n} failed ({st.status}): {st.stderr_tail or doc}")
    gen = {"wall_s": st.wall_s, "cpu_s": st.cpu_s, "peak_mb": st.peak_mb, "summary": doc,
           "bytes": sum(f.stat().st_size for f in data.glob("*.parquet"))}  # fmt: skip
    stamp.write_text(json.dumps({"seed": seed, "events": n, "generate": gen}, indent=1))
    return data, {**gen, "reused": False}


def ingest(cmd: list[str], proj: Path, data: Path, n: int, timeout: float, max_rss: float) -> Stage:
    """The three ingests as one stage; every generated row must load."""
    total = Stage("ok", load_at_start=round(os.getloadavg()[0], 2))
    expect = {"events": n, **{t: int(json.loads((data / "summary.json").read_text())["generate"]["summary"][t])
                              for t in ("items", "users")}}  # fmt: skip
    for target in ("events", "items", "users"):
        argv = [*cmd, "ingest", target, str(data / f"{target}.parquet"), "--mapping",
                str(MAPPINGS / f"scale-shop-{target}.toml")]  # fmt: skip
        st, stdout = run(argv, proj, timeout - total.wall_s, max_rss, f"ingest-{target}")
        total.wall_s, total.cpu_s = round(total.wall_s + st.wall_s, 2), round(total.cpu_s + st.cpu_s, 2)
        total.peak_mb = max(total.peak_mb, st.peak_mb)
        total.detail[target] = {"wall_s": st.wall_s, "cpu_s": st.cpu_s, "peak_mb": st.peak_mb}
        if st.status != "ok":
            total.status, total.code, total.stderr_tail = (
                st.status,
                st.code,
                f"ingest {target}: {st.stderr_tail}",
            )
            return total
        f = (last_json(stdout).get("files") or [{}])[0]
        got = (f.get("rows_read"), f.get("rows_loaded"), f.get("rows_rejected"), f.get("rows_duplicate"))
        if got != (expect[target], expect[target], 0, 0):
            raise BenchError(
                f"ingest {target}: read/loaded/rejected/duplicate {got}, expected {expect[target]}"
            )
    total.code = 0
    return total


def stage_detail(name: str, doc: dict[str, Any]) -> dict[str, Any]:
    """What a stage's own JSON says that explains its figures."""
    if name == "train":
        models = doc.get("models") or {}
        return {"data": doc.get("data"), "fit_s": {k: m.get("fit_s") for k, m in models.items()},
                "warnings": doc.get("warnings")}  # fmt: skip
    if name == "recommend":
        return {k: doc.get(k) for k in ("users", "rows", "seconds", "users_per_s")}
    if name == "evaluate":
        doc = doc.get("result", doc) if "models" not in doc else doc
        models = doc.get("models") or {}
        keep = ("ndcg@10", "recall@10")
        return {
            "data": {k: v for k, v in (doc.get("data") or {}).items() if not isinstance(v, (dict, list))},
            "models": {n: {**{k: (m.get("metrics") or {}).get(k) for k in keep},
                           **{k: m[k] for k in ("fit_s", "wall_s", "score_s") if k in m}}
                       for n, m in models.items() if isinstance(m, dict)},
        }  # fmt: skip
    if name == "features":
        return {"tables": doc.get("tables")}
    return {}


def exponent(points: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of log(y) on log(x)."""
    pts = [(math.log(x), math.log(max(y, 1e-3))) for x, y in points]
    if len(pts) < 2:
        return None
    mx, my = sum(p[0] for p in pts) / len(pts), sum(p[1] for p in pts) / len(pts)
    sxx = sum((p[0] - mx) ** 2 for p in pts)
    return round(sum((p[0] - mx) * (p[1] - my) for p in pts) / sxx, 3) if sxx else None


def summarize(result: dict[str, Any]) -> None:
    """Totals per size, growth exponents per stage, the targets and ``met``."""
    sizes = result["sizes"] = dict(sorted(result["sizes"].items(), key=lambda kv: int(kv[0])))
    for rec in sizes.values():
        st = rec["stages"]
        rec["total_s"] = round(sum(s["wall_s"] for s in st.values()), 2)
        rec["served_total_s"] = round(sum(st[k]["wall_s"] for k in SERVED if k in st), 2)
        rec["peak_mb"] = max((s["peak_mb"] for s in st.values()), default=0.0)
        rec["all_ok"] = all(s["status"] == "ok" for s in st.values()) and len(st) == len(STAGES)
    exps = {}
    for name in STAGES:
        pts = [(float(n), r["stages"][name]["wall_s"]) for n, r in sizes.items()
               if r["stages"].get(name, {}).get("status") == "ok"]  # fmt: skip
        exps[name] = {"exponent": exponent(pts), "points": len(pts),
                      "peak_exponent": exponent([(float(n), sizes[str(int(n))]["stages"][name]["peak_mb"])
                                                 for n, _ in pts])}  # fmt: skip
        # a timeout after an ok size still bounds the exponent from below
        cut = [(float(n), r["stages"][name]["wall_s"]) for n, r in sizes.items()
               if r["stages"].get(name, {}).get("status") == "timeout"]  # fmt: skip
        if pts and cut and cut[-1][0] > pts[0][0]:
            exps[name]["exponent_at_least"] = exponent([pts[0], cut[-1]])
    result["growth"] = exps
    checks: dict[str, Any] = {
        "every stage ok at every size": all(r["all_ok"] for r in sizes.values()),
        "every exponent <= 1.15": None,  # judged with two sizes or more
    }
    if len(sizes) > 1:
        ok = [e["exponent"] is not None and e["exponent"] <= TARGETS["exponent"] for e in exps.values()]
        checks["every exponent <= 1.15"] = all(ok)
    big = sizes.get(str(TARGETS["events"]))
    if big:
        checks["100M peak <= 16 GB"] = big["all_ok"] and big["peak_mb"] <= TARGETS["peak_mb"]
        checks["100M total <= 3 h"] = big["all_ok"] and big["served_total_s"] <= TARGETS["total_s"]
    result["targets"] = {**TARGETS, "checks": checks}
    result["met"] = all(v is not False for v in checks.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--sizes", default="1M,10M", help="event counts, comma-separated (default 1M,10M)")
    ap.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="the pipeline (default scale.toml)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"results JSON (default {DEFAULT_OUT})")
    ap.add_argument("--seed", type=int, default=42, help="seed of the generated shops")
    ap.add_argument("--chunk", type=int, default=1_000_000, help="events per Parquet row group")
    ap.add_argument("--stages", default=",".join(STAGES), help="stages to run (ingest is always run)")
    ap.add_argument("--timeout", type=float, default=3 * 3600, help="seconds per stage (default 3 h)")
    ap.add_argument("--stage-timeout", action="append", default=[], metavar="STAGE=SECONDS",
                    help="a stage's own timeout, e.g. train=3600 (repeatable)")  # fmt: skip
    ap.add_argument("--max-rss-mb", type=float, default=12 * 1024, help="kill a stage above this RSS")
    ap.add_argument("--keep", action="store_true", help="keep each size's project in benchmarks/work/scale/")
    ap.add_argument("--add-to", type=Path, metavar="JSON",
                    help="start from the sizes of an earlier results file of the same config (a long size run "
                    "alone, e.g. 100M, joins the curve); its sizes measured again are replaced")  # fmt: skip
    ap.add_argument("--profile", action="store_true",
                    help="run each stage under cProfile (TAG.prof in the kept project; inflates Python-heavy steps)")  # fmt: skip
    args = ap.parse_args(argv)
    try:
        sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
        timeouts = dict.fromkeys(STAGES, args.timeout)
        for item in args.stage_timeout:
            name, _, secs = item.partition("=")
            if name not in STAGES:
                raise BenchError(f"--stage-timeout: unknown stage {name!r} (stages: {', '.join(STAGES)})")
            timeouts[name] = float(secs)
        wanted = {"ingest", *(s.strip() for s in args.stages.split(","))}
        if unknown := wanted - set(STAGES):
            raise BenchError(f"--stages: unknown {sorted(unknown)} (stages: {', '.join(STAGES)})")
    except Exception as exc:  # a bad argument is a wrong run
        log(f"benchmark failed: {exc}")
        return 2
    busy = cpu_busy()
    if busy is not None and busy > 0.25:
        log(f"note: the CPUs were {busy:.0%} busy just before the start: timings are noisy")
    result: dict[str, Any] = {
        "config": str(args.config.relative_to(ROOT) if args.config.is_relative_to(ROOT) else args.config),
        "seed": args.seed, "profiled": args.profile, "max_rss_mb": args.max_rss_mb, "timeouts_s": timeouts, "sizes": {},
        "peak_method": "ru_maxrss of each child (os.wait4 on its pid), or the /proc VmRSS sampled every 0.5 s "
        "when higher (a killed child)", "commit": git_commit(), "machine": machine(),
        "cpu_busy_at_start": None if busy is None else round(busy, 2),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }  # fmt: skip
    if args.add_to:
        earlier = json.loads(args.add_to.read_text())
        if earlier.get("config") != result["config"]:
            log(f"benchmark failed: {args.add_to} measured {earlier.get('config')}, not {result['config']}")
            return 2
        result["sizes"] = {k: v for k, v in earlier["sizes"].items() if int(k) not in sizes}
        result["added_to"] = {"file": str(args.add_to), "commit": earlier.get("commit"), "date": earlier.get("date"),
                              "cpu_busy_at_start": earlier.get("cpu_busy_at_start")}  # fmt: skip
    prof = ["-m", "cProfile", "-o", "{tag}.prof"] if args.profile else []
    cmd = [sys.executable, *prof, "-m", "recctl", "--json"]
    try:
        for n in sizes:
            log(f"{n:,} events:")
            data, gen = generate(n, args.seed, args.chunk)
            log(
                f"  generate {gen['wall_s']:.1f} s, peak {gen['peak_mb']:,.0f} MB{' (reused)' if gen['reused'] else ''}"
            )
            proj = WORK / str(n)
            shutil.rmtree(proj, ignore_errors=True)
            proj.mkdir(parents=True)
            cfg = proj / "scale.toml"
            cfg.write_text(f'# written by benchmarks/scale.py from {args.config.name}\nruns_dir = "{proj / "runs"}"\n\n'
                           + args.config.read_text())  # fmt: skip
            wh = ["--config", str(cfg), "--warehouse", str(proj / "recctl.duckdb")]
            rec: dict[str, Any] = {"events": n, "generate": gen, "stages": {}}
            result["sizes"][str(n)] = rec
            argvs = {"features": ["features"], "train": ["train"], "evaluate": ["evaluate"],
                     "recommend": ["recommend", "--all"]}  # fmt: skip
            for name in STAGES:
                if name not in wanted:
                    rec["stages"][name] = asdict(Stage("not-run", stderr_tail="left out by --stages"))
                    continue
                need = NEEDS.get(name)
                if need and rec["stages"].get(need, {}).get("status") != "ok":
                    st = Stage("skipped", stderr_tail=f"needs {need}, which did not succeed")
                elif name == "ingest":
                    st = ingest([*cmd, *wh], proj, data, n, timeouts[name], args.max_rss_mb)
                else:
                    st, stdout = run([*cmd, *wh, *argvs[name]], proj, timeouts[name], args.max_rss_mb, name)
                    if st.status == "ok":
                        st.detail = stage_detail(name, last_json(stdout))
                rec["stages"][name] = asdict(st)
                log(f"  {name:9} {st.status:13} {st.wall_s:9.1f} s wall {st.cpu_s:9.1f} s CPU "
                    f"peak {st.peak_mb:8,.0f} MB")  # fmt: skip
                summarize(result)  # progress of a long run; --out is written at the end
                PARTIAL.write_text(json.dumps(result, indent=1, default=str) + "\n")
            if not args.keep:
                shutil.rmtree(proj, ignore_errors=True)
    except BenchError as exc:
        log(f"benchmark failed: {exc}")
        return 2
    summarize(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    for name, g in result["growth"].items():
        log(f"  {name:9} exponent {g['exponent']} over {g['points']} sizes (peak {g['peak_exponent']})")
    log(f"targets: {result['targets']['checks']} → {'met' if result['met'] else 'MISSED'} ({args.out})")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
