"""Log lines: one JSON object per line for a log pipeline, or plain text for a person at a terminal.

Events are logged with a short message (`connect`, `disconnect`, ...) and their fields as `extra`
(client, user, address, ...); both formats write the fixed fields first (time, level, logger,
message), then the event's. Nothing here can tell a secret from a name, so callers must never pass
a token, an API key, an Authorization header or a query string (which may carry `?token=`).
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

import orjson

FORMATS = ("auto", "json", "text")
# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD}


def _time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...fields}` on one line; tracebacks as a field."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": _time(record), "level": record.levelname.lower(), "logger": record.name}
        line["message"] = record.getMessage()
        line.update(_fields(record))
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`; values that could be misread are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        parts = [_time(record), record.levelname, f"{record.name}:", record.getMessage()]
        parts += [f"{key}={_text(value)}" for key, value in _fields(record).items()]
        text = " ".join(parts)
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _text(value: object) -> str:
    # Quoting keeps a client-chosen string (a close reason, a user name) from faking a field.
    if isinstance(value, str) and value and value.isprintable() and not any(c in value for c in ' "='):
        return value
    return json.dumps(value, default=str)


def configure(level: str = "info", fmt: str = "auto") -> None:
    """Send the `switchboard.*` loggers to stderr at `level`; "auto" is text on a terminal, else JSON.

    Safe to call again: the handler is replaced, never added twice.
    """
    if fmt not in FORMATS:
        raise ValueError(f"SWITCHBOARD_LOG_FORMAT={fmt!r} must be one of {', '.join(FORMATS)}")
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"SWITCHBOARD_LOG_LEVEL={level!r} must be debug, info, warning or error")
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    logger = logging.getLogger("switchboard")
    logger.handlers = [handler]
    logger.setLevel(numeric)
    # One line per event: a root handler (if anyone adds one) must not print it again.
    logger.propagate = False
