"""Small JSON-over-HTTP client for key and token endpoints; blocking I/O runs off the event loop."""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from datetime import UTC
from typing import Any

from gateway.errors import OpsgateError

USER_AGENT = "opsgate"
MAX_RESPONSE_BYTES = 1024 * 1024


class FetchError(OpsgateError):
    """An endpoint could not be reached or did not answer with usable JSON.

    For an HTTP error answer, `status` is its code and `body` its JSON (None if it had none):
    some endpoints (Google's tokeninfo) say "bad token" with a 400 and a JSON reason;
    `retry_after` is the seconds its Retry-After header asked us to wait, if it sent one.
    """

    # Not KEY_FETCH_FAILED: the same client reads token endpoints (introspection, tokeninfo).
    reason = "FETCH_FAILED"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        body: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.retry_after = retry_after


def _fetch_sync(
    url: str,
    timeout: float,
    form: Mapping[str, str] | None,
    headers: Mapping[str, str] | None,
) -> Any:
    data = urllib.parse.urlencode(form).encode() if form is not None else None
    request = urllib.request.Request(url, data=data, method="POST" if form is not None else "GET")
    request.add_header("User-Agent", USER_AGENT)
    request.add_header("Accept", "application/json")
    for key, value in (headers or {}).items():
        request.add_header(key, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read(MAX_RESPONSE_BYTES + 1)
    except urllib.error.HTTPError as exc:
        with exc:
            body = _json_or_none(exc.read(MAX_RESPONSE_BYTES))
            retry_after = retry_after_s(exc.headers.get("Retry-After") if exc.headers else None)
        raise FetchError(
            f"{_where(url)} answered HTTP {exc.code}",
            status=exc.code,
            body=body,
            retry_after=retry_after,
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"{_where(url)} could not be reached: {reason}") from exc
    if len(body) > MAX_RESPONSE_BYTES:
        raise FetchError(f"{_where(url)} answered more than {MAX_RESPONSE_BYTES} bytes")
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FetchError(f"{_where(url)} did not answer with JSON") from exc


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header (RFC 9110 10.2.3: seconds, or an HTTP date) asks to wait;
    None for no header or one that is neither."""
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000", RFC 5322's "no zone information": HTTP dates are UTC
        when = when.replace(tzinfo=UTC)
    seconds = when.timestamp() - (time.time() if now is None else now)
    return max(seconds, 0.0) if math.isfinite(seconds) else None


def _json_or_none(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None


def _where(url: str) -> str:
    """The URL without its query string, which may carry a token (tokeninfo?access_token=...)."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


async def fetch_json(
    url: str,
    *,
    timeout: float = 5.0,
    form: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Any:
    """GET (or POST `form` as x-www-form-urlencoded) and parse JSON, in a worker thread.

    Raises FetchError for transport failures, non-2xx answers and bodies that are not JSON;
    the message names the URL without its query string.
    """
    return await asyncio.to_thread(_fetch_sync, url, timeout, form, headers)
