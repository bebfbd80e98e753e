"""JSON-lines logs (``--log-format json``): one JSON object per record, per line.

Each object has ``ts`` (ISO 8601, UTC, ms), ``level``, ``logger`` and ``message``, then the
fields a call passes with ``extra=`` (the executor's ``order_id`` and ``tx_hash``), and
``exception`` (the traceback) when one is logged. A line never holds a newline: JSON
escapes it.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
"""The attributes every ``LogRecord`` has: anything else came with ``extra=``."""


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON: ``ts``, ``level``, ``logger``, ``message``, extras."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)
