"""What every ``pycni`` command shares: how errors are reported and how logging is set up."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .errors import PycniError

F = TypeVar("F", bound=Callable[..., Any])


def reports_errors(func: F) -> F:
    """Turn a PycniError into ``pycni: error: …`` on stderr and the error's exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PycniError as exc:
            click.echo(f"pycni: error: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


log_level_option = click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    default="info",
    show_default=True,
)


def setup_logging(level: str, *, by_level: bool = False) -> None:
    """Log at ``level``, to stderr; the libraries' own debug output stays out of pycni's.

    ``by_level`` (``pycni serve``): records below WARNING go to stdout instead. Docker logs a
    managed plugin's stdout as ``level=info`` and its stderr as ``level=error`` (it has no
    finer way in), so pycni's INFO lines show as info there, not as errors."""
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if by_level:
        handlers[0].addFilter(lambda record: record.levelno >= logging.WARNING)
        handlers.append(logging.StreamHandler(sys.stdout))
        handlers[1].addFilter(lambda record: record.levelno < logging.WARNING)
    for handler in handlers:
        handler.setFormatter(fmt)
    logging.basicConfig(level=level.upper(), handlers=handlers)
    for noisy in ("pyroute2", "asyncio", "docker", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
