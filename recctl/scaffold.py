"""``recctl init``: a project folder with a commented config, the shipped mappings and a warehouse."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path
from typing import Any

CONFIGS = ("recctl.toml", "grocery.toml", "fashion.toml", "segments.toml")


def templates_dir() -> Path:
    return Path(str(resources.files("recctl") / "templates"))


def scaffold(root: Path) -> dict[str, Any]:
    """Write ``configs/recctl.toml`` (the commented reference), the shop-type examples
    ``configs/grocery.toml`` and ``configs/fashion.toml``, ``configs/segments.toml`` and
    ``configs/mappings/*.toml`` under ``root``; never overwrite."""
    src = templates_dir()
    written: list[str] = []
    kept: list[str] = []
    targets = [(src / name, root / "configs" / name) for name in CONFIGS]
    targets += [
        (p, root / "configs" / "mappings" / p.name) for p in sorted((src / "mappings").glob("*.toml"))
    ]
    for s, d in targets:
        if d.exists():
            kept.append(str(d))
            continue
        d.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(s, d)
        written.append(str(d))
    return {"written": written, "kept": kept}
