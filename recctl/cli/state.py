"""What every command gets from the global options: the resolved config and the output channel."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from recctl import resources
from recctl.config import RecctlConfig, load_config
from recctl.console import Output


@dataclass
class State:
    warehouse: Path | None
    config_path: Path | None
    out: Output
    _config: RecctlConfig | None = field(default=None, repr=False)

    @property
    def config(self) -> RecctlConfig:
        if self._config is None:
            overrides = {"warehouse": {"path": str(self.warehouse)}} if self.warehouse else None
            self._config = load_config(self.config_path, overrides=overrides)
            resources.apply_process(self._config)
        return self._config
