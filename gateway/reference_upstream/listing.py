"""ListOperations request fields: the `done` filter, page size bounds and opaque page tokens."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from dataclasses import dataclass

from gateway.reference_upstream.errors import InvalidArgument

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000

_DONE_FILTER = re.compile(r"\s*done\s*=\s*(true|false)\s*", re.IGNORECASE | re.ASCII)


@dataclass(frozen=True, slots=True)
class ListQuery:
    """One page request: operations directly under `parent`, after `after`, at most `limit`."""

    parent: str
    done: bool | None
    after: str | None
    limit: int


def parse_filter(text: str) -> bool | None:
    """`done=true` -> True, `done=false` -> False, empty -> None (every operation)."""
    if not text.strip():
        return None
    match = _DONE_FILTER.fullmatch(text)
    if match is None:
        raise InvalidArgument(
            f"Unsupported filter '{text}': only 'done=true' and 'done=false' are supported."
        )
    return match.group(1).lower() == "true"


def page_limit(page_size: int) -> int:
    if page_size < 0:
        raise InvalidArgument(f"page_size must not be negative, got {page_size}.")
    return min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _fingerprint(parent: str, done: bool | None) -> str:
    # Tied to the parsed filter, so "done = TRUE" and "done=true" share tokens.
    return hashlib.sha256(f"{parent}\0{done}".encode()).hexdigest()[:16]


def encode_page_token(parent: str, done: bool | None, last_name: str) -> str:
    payload = json.dumps({"after": last_name, "fp": _fingerprint(parent, done)})
    return base64.urlsafe_b64encode(payload.encode()).decode("ascii")


def decode_page_token(token: str, parent: str, done: bool | None) -> str | None:
    """The name to resume after, or None for the first page; refuses foreign or garbled tokens."""
    if not token:
        return None
    try:
        payload = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
        after, fingerprint = payload["after"], payload["fp"]
    except (ValueError, KeyError, TypeError) as exc:  # binascii, JSON and UTF-8 errors included
        raise InvalidArgument("Invalid page token.") from exc
    if not isinstance(after, str) or fingerprint != _fingerprint(parent, done):
        raise InvalidArgument("Invalid page token.")
    return after


def list_query(parent: str, filter_text: str, page_size: int, page_token: str) -> ListQuery:
    done = parse_filter(filter_text)
    return ListQuery(
        parent=parent,
        done=done,
        after=decode_page_token(page_token, parent, done),
        limit=page_limit(page_size),
    )
