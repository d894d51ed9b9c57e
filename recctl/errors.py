"""The exception hierarchy and the exit codes it maps to (documented in README "Exit codes").

Library code raises these; only ``recctl.cli`` turns them into exit codes, in one place, and only
``recctl.service`` into HTTP statuses (``http_status``, documented in README "HTTP service").
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    INTERNAL = 1
    USAGE = 2  # bad command line or configuration
    GATE_FAILED = 3  # evaluation gate failed
    DATA = 65  # bad input data (EX_DATAERR)
    NO_INPUT = 66  # input file missing (EX_NOINPUT)
    LOCKED = 75  # another job holds the warehouse (EX_TEMPFAIL): retry later
    INTERRUPTED = 130  # SIGINT (Ctrl-C): unfinished work rolled back
    TERMINATED = 143  # SIGTERM: unfinished work rolled back


class RecctlError(Exception):
    """Base of every error recctl reports to the user without a traceback."""

    exit_code: ExitCode = ExitCode.INTERNAL
    http_status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ConfigError(RecctlError):
    """Invalid configuration or mapping file, or invalid option values."""

    exit_code = ExitCode.USAGE
    http_status = 400


class DataError(RecctlError):
    """Input data that cannot be loaded as a whole (a missing required column, unreadable file)."""

    exit_code = ExitCode.DATA
    http_status = 422


class UnknownIdError(DataError):
    """An id that names nothing the warehouse knows (an item neither in the catalog nor in any event)."""

    http_status = 404


class InputMissingError(RecctlError):
    """A named input file or folder does not exist or matches nothing."""

    exit_code = ExitCode.NO_INPUT
    http_status = 404


class LockHeldError(RecctlError):
    """Another recctl process is writing to the warehouse."""

    exit_code = ExitCode.LOCKED
    http_status = 503


class WarehouseError(RecctlError):
    """The warehouse file is missing, from a newer recctl, or unusable."""

    exit_code = ExitCode.USAGE
    http_status = 503


class NotTrainedError(RecctlError):
    """A command needs a promoted model run and there is none."""

    exit_code = ExitCode.USAGE
    http_status = 503


class GateFailedError(RecctlError):
    """An evaluation gate rejected a candidate run."""

    exit_code = ExitCode.GATE_FAILED
    http_status = 500


class AuthError(RecctlError):
    """An HTTP route that needs the service's API key was called without it, or with another."""

    exit_code = ExitCode.USAGE
    http_status = 401


class ForbiddenError(RecctlError):
    """An HTTP admin route while the service has no API key configured."""

    exit_code = ExitCode.USAGE
    http_status = 403


class TooLargeError(ConfigError):
    """An HTTP request body, batch or list over the service's limits."""

    http_status = 413
