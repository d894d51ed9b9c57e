"""``python -m recctl.sample OUT_DIR [--seed N]``: write the synthetic shop export to OUT_DIR."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from recctl.sample.generator import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recctl.sample", description=__doc__)
    parser.add_argument("out_dir", type=Path, help="directory to write the files into (created if missing)")
    parser.add_argument("--seed", type=int, default=42, help="random seed (default 42, the committed data)")
    parser.add_argument("--users", type=int, default=2000, help="number of visitors (default 2000)")
    parser.add_argument(
        "--items",
        type=int,
        default=1500,
        help="number of fashion items (default 1500; a care range of 2 %% more is added)",
    )
    parser.add_argument(
        "--days", type=int, default=90, help="length of the event window in days (default 90)"
    )
    args = parser.parse_args(argv)
    summary = generate(args.out_dir, seed=args.seed, n_users=args.users, n_items=args.items, days=args.days)
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
