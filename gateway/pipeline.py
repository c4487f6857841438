"""Builds the checks every call goes through from Settings: for the proxy and for library mode."""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

from prometheus_client import CollectorRegistry

from gateway.audit.recorder import AuditRecorder, open_writer
from gateway.authn.certificates import CertificateIdentities
from gateway.authn.factory import AuthnRuntime, build_authn
from gateway.authorizer import Authorizer, PolicyHolder
from gateway.config import RateLimitSettings, Settings
from gateway.interceptors.chain import build_chain
from gateway.interceptors.stage import Stage
from gateway.observability.metrics import CallMetrics, PipelineCollector
from gateway.outcome import AccessLogSink, FanOutSink, OutcomeSink
from gateway.policy.loader import load_policy
from gateway.policy_reload import PolicyReloader
from gateway.profile import ServiceProfile, load_profile
from gateway.ratelimit import LimitRule, RateLimiter
from gateway.runtime import collector_paused


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The interceptor chain and the parts of it that operators and tests look at."""

    chain: list[Stage]
    authn: AuthnRuntime
    policies: PolicyHolder
    profile: ServiceProfile
    reloaders: tuple[PolicyReloader, ...]  # enforced policy first, then any dry-run candidate
    audit: AuditRecorder
    authorizer: Authorizer
    registry: CollectorRegistry  # this gateway's metrics (one registry per gateway)

    def in_flight(self) -> int:
        """Calls inside the chain right now (the outermost stage counts them)."""
        return sum(getattr(stage, "in_flight", 0) for stage in self.chain)


def build_pipeline(settings: Settings, sink: OutcomeSink | None = None) -> Pipeline:
    """Load profile and policy (a bad file stops start-up here) and assemble the chain.

    Every outcome goes to the audit trail (and the debug access log); `sink`, if given, gets
    them as well (the demo and tests read outcomes from it).
    """
    authz = settings.authorization
    profile = load_profile(authz.profile, authz.profile_file)
    # The collector is paused around every load, at start-up and on reload (ContextDecorator).
    load = collector_paused()(partial(load_policy, known_permissions=profile.permissions))
    policies = PolicyHolder(load(authz.policy_file))
    reloaders = [PolicyReloader(policies, authz.policy_file, load, authz.reload_interval_s)]
    candidate = None
    if authz.dry_run_policy_file is not None:
        candidate = PolicyHolder(load(authz.dry_run_policy_file))
        reloaders.append(
            PolicyReloader(candidate, authz.dry_run_policy_file, load, authz.reload_interval_s)
        )
    authn = build_authn(settings.authentication)
    recorder = AuditRecorder(
        open_writer(settings.audit),
        service=profile.service,
        project=settings.audit.project,
        policy_etag=lambda: policies.current.etag,
    )
    registry = CollectorRegistry()
    sinks: list[OutcomeSink] = [recorder, CallMetrics(registry), AccessLogSink()]
    authorizer = Authorizer(policies, authz.decision_cache_size, candidate)
    chain = build_chain(
        authn.authenticator,
        authorizer,
        profile,
        RateLimiter(tuple(_limit_rule(limit) for limit in settings.rate_limits)),
        sink=FanOutSink(*sinks, *([sink] if sink is not None else [])),
        admit=lambda: recorder.accepting,
        allow_anonymous=authz.allow_anonymous,
        certificates=_certificates(settings),
    )
    pipeline = Pipeline(
        chain, authn, policies, profile, tuple(reloaders), recorder, authorizer, registry
    )
    registry.register(PipelineCollector(pipeline))
    return pipeline


def _limit_rule(limit: RateLimitSettings) -> LimitRule:
    return LimitRule(
        limit.name, limit.rate_per_s, limit.burst, limit.per_method, frozenset(limit.methods)
    )


def _certificates(settings: Settings) -> CertificateIdentities | None:
    config = settings.authentication.client_certificates
    return CertificateIdentities(config) if config is not None else None
