"""Names a person types (generators, models, protocols, variants, strategies, tables, formats, segments):
an unknown one is a usage error (exit 2) that lists the valid names and the closest match (difflib), so
a typo fails loudly instead of doing something else quietly."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from recctl.errors import ConfigError


def closest(name: str, valid: Sequence[str]) -> str | None:
    """The valid name nearest to ``name`` (``leave_one_out`` → ``leave-one-out``), or None."""
    folded = {v.lower().replace("_", "-"): v for v in valid}
    key = name.strip().lower().replace("_", "-")
    if key in folded:
        return folded[key]
    starting = [v for f, v in folded.items() if f.startswith(key)] if key else []
    if len(starting) == 1:  # "new" → "new-items"
        return starting[0]
    match = difflib.get_close_matches(key, list(folded), n=1, cutoff=0.6)
    return folded[match[0]] if match else None


def unknown(what: str, bad: Sequence[str], valid: Sequence[str], where: str) -> ConfigError:
    """The error for ``bad`` names: each with its closest valid one, then every valid name."""
    shown = []
    for b in bad:
        near = closest(b, valid)
        shown.append(f"{b!r}" + (f" (did you mean {near!r}?)" if near else ""))
    return ConfigError(
        f"{where}: unknown {what} {', '.join(shown)}; valid: {', '.join(valid) or 'none are configured'}"
    )


def one_of(value: str, valid: Sequence[str], *, what: str, where: str) -> str:
    """``value`` if it is one of ``valid``, else a ConfigError naming the closest and every valid one."""
    if value not in valid:
        raise unknown(what, [value], valid, where)
    return value


def name_list(text: str, valid: Sequence[str], *, what: str, where: str) -> list[str]:
    """A comma-separated list of names (``trending,next-item``), each checked against ``valid``; empty
    entries are ignored, repeats kept once, an empty list is an error."""
    names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    if not names:
        raise ConfigError(f"{where}: no {what} given; valid: {', '.join(valid) or 'none are configured'}")
    bad = [n for n in names if n not in valid]
    if bad:
        raise unknown(what, bad, valid, where)
    return names
