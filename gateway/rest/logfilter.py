"""Keeps aiohttp's own error lines about malformed requests free of header values (tokens)."""

from __future__ import annotations

import logging

AIOHTTP_SERVER_LOGGER = "aiohttp.server"


class MalformedRequestFilter(logging.Filter):
    """aiohttp logs a request it refuses (a bad header line, one too long) with the offending
    line quoted, Authorization included. Such a record is rewritten to say what happened
    without any of the request, at WARNING: the client got its 400 and nothing broke."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info is None or record.levelno < logging.ERROR:
            return True
        error = record.exc_info[1]
        record.msg = "refused a malformed HTTP request on the REST door (%s)"
        record.args = (type(error).__name__,)
        record.exc_info = None
        record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


def install_request_error_filter() -> None:
    logger = logging.getLogger(AIOHTTP_SERVER_LOGGER)
    if not any(isinstance(f, MalformedRequestFilter) for f in logger.filters):
        logger.addFilter(MalformedRequestFilter())
