"""Logs: one JSON object per line, ours and uvicorn's alike, so a log shipper parses every line."""

from __future__ import annotations

import json
import logging
from typing import Any

import orjson

_FIELDS = ("request_id", "method", "path", "status", "ms", "error_type")


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line, with the request id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        for key in _FIELDS:
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        try:  # orjson: the access line is written once per request
            return orjson.dumps(entry, default=str).decode()
        except TypeError:  # a lone surrogate, which orjson refuses and json escapes
            return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    """Our logger and uvicorn's, each with one JSON handler (uvicorn's access log stays off: the
    service writes its own access line with the request id)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLogFormatter())
    for name in ("nabla", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True


def uvicorn_log_config(level: str) -> dict[str, Any]:
    """A logging config for uvicorn.run, so even its start-up lines are JSON."""
    formatter = {"()": "service.logs.JsonLogFormatter"}
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["json"], "level": level.upper(), "propagate": False}
               for name in ("nabla", "uvicorn", "uvicorn.error")}
    loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
    return {"version": 1, "disable_existing_loggers": False, "formatters": {"json": formatter},
            "handlers": {"json": handler}, "loggers": loggers}
