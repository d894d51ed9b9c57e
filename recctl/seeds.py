"""Seeds derived from the one root seed: stable, independent per component, never global."""

from __future__ import annotations

import hashlib


def derive_seed(root: int, *names: str | int) -> int:
    """A 32-bit seed for the component named by ``names`` (e.g. ``derive_seed(42, "random", "fit")``)."""
    text = "\x1f".join([str(root), *map(str, names)])
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=4).digest(), "little")
