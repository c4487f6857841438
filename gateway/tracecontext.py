"""Trace ids from W3C `traceparent` (or Google's `x-cloud-trace-context`), for audit records."""

from __future__ import annotations

import re
from collections.abc import Iterable

# version-traceid-parentid-flags; all-zero ids are invalid (W3C Trace Context 3.2.2).
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
# The caller's trace headers, as trace_of reads them (relayed upstream unchanged either way).
TRACE_HEADERS = frozenset({"traceparent", "x-cloud-trace-context"})
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})(?:/([0-9]{1,20}))?(?:;o=[01])?")


def trace_of(metadata: Iterable[tuple[str, str | bytes]] | None) -> tuple[str | None, str | None]:
    """(trace id, span id) the caller sent, or (None, None). Headers are relayed unchanged."""
    cloud: tuple[str | None, str | None] = (None, None)
    for key, value in metadata or ():
        if not isinstance(value, str):
            continue
        if key == "traceparent":
            match = _TRACEPARENT.fullmatch(value.strip())
            if match and set(match.group(1)) != {"0"} and set(match.group(2)) != {"0"}:
                return match.group(1), match.group(2)
        elif key == "x-cloud-trace-context":
            match = _CLOUD_TRACE.fullmatch(value.strip())
            if match:
                span = int(match.group(2)) if match.group(2) else None
                valid_span = span is not None and 0 < span < 2**64
                cloud = (match.group(1).lower(), f"{span:016x}" if valid_span else None)
    return cloud
