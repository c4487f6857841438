"""Builds from Settings the pipeline every door runs its calls through: stages, engines, sinks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from prometheus_client import CollectorRegistry

from gateway.audit.recorder import AuditRecorder, open_writer
from gateway.authn.certificates import CertificateIdentities
from gateway.authn.factory import AuthnRuntime, build_authn
from gateway.authorizer import Authorizer, PolicyHolder
from gateway.call import Call
from gateway.config import RateLimitSettings, Settings
from gateway.observability.metrics import (
    CallMetrics,
    PipelineCollector,
    register_runtime_collectors,
)
from gateway.observability.refusals import RefusalSummary
from gateway.outcome import AccessLogSink, FanOutSink, OutcomeSink
from gateway.policy.loader import load_policy
from gateway.policy_reload import PolicyReloader
from gateway.profile import ServiceProfile, load_profile
from gateway.ratelimit import LimitRule, RateLimiter
from gateway.runtime import collector_paused
from gateway.stages.audit import AuditStage
from gateway.stages.authn import AuthnStage
from gateway.stages.authz import AuthzStage
from gateway.stages.base import CheckStage
from gateway.stages.chain import CHAIN_ORDER, Runner, is_operations_method
from gateway.stages.ratelimit import RateLimitStage
from gateway.stages.route import RouteStage


@dataclass(frozen=True, slots=True)
class Pipeline:
    """The runner every door hands its calls to, and the parts operators and tests look at."""

    runner: Runner
    authn: AuthnRuntime
    policies: PolicyHolder
    profile: ServiceProfile
    reloaders: tuple[PolicyReloader, ...]  # enforced policy first, then any dry-run candidate
    audit: AuditRecorder
    authorizer: Authorizer
    registry: CollectorRegistry  # this gateway's metrics (one registry per gateway)
    outcomes: OutcomeSink  # where the audit stage hands every outcome (trail, metrics, log)
    admit: Callable[[], bool]  # False while the audit trail cannot take records
    more_runners: list[Runner] = field(default_factory=list)
    started: Callable[[Call], None] = lambda call: None  # counts each call in as it starts

    def in_flight(self) -> int:
        """Calls inside the chain right now (the outermost stage counts them)."""
        return self.runner.in_flight + sum(runner.in_flight for runner in self.more_runners)

    def runner_recording_to(self, sink: OutcomeSink) -> Runner:
        """A runner of the same stages whose audit stage hands its outcomes to `sink` (which
        must hand each to `outcomes`, at once or later): for a door that learns a call's
        ending after the pipeline is done with it (Envoy's)."""
        checks = [stage for stage in self.runner.stages[1:] if isinstance(stage, CheckStage)]
        runner = Runner(AuditStage(sink, self.admit, self.started), checks)
        self.more_runners.append(runner)
        return runner


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
    register_runtime_collectors(registry)
    metrics = CallMetrics(registry)
    sinks: list[OutcomeSink] = [recorder, metrics, AccessLogSink()]
    if settings.log_refusal_summary_interval_s > 0:
        # Every door's outcomes come through here: each door's refusals are summed up.
        sinks.append(RefusalSummary(settings.log_refusal_summary_interval_s))
    authorizer = Authorizer(policies, authz.decision_cache_size, candidate)
    applies = is_operations_method
    stages: dict[str, CheckStage] = {
        "authn": AuthnStage(
            applies,
            authn.authenticator,
            allow_anonymous=authz.allow_anonymous,
            certificates=_certificates(settings),
        ),
        "ratelimit": RateLimitStage(
            applies, RateLimiter(tuple(_limit_rule(limit) for limit in settings.rate_limits))
        ),
        "route": RouteStage(applies, profile),
        "authz": AuthzStage(applies, authorizer),
    }
    outcomes = FanOutSink(*sinks, *([sink] if sink is not None else []))

    def admit() -> bool:
        return recorder.accepting

    runner = Runner(
        AuditStage(outcomes, admit, metrics.start), [stages[name] for name in CHAIN_ORDER[1:]]
    )
    pipeline = Pipeline(
        runner,
        authn,
        policies,
        profile,
        tuple(reloaders),
        recorder,
        authorizer,
        registry,
        outcomes,
        admit,
        started=metrics.start,
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
