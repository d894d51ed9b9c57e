"""What `recctl serve` calls: the app on uvicorn, in this process or in ``workers`` processes.

Worker processes are started by uvicorn and build the app themselves (``factory``): they read the
resolved config from the JSON file named by ``RECCTL_SERVE_CONFIG_JSON`` (written with mode 0600, since it
holds the API key), so the command line's and the environment's settings reach every worker alike. Each
worker holds its own snapshot connection over the same snapshot folder (taken once, by the first).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

    from recctl.config import RecctlConfig

ENV = "RECCTL_SERVE_CONFIG_JSON"


def build(cfg: RecctlConfig) -> FastAPI:
    from recctl.service.app import create_app
    from recctl.service.snapshot import Holder

    return create_app(cfg, Holder(cfg))


def factory() -> FastAPI:
    """uvicorn's entry for worker processes."""
    from recctl.config import RecctlConfig

    return build(RecctlConfig.model_validate(json.loads(Path(os.environ[ENV]).read_text())))


def check_installed() -> None:
    from recctl.errors import ConfigError

    try:
        import fastapi  # noqa: F401
        import prometheus_client  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise ConfigError(f"recctl serve needs the serve extra ({exc.name} is not installed)",
                          hint="pip install 'recctl[serve]'") from exc  # fmt: skip


def serve(cfg: RecctlConfig, *, verbose: bool = False) -> dict[str, Any]:
    """Run until interrupted (SIGINT / SIGTERM end it cleanly); returns what it served."""
    import uvicorn

    s = cfg.service
    log = {"log_level": "info" if verbose else "warning", "access_log": verbose}
    if s.workers == 1:
        uvicorn.run(build(cfg), host=s.host, port=s.port, **log)  # type: ignore[arg-type]
    else:
        fd, name = tempfile.mkstemp(prefix="recctl-serve-", suffix=".json")
        try:
            with os.fdopen(fd, "w") as f:  # mkstemp: mode 0600
                json.dump(cfg.model_dump(mode="json"), f)
            os.environ[ENV] = name
            uvicorn.run("recctl.service.run:factory", factory=True, host=s.host, port=s.port,
                        workers=s.workers, **log)  # type: ignore[arg-type]  # fmt: skip
        finally:
            os.environ.pop(ENV, None)
            Path(name).unlink(missing_ok=True)
    return {"host": s.host, "port": s.port, "workers": s.workers}
