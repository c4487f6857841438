"""RFC 7662 token introspection: the authorisation server vouches for its opaque access tokens;
a circuit in front of the endpoint fails calls fast while it is down."""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus, urlsplit, urlunsplit

from gateway.authn.http import FetchError, fetch_json
from gateway.authn.token_cache import CachedTokenCheck, Rejection
from gateway.backoff import INITIAL_S, Backoff
from gateway.errors import Unavailable, verification_unavailable

log = logging.getLogger("opsgate.authn")

# Failures in a row that open the circuit: one failed request among many (a timeout, a restart)
# costs only its own call, as it always did; a real outage opens the circuit within moments.
# An answer with Retry-After opens it at once: the endpoint asked for the pause.
FAILURES_TO_OPEN = 3
# Shorter than the key endpoints' cap: while the circuit is open every new token is refused,
# so after the endpoint is back its callers wait for at most this long.
RETRY_MAX_S = 30.0
# Requests to one endpoint at once; more wait their turn and ask the circuit again when they
# get it, so a flood of new tokens arriving together costs a few requests, not one each, when
# the endpoint is down. (Fetches run on the default executor's few threads anyway.)
MAX_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class IntrospectionSettings:
    endpoint: str
    client_id: str
    client_secret: str = field(repr=False)  # kept out of any printout of the settings
    cache_ttl_s: float = 300
    cache_size: int = 10000
    timeout_s: float = 5.0


def basic_authorization(client_id: str, client_secret: str) -> str:
    """HTTP Basic client authentication as RFC 6749 2.3.1 has it."""
    # Each part is form-urlencoded first, so a ':' in the client id cannot shift the split.
    pair = f"{quote_plus(client_id)}:{quote_plus(client_secret)}"
    return "Basic " + base64.b64encode(pair.encode()).decode("ascii")


class EndpointCircuit:
    """Whether to ask a per-call endpoint at all: closed (ask), or open (refuse at once).

    FAILURES_TO_OPEN failures in a row (or one answer with Retry-After) open it; while open,
    calls get verification_unavailable without a request, and when the backoff is over one
    call at a time is let through as the probe. The probe's success closes the circuit; its
    failure waits a longer backoff. Fail closed throughout: an open circuit refuses, never
    admits. Not thread-safe; used on one event loop.
    """

    def __init__(
        self,
        name: str,
        *,
        backoff: Backoff | None = None,
        failures_to_open: int = FAILURES_TO_OPEN,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.failures = 0  # in a row
        self._backoff = backoff or Backoff(INITIAL_S, RETRY_MAX_S)
        self._failures_to_open = failures_to_open
        self._clock = clock
        self._open = False
        self._opened_at = 0.0
        self._rounds = 0  # failed probes since it opened, plus one: the backoff's count
        self._next_probe = 0.0
        self._probing = False

    @property
    def open(self) -> bool:
        return self._open

    def check(self) -> None:
        """Raise verification_unavailable (UNAVAILABLE) if no request may go out now."""
        if not self._open:
            return
        now = self._clock()
        if self._probing or now < self._next_probe:
            wait = max(self._next_probe - now, 0.0)
            raise verification_unavailable(
                f"{self.name}: failed {self.failures} times in a row; not asked for another "
                f"{wait:.1f}s" + (" (a retry is in flight)" if self._probing else "")
            )

    def admit(self) -> bool:
        """Let a request go out, or raise as `check` does. True: it is the open circuit's
        probe; False: the circuit is closed."""
        self.check()
        if not self._open:
            return False
        self._probing = True
        return True

    def failed(self, probe: bool, reason: str, retry_after: float | None = None) -> None:
        """A request (the probe, if `probe`) got no usable answer."""
        if probe:
            self._probing = False
        elif self._open:
            return  # it went out before the circuit opened: that failure is counted already
        self.failures += 1
        now = self._clock()
        if not self._open:
            if self.failures < self._failures_to_open and retry_after is None:
                return
            self._open, self._opened_at, self._rounds = True, now, 0
            log.warning(
                "%s unavailable: %s; failing its calls fast, retrying with backoff",
                self.name,
                reason,
            )
        self._rounds += 1
        delay = self._backoff.delay(self._rounds, retry_after)
        self._next_probe = now + delay
        log.debug("%s: failure %d: %s; next try in %.1fs", self.name, self.failures, reason, delay)

    def succeeded(self, probe: bool) -> None:
        """A request got a usable answer: the endpoint works."""
        if probe:
            self._probing = False
        if self._open:
            log.info(
                "%s answering again after %d failures / %.0f s",
                self.name,
                self.failures,
                self._clock() - self._opened_at,
            )
            self._open = False
        self.failures = 0

    def abandoned(self, probe: bool) -> None:
        """A request ended without an answer either way (cancelled): let another probe go."""
        if probe:
            self._probing = False


class Introspector:
    """Asks an RFC 7662 endpoint whether an opaque access token is active, and caches the answer.

    Only cache misses ask the endpoint, through an EndpointCircuit: while the endpoint is down,
    a flood of new tokens costs one request per backoff step, not one each.
    """

    def __init__(
        self,
        settings: IntrospectionSettings,
        clock: Callable[[], float] = time.time,
        circuit: EndpointCircuit | None = None,
    ) -> None:
        self._settings = settings
        self._authorization = basic_authorization(settings.client_id, settings.client_secret)
        self.circuit = circuit or EndpointCircuit(f"introspection at {_where(settings.endpoint)}")
        self._slots: asyncio.Semaphore | None = None
        self._check = CachedTokenCheck(
            self._lookup,
            source="introspection",
            cache_size=settings.cache_size,
            cache_ttl_s=settings.cache_ttl_s,
            clock=clock,
        )

    async def introspect(self, token: str) -> Mapping[str, Any]:
        """The active token's claims (the introspection answer), read-only.

        Raises token_invalid (inactive, unusable exp), token_expired, or verification_unavailable
        when the endpoint could not give a usable answer.
        """
        return await self._check.verify(token)

    async def _lookup(self, token: str) -> Mapping[str, Any] | Rejection:
        circuit = self.circuit
        circuit.check()  # fail fast while the endpoint is down, without waiting for a slot
        if self._slots is None:
            self._slots = asyncio.Semaphore(MAX_IN_FLIGHT)
        async with self._slots:
            return await self._ask(circuit, token)

    async def _ask(self, circuit: EndpointCircuit, token: str) -> Mapping[str, Any] | Rejection:
        probe = circuit.admit()  # again: the circuit may have opened while this waited
        try:
            answer = await fetch_json(
                self._settings.endpoint,
                timeout=self._settings.timeout_s,
                # In the body, never the URL: URLs end up in logs.
                form={"token": token, "token_type_hint": "access_token"},
                headers={"Authorization": self._authorization},
            )
            if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
                raise verification_unavailable("introspection: the answer has no boolean `active`")
        except FetchError as exc:
            # RFC 7662 answers an invalid token with 200 {"active": false}; any other status
            # means we could not find out, so fail closed without blaming the token.
            circuit.failed(probe, str(exc), exc.retry_after)
            raise verification_unavailable(f"introspection: {exc}") from exc
        except Unavailable as exc:
            circuit.failed(probe, exc.log_detail)
            raise
        except BaseException:
            circuit.abandoned(probe)
            raise
        circuit.succeeded(probe)
        if answer["active"] is not True:
            return Rejection("introspection: token inactive")
        return answer


def _where(url: str) -> str:
    """The endpoint as logs name it: without its query string or any user:password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"[{host}]" if ":" in host else host
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
