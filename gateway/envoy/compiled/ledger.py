"""The compiled tier's audit trail: each entry of Envoy's `opsgate-compiled` access log becomes one
record, its caller, permission and decision named as opsgate's own records name them."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from gateway.audit.logentry import to_log_entry
from gateway.audit.recorder import AuditRecorder
from gateway.audit.writer import serialize_entry
from gateway.authn.claims import PrincipalRules, principal_from
from gateway.authn.factory import (
    SELF_SIGNED_RULES,
    google_id_principal_rules,
    issuer_principal_rules,
)
from gateway.authn.principal import GOOGLE_ISSUERS, Principal
from gateway.authn.settings import AuthnSettings
from gateway.authorizer import ANONYMOUS, PolicyHolder, Verdict
from gateway.call import Call, new_request_id, recorded_method
from gateway.config import AuthzSettings, Settings
from gateway.envoy.compiled import decisions
from gateway.envoy.compiled.authn_plan import plan_authn
from gateway.envoy.compiled.celexpr import FIELD_EXTRACTION, JWT_AUTHN
from gateway.envoy.compiled.resources import POLICY_ETAG_TAG
from gateway.envoy.compiled.routes import POLICY_ID_KEY, RBAC_NAMESPACE
from gateway.envoy.completion import Ending, ending_of
from gateway.errors import CallFailure, RpcError, StatusCode, is_missing_credentials
from gateway.outcome import CallOutcome
from gateway.policy.decision import Decision, Effect, TraceEntry
from gateway.policy.evaluator import evaluate, keys_for
from gateway.policy.model import AccessRequest, Binding, Caller, DenyRule, Policy
from gateway.profile import ServiceProfile

log = logging.getLogger("opsgate.envoy.compiled")

RECORD_KEY = "compiledTier"  # the record's protoPayload.metadata key for what only this tier has
ENGINE_RESULT_KEY = "enforced_engine_result"
JWT_REFUSED = "jwt_authn_access_denied"  # response_code_details when jwt_authn refused the token
UNREADABLE_REASON = "ENVOY_ENTRY_UNREADABLE"
_MAX_ID = 200  # an RBAC policy id comes from the config, but a record never holds long text

# What the last RBAC filter's id says the record may name, as opsgate's own stages would have
# found it by then (besides the route:K, deny: and allow: ids, which pass every check):
# the caller, once the token checks passed it (a refused token names no one, as authn records
# none); the name, once the name checks read it; the permission, once a route fitted the name.
_CALLER_KNOWN = frozenset(
    {
        decisions.INSUFFICIENT_SCOPE,
        decisions.UNIMPLEMENTED,
        decisions.INVALID_NAME,
        decisions.DEFAULT_DENY,
    }
)
_NAMED = frozenset({decisions.INVALID_NAME, decisions.DEFAULT_DENY})
_ROUTED = frozenset({decisions.DEFAULT_DENY})
# The ErrorInfo reason Envoy's local reply gives each refusal (replies.py).
_REFUSAL_REASONS = {
    decisions.INVALID_TOKEN: "JWT_TOKEN_INVALID",
    decisions.INVALID_OTHER_TOKEN: "JWT_TOKEN_INVALID",
    decisions.INSUFFICIENT_SCOPE: "ACCESS_TOKEN_SCOPE_INSUFFICIENT",
    decisions.UNIMPLEMENTED: "METHOD_NOT_IMPLEMENTED",
    decisions.INVALID_NAME: "RESOURCE_NAME_INVALID",
    decisions.DEFAULT_DENY: "IAM_PERMISSION_DENIED",
}
_DECIDING = (decisions.BINDINGS, decisions.DENY_RULE)


# --- who the callers are ---------------------------------------------------------------------


def principal_rules(authentication: AuthnSettings) -> tuple[PrincipalRules, ...]:
    """For each of the compiled config's jwt_authn providers (pN is index N), the rules by which
    opsgate's own authentication names the callers of a token that provider verified: built
    from the config as gateway.authn.factory builds its verifiers' rules, found by the token's
    issuer as the Authenticator finds them (Google's ID tokens override an issuer entry with
    the same iss; a service account's self-signed JWT has rules of its own)."""
    # The factory's own rules (tests/unit/envoy/test_compiled_ledger.py pins them against the
    # Authenticator's). Only `authentication` decides the providers and their order.
    placeholder = AuthzSettings(policy_file=Path("unused"))
    plan = plan_authn(Settings(authentication=authentication, authorization=placeholder))
    by_issuer: dict[str, PrincipalRules] = {}
    for config in authentication.issuers:
        if config.jwks_uri is not None or config.jwks_file is not None or config.discovery:
            by_issuer[config.issuer] = issuer_principal_rules(config, "jwt")
    google = authentication.google_id_tokens
    if google is not None:
        rules = google_id_principal_rules(google.groups_claim)
        by_issuer.update(dict.fromkeys(GOOGLE_ISSUERS, rules))
    return tuple(
        SELF_SIGNED_RULES
        if rule.provider.kind == "service_account"
        else by_issuer[rule.provider.issuer]
        for rule in plan.rules
    )


# --- one entry --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Logged:
    """One access-log entry as it arrived, with what was in force then: what the writer thread
    turns into a record."""

    entry: Any  # envoy.data.accesslog.v3.HTTPAccessLogEntry (protos.py)
    request_id: str
    arrived_at: float  # Unix time; the call's start when Envoy's entry does not say
    policy: Policy  # the receiving opsgate's policy in force when the entry arrived


@dataclass(frozen=True, slots=True)
class Read:
    """What an entry says, read: the call's outcome (with its caller, access and verdict) and
    what only the compiled tier has, for the record's metadata."""

    outcome: CallOutcome
    compiled: Mapping[str, Any]
    policy_etag: str  # the etag of the policy that decided the call (or, for none, in force)


class _Gone:
    """The Transport of a call known only from Envoy's log: its connection is gone."""

    __slots__ = ()

    def peer(self) -> str | None:
        return None

    def auth_context(self) -> Mapping[str, Any]:
        return {}

    def time_remaining(self) -> float | None:
        return None

    def cancelled(self) -> bool:
        return False


_TRANSPORT = _Gone()


def request_id_of(entry: Any) -> str:
    """Envoy's x-request-id (a fresh UUID per call: preserve_external_request_id is off) as the
    record's 32-hex-digit id, so the record and the upstream's logs name the call alike; a new
    id of opsgate's own when the entry has none."""
    try:
        return uuid.UUID(entry.request.request_id).hex
    except ValueError:
        return new_request_id()


def grpc_peer(address: Any) -> str | None:
    """Envoy's address of the downstream, spelled as grpc spells a peer."""
    kind = address.WhichOneof("address")
    if kind == "socket_address":
        socket = address.socket_address
        host = socket.address
        if ":" in host:
            return f"ipv6:[{host}]:{socket.port_value}"
        return f"ipv4:{host}:{socket.port_value}"
    if kind == "pipe":
        return f"unix:{address.pipe.path}"
    return None


def _string_field(struct: Any, key: str) -> str | None:
    value = struct.fields.get(key) if struct is not None else None
    if value is None or value.WhichOneof("kind") != "string_value":
        return None
    text: str = value.string_value
    return text


def _seconds(stamp: Any) -> float:
    return float(stamp.seconds) + float(stamp.nanos) / 1e9


class Reader:
    """Reads entries against one config: the providers' rules, the profile, the policy."""

    def __init__(self, rules: tuple[PrincipalRules, ...], profile: ServiceProfile) -> None:
        self._rules = rules
        self._profile = profile
        self._by_ordinal: tuple[Policy, dict[int, Binding], dict[int, DenyRule]] | None = None

    def read(self, logged: Logged) -> Read:
        entry = logged.entry
        common = entry.common_properties
        metadata = common.metadata.filter_metadata
        rbac = metadata.get(RBAC_NAMESPACE)
        policy_id = (_string_field(rbac, POLICY_ID_KEY) or "")[:_MAX_ID] or None
        engine = _string_field(rbac, ENGINE_RESULT_KEY)
        compiled_etag: str | None = entry.common_properties.custom_tags.get(POLICY_ETAG_TAG)
        policy = logged.policy
        facts: dict[str, Any] = {"policyEtag": compiled_etag}
        if policy_id is not None:
            facts["policyId"] = policy_id
            facts["engineResult"] = engine
        same_policy = compiled_etag == policy.etag
        if not same_policy:
            facts["policyEtagMismatch"] = True
            facts["receiverPolicyEtag"] = policy.etag
        ending = ending_of(entry, rest=False)
        method = recorded_method(entry.request.path)
        received = _seconds(common.start_time) if common.HasField("start_time") else None
        call = Call(
            method,
            (),
            _TRANSPORT,
            request_id=logged.request_id,
            received_at=received if received is not None else logged.arrived_at,
            raw_peer=grpc_peer(common.downstream_remote_address),
            user_agent=entry.request.user_agent or None,
        )
        if ending.upstream_s is not None:
            call.upstream_s = ending.upstream_s
        name = _name(metadata.get(FIELD_EXTRACTION))
        problems: list[str] = []
        if policy_id is None:
            # No RBAC filter ran: jwt_authn refused the token, or Envoy ended the call before
            # the checks (a reset, a body it could not read). Nobody is named, nothing decided.
            reason = ending.reason
            if entry.response.response_code_details.startswith(JWT_REFUSED):
                # Envoy's reply to a token jwt_authn refused (replies.py): missing credentials
                # when no authorization header came, otherwise an invalid token.
                missing = is_missing_credentials(ending.message)
                reason = "CREDENTIALS_MISSING" if missing else "JWT_TOKEN_INVALID"
            outcome = self._outcome(call, ending, reason)
            return Read(outcome, _without_none(facts), compiled_etag or policy.etag)
        decided = decisions.read(policy_id)
        passed_checks = policy_id.startswith((decisions.ROUTE, *_DECIDING))
        named = True  # the caller is named, or is anonymous
        if policy_id in _CALLER_KNOWN or passed_checks:
            principal, provider, problem = self._principal(metadata.get(JWT_AUTHN))
            if provider is not None:
                facts["provider"] = provider
            if problem is not None:
                problems.append(problem)
                named = False
            call.principal = principal
        if policy_id in _NAMED or passed_checks:
            call.resource_name = name
        if (policy_id in _ROUTED or passed_checks) and name is not None:
            try:
                call.access = self._profile.access_for(method, name)
            except CallFailure:
                problems.append("opsgate's profile does not route this method and name")
        decision: Decision | None = None
        if decided.kind in ("allowed", "denied_by_rule", "default_deny"):
            # Fail closed: only the ALLOW filter's own id, reported as allowed, is a grant.
            granted = decided.kind == "allowed" and engine == "allowed"
            naming = _Naming(policy, same_policy, compiled_etag, named)
            decision = self._decision(call, decided, granted, naming, facts, problems)
            call.verdict = Verdict(decision, cached=False)
        reason = ending.reason
        if ending.code is not StatusCode.OK:
            # The ErrorInfo reason of Envoy's local reply to a refusal (replies.py).
            if policy_id in _REFUSAL_REASONS:
                reason = _REFUSAL_REASONS[policy_id]
            elif decision is not None and not decision.allowed:
                reason = "IAM_PERMISSION_DENIED"
        if problems:
            facts["problems"] = problems
        outcome = self._outcome(call, ending, reason)
        etag = decision.policy_etag if decision is not None else compiled_etag or policy.etag
        return Read(outcome, _without_none(facts), etag)

    @staticmethod
    def _outcome(call: Call, ending: Ending, reason: str | None) -> CallOutcome:
        latency = ending.latency_s if ending.latency_s is not None else 0.0
        return CallOutcome(call, ending.code, ending.message, latency, ending.detail, reason)

    def _principal(self, jwt: Any) -> tuple[Principal | None, str | None, str | None]:
        """The caller named by the verified claims, as opsgate's authentication names them;
        (None, None, None) for an anonymous call."""
        if jwt is None or not jwt.fields:
            return None, None, None
        keys = sorted(jwt.fields)
        if len(keys) != 1:
            return None, None, "more than one provider's claims: the caller is not named"
        key = keys[0]
        index = int(key[1:]) if key[:1] == "p" and key[1:].isdigit() else -1
        value = jwt.fields[key]
        if not 0 <= index < len(self._rules) or value.WhichOneof("kind") != "struct_value":
            return None, key, f"claims of provider {key!r}, which this opsgate does not have"
        claims: dict[str, Any] = json_format.MessageToDict(value.struct_value)
        exp = claims.get("exp")
        expires_at = None
        if isinstance(exp, int | float) and not isinstance(exp, bool):
            expires_at = float(exp)
        try:
            principal = principal_from(claims, self._rules[index], expires_at)
        except RpcError as exc:
            # Its own checks say why, never with the claims' values.
            return None, key, f"the caller cannot be named: {exc.log_detail}"
        return principal, key, None

    def _decision(
        self,
        call: Call,
        decided: decisions.Decided,
        granted: bool,
        naming: _Naming,
        facts: dict[str, Any],
        problems: list[str],
    ) -> Decision:
        """Envoy's decision, named: the evaluator's own (the exact binding or deny rule, in its
        words) when it agrees with Envoy; otherwise what Envoy's id names, and the evaluator's
        answer beside it. The decision recorded is always the one Envoy enforced."""
        access = call.access
        policy = naming.policy
        etag = naming.compiled_etag or "unknown"
        effect = Effect.ALLOW if granted else Effect.DENY
        request = AccessRequest(
            access.permission if access is not None else "", call.resource_name or ""
        )
        principal = call.principal
        caller = ANONYMOUS if principal is None else principal.caller
        asked = f"{request.permission} " if access is not None else ""
        on = f" on {request.resource}" if request.resource else ""
        said = (
            f"{asked}{_verb(granted)}{on} by Envoy's compiled policy {etag} "
            f"({decided_text(decided)})"
        )
        if not naming.same_policy:
            reason = (
                f"{said}; this opsgate enforces policy {policy.etag}, so the deciding binding "
                "or rule is not named"
            )
            return Decision(effect, request, reason, (), etag, False)
        # Re-evaluated only for a caller opsgate can name: as anyone else, the evaluator would
        # answer a question nobody asked.
        if access is not None and naming.caller_named:
            now = datetime.fromtimestamp(call.received_at, UTC)
            ours = evaluate(policy, caller, request, now)
            if _agrees(ours, decided, granted):
                return Decision(effect, request, ours.reason, ours.trace, etag, False)
            facts["evaluator"] = {"granted": ours.allowed, "reason": ours.reason}
            problems.append("opsgate's evaluator decides this call otherwise")
        return Decision(effect, request, said, self._named(policy, decided, caller), etag, False)

    def _named(
        self, policy: Policy, decided: decisions.Decided, caller: Caller
    ) -> tuple[TraceEntry, ...]:
        """The bindings or deny rule Envoy's id names, from the policy it was compiled from."""
        if self._by_ordinal is None or self._by_ordinal[0] is not policy:
            self._by_ordinal = (
                policy,
                {b.ordinal: b for b in policy.bindings},
                {r.ordinal: r for r in policy.deny_rules},
            )
        _, bindings, rules = self._by_ordinal
        keys = keys_for(policy.index, caller)
        trace: list[TraceEntry] = []
        if decided.kind == "allowed":
            for ordinal in decided.ordinals:
                binding = bindings.get(ordinal)
                if binding is None:
                    continue
                member = next((m.written for m in binding.members if m.key in keys.allow), None)
                condition = binding.condition
                trace.append(
                    TraceEntry(
                        kind="binding",
                        resource=binding.resource,
                        role=binding.role,
                        member=member,
                        via_group=None,
                        condition=condition.expression if condition is not None else None,
                        condition_result="true" if condition is not None else "absent",
                        source_line=binding.source_line,
                        outcome="granted by Envoy's compiled policy",
                    )
                )
        elif decided.kind == "denied_by_rule":
            rule = rules.get(decided.ordinals[0]) if decided.ordinals else None
            if rule is not None:
                principal = rule.principal_for(keys.deny)
                condition = rule.condition
                trace.append(
                    TraceEntry(
                        kind="deny_rule",
                        resource=rule.resource,
                        role=None,
                        member=principal.written if principal is not None else None,
                        via_group=None,
                        condition=condition.expression if condition is not None else None,
                        condition_result="true" if condition is not None else "absent",
                        source_line=rule.source_line,
                        outcome="denied by Envoy's compiled policy",
                    )
                )
        return tuple(trace)


@dataclass(frozen=True, slots=True)
class _Naming:
    """What naming a decision may rely on."""

    policy: Policy  # the receiving opsgate's
    same_policy: bool  # Envoy's entry names this policy's etag: its ordinals are this policy's
    compiled_etag: str | None
    caller_named: bool  # the caller is named (or anonymous), so the evaluator can be asked


def _agrees(ours: Decision, decided: decisions.Decided, granted: bool) -> bool:
    if ours.allowed != granted:
        return False
    by_rule = bool(ours.trace) and ours.trace[0].kind == "deny_rule" and not ours.allowed
    return by_rule == (decided.kind == "denied_by_rule")


def _verb(granted: bool) -> str:
    return "granted" if granted else "denied"


def decided_text(decided: decisions.Decided) -> str:
    """What Envoy's policy id says decided the call, in words."""
    if decided.kind == "allowed":
        listed = ", ".join(f"#{o}" for o in decided.ordinals)
        return f"binding {listed}" if len(decided.ordinals) == 1 else f"one of bindings {listed}"
    if decided.kind == "denied_by_rule":
        return f"deny rule #{decided.ordinals[0]} on route {decided.route}"
    return "no binding grants the permission"


def _name(extracted: Any) -> str | None:
    """The request's `name` as grpc_field_extraction read it (the last occurrence)."""
    if extracted is None:
        return None
    value = extracted.fields.get("name")
    if value is None or value.WhichOneof("kind") != "list_value":
        return None
    values = value.list_value.values
    if not values or values[0].WhichOneof("kind") != "string_value":
        return None
    name: str = values[0].string_value
    return name


def _without_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


# --- the ledger -------------------------------------------------------------------------------


class CompiledLedger:
    """Writes one audit record per compiled-tier access-log entry, through the gateway's own
    audit writer: queued without blocking on the event loop, read and written on the writer
    thread, so the writer's guarantees are the records' (never dropped with fail_closed, held
    while the sink is down, flushed when the gateway stops)."""

    def __init__(self, reader: Reader, recorder: AuditRecorder, policies: PolicyHolder) -> None:
        self._reader = reader
        self._recorder = recorder
        self._policies = policies
        self.entries = 0  # final entries received (each is one record)
        self.unreadable = 0  # entries written as the fallback record (see render)
        self.mismatched = 0  # entries decided by a policy other than the one in force here

    @classmethod
    def build(
        cls,
        authentication: AuthnSettings,
        profile: ServiceProfile,
        recorder: AuditRecorder,
        policies: PolicyHolder,
    ) -> CompiledLedger:
        return cls(Reader(principal_rules(authentication), profile), recorder, policies)

    def record(self, entry: Any) -> bool:
        """Queue the record of one of Envoy's entries; False for an intermediate entry (a long
        call's interim report), whose call is recorded by its final one. Never raises."""
        if entry.common_properties.intermediate_log_entry:
            return False
        self.entries += 1
        logged = Logged(entry, request_id_of(entry), time.time(), self._policies.current)
        self._recorder.writer.submit(logged, self.render)
        return True

    def render(self, logged: Logged) -> bytes:
        """The record's bytes, on the writer thread: whatever goes wrong reading the entry, a
        record is still written (the fallback), so no call Envoy reported goes unrecorded."""
        try:
            return serialize_entry(self.log_entry(logged))
        except Exception as exc:
            self.unreadable += 1
            # The type only: an exception's text could quote a claim.
            log.error(
                "compiled-tier entry request_id=%s could not be read (%s); written without "
                "its caller and decision",
                logged.request_id,
                type(exc).__name__,
            )
            return serialize_entry(self.fallback(logged, type(exc).__name__))

    def log_entry(self, logged: Logged) -> dict[str, Any]:
        """The LogEntry of one entry: opsgate's record shape, with the compiled tier's facts."""
        read = self._reader.read(logged)
        if read.compiled.get("policyEtagMismatch"):
            self.mismatched += 1
        event = self._recorder.event(read.outcome, read.policy_etag)
        entry = to_log_entry(event)
        entry["protoPayload"]["metadata"][RECORD_KEY] = dict(read.compiled)
        return entry

    def fallback(self, logged: Logged, problem: str) -> dict[str, Any]:
        """A record from the parts of an entry that cannot fail to read."""
        entry = logged.entry
        call = Call(
            recorded_method(str(entry.request.path)),
            (),
            _TRANSPORT,
            request_id=logged.request_id,
            received_at=logged.arrived_at,
        )
        try:
            ending = ending_of(entry, rest=False)
            code, message, detail = ending.code, ending.message, ending.detail
        except Exception:
            code, message, detail = StatusCode.UNKNOWN, "", ""
        outcome = CallOutcome(call, code, message, 0.0, detail, UNREADABLE_REASON)
        record = to_log_entry(self._recorder.event(outcome, logged.policy.etag))
        record["protoPayload"]["metadata"][RECORD_KEY] = {"problems": [f"unreadable: {problem}"]}
        return record
