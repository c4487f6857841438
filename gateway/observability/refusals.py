"""Why calls are refused, in the operator's log: counts per reason, at most one line per interval.

The audit trail has every refusal; this is the line an operator reads at the default level.
It names reasons, counts, and the commonest caller, permission and resource per reason (all in
the audit record too), with our own words for why: never a token or any part of one.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable

from gateway.errors import StatusCode
from gateway.outcome import CallOutcome

DEFAULT_INTERVAL_S = 60.0
MAX_REASONS = 6  # reasons shown on one line; the rest are counted as "N more"
MAX_EXAMPLES = 64  # distinct (caller, permission, resource, why) kept per reason and interval
MAX_REASON_KINDS = 64  # distinct reasons kept per interval; more are counted under OTHER
MAX_FIELD = 120  # characters of any one field shown (caller, permission, resource, why)

# Not refusals: the caller's own ending, or success.
_NOT_REFUSED = frozenset({StatusCode.OK, StatusCode.CANCELLED, StatusCode.DEADLINE_EXCEEDED})

# (who, permission, resource, why), each possibly empty.
Example = tuple[str, str, str, str]


def refusal_reason(outcome: CallOutcome) -> str | None:
    """The reason the gateway refused this call, or None if it did not refuse it.

    Refused: ended with an error the gateway gave before the call was let through. Not refused:
    successes, the caller's own cancellation or deadline, and anything after an allow (the
    upstream's or a library-mode servicer's answer, an unreachable upstream: the forwarder
    logs that itself).
    """
    if outcome.code in _NOT_REFUSED:
        return None
    call = outcome.call
    if call.upstream_s is not None:
        return None
    verdict = call.verdict
    if verdict is not None and verdict.decision.allowed:
        return None
    return outcome.reason or outcome.code.name


def _example(outcome: CallOutcome) -> Example:
    call = outcome.call
    if call.principal is not None:
        who = call.principal.member
    else:
        peer = call.peer
        who = f"caller at {peer}" if peer else ""
    access = call.access
    permission = access.permission if access is not None else ""
    resource = access.resource if access is not None else call.resource_name or ""
    return (who, permission, resource, outcome.detail)


def _shown(text: str) -> str:
    """`text` on one line, bounded: callers choose resource names and emails."""
    text = "".join(c if c.isprintable() else "?" for c in text[: MAX_FIELD + 1])
    return text if len(text) <= MAX_FIELD else text[: MAX_FIELD - 3] + "..."


class _Reason:
    __slots__ = ("count", "examples")

    def __init__(self) -> None:
        self.count = 0
        self.examples: Counter[Example] = Counter()


class RefusalSummary:
    """An OutcomeSink that logs, at INFO, how many calls were refused and why.

    At most one line per `interval_s`: the first refusal after a quiet interval is logged at
    once, later ones are summed up when the interval since that line ends (on the event loop
    the outcomes arrive on, or at the next refusal when there is none). Cheap for calls that
    are not refused (one comparison); bounded in memory whatever callers send.
    """

    def __init__(
        self,
        interval_s: float = DEFAULT_INTERVAL_S,
        logger: logging.Logger | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, not {interval_s}")
        self._interval_s = interval_s
        self._log = logger or logging.getLogger("opsgate.refusals")
        self._clock = clock
        self._lock = threading.Lock()
        self._reasons: dict[str, _Reason] = {}
        self._first = 0.0  # when the first refusal not yet logged came
        self._last_line = -math.inf
        self._timer: asyncio.TimerHandle | None = None

    def record(self, outcome: CallOutcome) -> None:
        if outcome.code in _NOT_REFUSED:
            return
        reason = refusal_reason(outcome)
        if reason is None:
            return
        line = None
        with self._lock:
            now = self._clock()
            if not self._reasons:
                self._first = now
            self._count(reason, _example(outcome))
            if self._timer is None:
                due = self._last_line + self._interval_s
                if now >= due:
                    line = self._take(now)
                else:
                    self._schedule(due - now)
        if line is not None:
            self._log.info("%s", line)

    def flush(self) -> None:
        """Log what has been counted and not yet logged, now (the timer's callback; shutdown)."""
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            line = self._take(self._clock()) if self._reasons else None
        if line is not None:
            self._log.info("%s", line)

    def _count(self, reason: str, example: Example) -> None:
        entry = self._reasons.get(reason)
        if entry is None:
            if len(self._reasons) >= MAX_REASON_KINDS:
                reason = "OTHER"
                example = ("", "", "", "")
            entry = self._reasons.setdefault(reason, _Reason())
        entry.count += 1
        examples = entry.examples
        if example in examples or len(examples) < MAX_EXAMPLES:
            examples[example] += 1

    def _schedule(self, delay: float) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on a loop: the next refusal after the interval logs the line
        self._timer = loop.call_later(delay, self.flush)

    def _take(self, now: float) -> str:
        """The summary line of everything counted; resets the counts."""
        reasons, self._reasons = self._reasons, {}
        self._last_line = now
        total = sum(entry.count for entry in reasons.values())
        span = max(math.ceil(now - self._first), 1)
        ranked = sorted(reasons.items(), key=lambda item: (-item[1].count, item[0]))
        parts = [_describe(reason, entry) for reason, entry in ranked[:MAX_REASONS]]
        if len(ranked) > MAX_REASONS:
            rest = sum(entry.count for _, entry in ranked[MAX_REASONS:])
            parts.append(f"{rest} for {len(ranked) - MAX_REASONS} more reasons")
        calls = "call" if total == 1 else "calls"
        return f"refused {total} {calls} in the last {span}s: " + ", ".join(parts)


def _describe(reason: str, entry: _Reason) -> str:
    if not entry.examples:
        return f"{entry.count} {reason}"
    (who, permission, resource, why), times = entry.examples.most_common(1)[0]
    about = ", ".join(_shown(part) for part in (who, permission) if part)
    if resource:
        about += f" on {_shown(resource)}"
    if why:
        about += f": {_shown(why)}" if about else _shown(why)
    if not about:
        return f"{entry.count} {reason}"
    top = "top" if times == entry.count else f"top {times}"
    return f"{entry.count} {reason} ({top}: {about})"
