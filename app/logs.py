"""One log format for the whole process: ours, uvicorn's and every library's lines alike.

``STOPLIST_LOG_FORMAT=text`` (the default) writes ``<time> <LEVEL> <logger> <message>``;
``json`` writes one JSON object a line (``time``, ``level``, ``logger``, ``message``, and ``exc``
with the traceback when there is one), so a multi-line traceback is still one line. uvicorn is
started without a logging configuration of its own (:data:`UVICORN_LOG_CONFIG`) and its loggers
propagate to the root handler installed here.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Final, Literal

LogFormat = Literal["text", "json"]

TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s %(message)s"

# uvicorn.run(log_config=None) configures no handler; its loggers then propagate to ours.
UVICORN_LOG_CONFIG: Final = None
_UVICORN_LOGGERS: Final = ("uvicorn", "uvicorn.error", "uvicorn.access", "uvicorn.asgi")


class JsonFormatter(logging.Formatter):
    """A record as one JSON object on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.stack_info:
            line["exc"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False)


def formatter(fmt: LogFormat) -> logging.Formatter:
    return JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT)


def configure_logging(level: int | str, fmt: LogFormat) -> None:
    """Send every logger's records to one standard-error handler in ``fmt``, at ``level``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    for name in _UVICORN_LOGGERS:
        logger = logging.getLogger(name)
        for old in list(logger.handlers):
            logger.removeHandler(old)
        logger.propagate = True
