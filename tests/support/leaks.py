"""Session-wide leak check: every log line the tests produced is searched for every token minted."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from gateway.testing.tokens import SigningKey


class _Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        if record.exc_info:
            text += logging.Formatter().formatException(record.exc_info)
        with self._guard:
            self.lines.append(text)


def secret_parts(token: str) -> list[str]:
    """The parts of a token that identify it: itself, and its payload and signature segments."""
    segments = token.split(".")
    return [token, *segments[1:]] if len(segments) == 3 else [token]


@contextmanager
def watching_for_token_leaks() -> Iterator[list[str]]:
    """Record every token SigningKey.sign mints and every log record; yield the leaks found."""
    minted: list[str] = []
    original = SigningKey.sign

    def recording_sign(self: SigningKey, claims: dict[str, Any], headers: Any = None) -> str:
        token = original(self, claims, headers)
        minted.append(token)
        return token

    collector = _Collector()
    root, ours = logging.getLogger(), logging.getLogger("opsgate")
    previous_level = ours.level
    root.addHandler(collector)
    ours.setLevel(logging.DEBUG)
    SigningKey.sign = recording_sign  # type: ignore[method-assign]
    leaks: list[str] = []
    try:
        yield leaks
    finally:
        SigningKey.sign = original  # type: ignore[method-assign]
        root.removeHandler(collector)
        ours.setLevel(previous_level)
        leaks.extend(leaked(minted, "\n".join(collector.lines)))


PROBE = 16  # every secret part is longer: its first PROBE characters find where it may be
_BASE64URL_RUN = re.compile(rf"[A-Za-z0-9_-]{{{PROBE},}}")


def leaked(tokens: list[str], text: str) -> list[str]:
    """The secret parts of `tokens` found in `text` (each cut to its first 16 characters).

    A session mints tens of thousands of tokens and logs megabytes: searching the text once per
    part does not finish. A part is base64url, so it can only stand inside a run of base64url
    characters; every PROBE-long window of those runs goes in a set, and only a part whose first
    window is in it is searched for in full.
    """
    windows = {
        run[i : i + PROBE]
        for run in _BASE64URL_RUN.findall(text)
        for i in range(len(run) - PROBE + 1)
    }
    found = []
    for token in tokens:
        for part in secret_parts(token):
            probe = part.split(".", 1)[0][:PROBE]
            if (len(probe) < PROBE or probe in windows) and part in text:
                found.append(part[:16] + "...")
    return found
