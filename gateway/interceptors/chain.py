"""Assembles the interceptor chain: the one place that decides which stages run, in what order."""

from __future__ import annotations

from collections.abc import Callable

from gateway.authn.authenticator import Authenticator
from gateway.authn.certificates import CertificateIdentities
from gateway.authorizer import Authorizer
from gateway.interceptors.audit import AuditStage
from gateway.interceptors.authn import AuthnStage
from gateway.interceptors.authz import AuthzStage
from gateway.interceptors.ratelimit import RateLimitStage
from gateway.interceptors.route import RouteStage
from gateway.interceptors.stage import Stage
from gateway.outcome import AccessLogSink, OutcomeSink
from gateway.profile import ServiceProfile
from gateway.ratelimit import RateLimiter
from gateway.routing import SERVICE_PREFIX

# First = outermost. grpc.aio runs interceptors in list order around the handler.
CHAIN_ORDER: tuple[str, ...] = ("audit", "authn", "ratelimit", "route", "authz")

HEALTH_PREFIX = "/grpc.health.v1.Health/"


def is_operations_method(method: str) -> bool:
    return method.startswith(SERVICE_PREFIX)


def is_exempt(method: str) -> bool:
    """Infrastructure calls (health checks) bypass the chain: no identity, no record."""
    return method.startswith(HEALTH_PREFIX)


def build_chain(
    authenticator: Authenticator,
    authorizer: Authorizer,
    profile: ServiceProfile,
    limiter: RateLimiter,
    *,
    sink: OutcomeSink | None = None,
    admit: Callable[[], bool] = lambda: True,
    allow_anonymous: bool = False,
    certificates: CertificateIdentities | None = None,
    applies: Callable[[str], bool] = is_operations_method,
) -> list[Stage]:
    """The stages in CHAIN_ORDER, ready for grpc.aio.server(interceptors=...)."""
    stages: dict[str, Stage] = {
        "audit": AuditStage(applies, is_exempt, sink or AccessLogSink(), admit),
        "authn": AuthnStage(
            applies, authenticator, allow_anonymous=allow_anonymous, certificates=certificates
        ),
        "ratelimit": RateLimitStage(applies, limiter),
        "route": RouteStage(applies, profile),
        "authz": AuthzStage(applies, authorizer),
    }
    return [stages[name] for name in CHAIN_ORDER]
