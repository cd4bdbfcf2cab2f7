"""structlog set-up, done once in each `__main__`: JSON lines, or console rendering on a TTY."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, MutableMapping
from typing import Any

import structlog

Redact = Callable[[str], str]


def redacting(redact: Redact) -> structlog.typing.Processor:
    """A processor that passes every string value of a log event (and its rendered exception)
    through `redact`: nothing that holds a secret reaches the log, whoever logged it."""

    def processor(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key, value in event.items():
            if isinstance(value, str):
                event[key] = redact(value)
        return event

    return processor


def configure_logging(service: str, level: str | None = None, redact: Redact | None = None) -> None:
    level_name = (level or "info").upper()
    renderer: structlog.typing.Processor
    if sys.stderr.isatty():
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *([redacting(redact)] if redact is not None else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level_name]),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)


class bound:
    """`with bound(workflow_id=...)`: structlog's `bound_contextvars` without its copy of the whole
    context on each use (it runs per event in wf-status and wf-policy): the keys are set, then reset
    to whatever they were before."""

    __slots__ = ("kw", "tokens")

    def __init__(self, **kw: object) -> None:
        self.kw = kw

    def __enter__(self) -> None:
        self.tokens = structlog.contextvars.bind_contextvars(**self.kw)

    def __exit__(self, *exc: object) -> None:
        structlog.contextvars.reset_contextvars(**self.tokens)
