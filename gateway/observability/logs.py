"""Operational logs on stderr, JSON lines by default; the audit trail is a separate stream."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

from gateway.call import current_call


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the request id of the call being handled, if any.

    Messages never carry tokens: authentication failures log our own words (log_detail).
    """

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = current_call.get(None)
        if call is not None:
            entry["request_id"] = call.request_id
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, log_format: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
