"""The evaluation report in a real headless browser: the OS Chromium (Debian's /usr/bin/chromium), never a
downloaded one. Used by tests/test_report.py and by `make report-shot`:

    python -m tests.browser REPORT.html SHOT.png     # screenshot, then check that it is not blank
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WINDOW = (1280, 2400)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


def chromium() -> str | None:
    """The system Chromium, or None when it is not installed."""
    return shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)


def _run(html: Path, *extra: str, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
    exe = chromium()
    if exe is None:
        raise FileNotFoundError("chromium is not installed (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="recctl-chromium-") as profile:  # a fresh profile, removed after
        return subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={profile}", *extra, html.resolve().as_uri()],
            capture_output=True, text=True, timeout=timeout, check=True,
        )  # fmt: skip


def dump_dom(html: Path) -> str:
    """The page's DOM as serialized after loading (and after any scripts ran)."""
    return _run(html, "--dump-dom").stdout


def screenshot(html: Path, png: Path, window: tuple[int, int] = WINDOW) -> Path:
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)
    _run(html, f"--screenshot={png.resolve()}", f"--window-size={window[0]},{window[1]}")
    return png


def ink(png: Path) -> tuple[tuple[int, int], float, int]:
    """(size, share of pixels that are not near-white, number of distinct colours) of a PNG (pillow)."""
    from PIL import Image

    with Image.open(png) as im:
        rgb = im.convert("RGB")
        small = rgb.resize((rgb.width // 4, rgb.height // 4))
        grey = small.convert("L")
        dark = sum(grey.histogram()[:235])
        colours = len(small.getcolors(maxcolors=1 << 20) or [])
        return rgb.size, dark / (grey.width * grey.height), colours


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m tests.browser REPORT.html SHOT.png", file=sys.stderr)
        return 2
    html, png = Path(argv[0]), Path(argv[1])
    screenshot(html, png)
    size, share, colours = ink(png)
    print(
        f"{png}: {size[0]}×{size[1]} px, {png.stat().st_size / 1024:.0f} KB, {share:.0%} ink, {colours} colours"
    )
    if share < 0.02 or colours < 50:
        print(f"{png} looks blank", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
