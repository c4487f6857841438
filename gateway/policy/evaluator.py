"""Decides one request against a Policy: deny rules first, then bindings, else deny. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from gateway.policy.auditing import unrecorded
from gateway.policy.cel import ConditionContext, ConditionEvaluationError
from gateway.policy.decision import ConditionResult, Decision, Effect, TraceEntry, noted
from gateway.policy.deny import APPLIES, DenyMatch, condition_applies, match, match_listed
from gateway.policy.hierarchy import EMPTY_HIERARCHY, NO_TAGS, Hierarchy
from gateway.policy.hierarchy import resource_chain as resource_chain  # re-exported
from gateway.policy.index import MAX_TRACE_BINDINGS, GrantEntry, PolicyIndex
from gateway.policy.members import CallerKeys, caller_keys
from gateway.policy.model import AccessRequest, Binding, Caller, Condition, DenyRule, Policy
from gateway.policy.roles import normalize_permission

# resource.type for conditions, by the last collection of the resource name.
_TYPES = {
    "locations": "Location",
    "authorizedViewSets": "AuthorizedViewSet",
    "authorizedViews": "AuthorizedView",
    "operations": "Operation",
}


class _Conditions:
    """Evaluates conditions for one request, building the context only if one is needed."""

    __slots__ = (
        "_chain",
        "_context",
        "_hierarchy",
        "_now",
        "_permission",
        "_resource",
        "time_dependent",
    )

    def __init__(
        self,
        chain: tuple[str, ...],
        request: AccessRequest,
        permission: str,
        now: datetime,
        hierarchy: Hierarchy,
    ) -> None:
        self._chain = chain
        self._resource = chain[-1] if chain else request.resource
        self._permission = permission
        self._now = now
        self._hierarchy = hierarchy
        self._context: ConditionContext | None = None
        self.time_dependent = False

    def evaluate(self, condition: Condition | None) -> tuple[ConditionResult, str]:
        """("absent" | "true" | "false" | "error", detail)."""
        if condition is None:
            return "absent", ""
        if self._context is None:
            self._context = self._build()
        compiled = condition.compiled
        if compiled.uses_time:
            self.time_dependent = True
        try:
            result = compiled.evaluate(self._context)
        except ConditionEvaluationError as exc:
            return "error", str(exc)
        return ("true" if result else "false"), ""

    def _build(self) -> ConditionContext:
        kind, service = condition_facts(self._resource, self._permission)
        tags = self._hierarchy.effective_tags(self._chain) if self._hierarchy.tags else NO_TAGS
        return ConditionContext(
            resource_name=self._resource,
            request_time=self._now,
            resource_type=kind,
            resource_service=service,
            tags=tags,
        )


def condition_facts(resource: str, permission: str) -> tuple[str, str]:
    """(resource.type, resource.service) a condition sees for `resource` under `permission`."""
    service = f"{permission.partition('.')[0]}.googleapis.com"
    parts = resource.split("/")
    collection = parts[-2] if len(parts) >= 2 and len(parts) % 2 == 0 else ""
    if collection == "projects":
        kind = "cloudresourcemanager.googleapis.com/Project"
    elif collection in _TYPES:
        kind = f"{service}/{_TYPES[collection]}"
    else:
        kind = ""
    return kind, service


def keys_for(index: PolicyIndex, caller: Caller) -> CallerKeys:
    """Every key under which the index may list something that names this caller."""
    return caller_keys(
        caller.member,
        caller.email,
        caller.email_verified,
        caller.hosted_domain,
        caller.groups,
        caller.authenticated,
        index.group_closure,
    )


def _deny_candidates(index: PolicyIndex, permission: str, chain: tuple[str, ...]) -> list[DenyRule]:
    """Deny rules on the chain whose denied permissions include `permission`, in file order."""
    found: list[DenyRule] = []
    exact = index.deny_exact.get(permission)
    patterned = index.deny_patterned
    for resource in chain:
        if exact is not None:
            rules = exact.get(resource)
            if rules:
                found.extend(rules)
        if patterned:
            more = patterned.get(resource)
            if more:
                found.extend(r for r in more if r.denied_permissions.matches(permission))
    if len(found) > 1:
        # A rule with both exact permissions and groups can be found twice.
        found = sorted({rule.ordinal: rule for rule in found}.values(), key=_ordinal)
    return found


def _ordinal(item: DenyRule | Binding) -> int:
    return item.ordinal


def evaluate(
    policy: Policy,
    caller: Caller,
    request: AccessRequest,
    now: datetime,
    chain: tuple[str, ...] | None = None,
) -> Decision:
    """ALLOW or DENY, with the trace; deterministic for the same inputs.

    A deny rule whose condition cannot be evaluated applies; an allow binding whose condition
    cannot be evaluated does not grant. Only a bug raises. `chain` is for _in_hierarchy only:
    the resource's chain, when the policy's `resources` have given it.
    """
    if chain is None:
        if policy.hierarchy is not EMPTY_HIERARCHY:
            return _in_hierarchy(policy, caller, request, now)
        chain = resource_chain(request.resource)  # no `resources`: the name holds it all
    index = policy.index
    permission = normalize_permission(request.permission)
    hierarchy = policy.hierarchy
    keys = keys_for(index, caller)
    conditions: _Conditions | None = None  # built only when a condition has to be evaluated

    # Deny first. Unconditional rules are checked before conditional ones anywhere on the chain,
    # so that a decision made without reading the clock is not marked time-dependent.
    pending: list[DenyRule] = []
    for rule in _deny_candidates(index, permission, chain):
        if match_listed(rule, permission, keys.deny, keys.allow) is not APPLIES:
            continue
        if rule.condition is None:
            return _denied_by_rule(policy, request, keys, rule, "absent", "", False)
        pending.append(rule)
    for rule in pending:
        if conditions is None:
            conditions = _Conditions(chain, request, permission, now, hierarchy)
        result, detail = conditions.evaluate(rule.condition)
        if condition_applies(result):
            # "error" lands here too: a deny rule whose condition cannot be evaluated applies.
            return _denied_by_rule(
                policy, request, keys, rule, result, detail, conditions.time_dependent
            )

    per_resource = index.grants.get(permission)
    failures: dict[int, tuple[ConditionResult, str]] = {}
    if per_resource is not None:
        ordered = keys.ordered
        allow = keys.allow
        conditional: list[tuple[Binding, str]] = []
        for level in chain:
            entry = per_resource.get(level)
            if entry is None:
                continue
            by_member = entry.by_member
            # Walk whichever side is smaller: the bindings' members or the caller's keys.
            if len(by_member) <= len(ordered):
                hits = [(key, found) for key, found in by_member.items() if key in allow]
            else:
                hits = [(key, found) for key in ordered if (found := by_member.get(key))]
            for key, found in hits:
                for binding in found:
                    if binding.condition is None:
                        time_dependent = conditions.time_dependent if conditions else False
                        return _allowed(
                            policy, request, keys, binding, key, "absent", time_dependent, chain
                        )
                    conditional.append((binding, key))
        for binding, key in conditional:
            if binding.ordinal in failures:
                continue
            if conditions is None:
                conditions = _Conditions(chain, request, permission, now, hierarchy)
            result, detail = conditions.evaluate(binding.condition)
            if result == "true":
                return _allowed(
                    policy, request, keys, binding, key, result, conditions.time_dependent, chain
                )
            failures[binding.ordinal] = (result, detail)
    time_dependent = conditions.time_dependent if conditions else False
    return _default_deny(policy, request, keys, chain, permission, failures, time_dependent)


def _in_hierarchy(
    policy: Policy, caller: Caller, request: AccessRequest, now: datetime
) -> Decision:
    """evaluate() below the folders and organization `resources` declares, a project named by
    its number decided as its id (and the decision saying so)."""
    chain = policy.hierarchy.chain(request.resource)
    decision = evaluate(policy, caller, request, now, chain)
    if chain and chain[-1] != request.resource:
        return noted(decision, named_as=chain[-1])
    return decision


def _via(index: PolicyIndex, keys: CallerKeys, matched_key: str) -> str | None:
    """The groups between the caller and a matched group member, for the trace."""
    if not matched_key.startswith("group:") or matched_key in keys.direct_groups:
        return None
    paths = index.group_via.get(keys.member)
    if paths is not None and matched_key in paths:
        return paths[matched_key] or None
    for group in keys.direct_groups:
        paths = index.group_via.get(group)
        if paths is not None and matched_key in paths:
            between = paths[matched_key]
            return f"{group} > {between}" if between else group
    return None


def _allowed(
    policy: Policy,
    request: AccessRequest,
    keys: CallerKeys,
    binding: Binding,
    key: str,
    condition_result: ConditionResult,
    time_dependent: bool,
    chain: tuple[str, ...],
) -> Decision:
    member = binding.member_for(key)
    written = member.written if member is not None else key
    entry = TraceEntry(
        kind="binding",
        resource=binding.resource,
        role=binding.role,
        member=written,
        via_group=_via(policy.index, keys, key),
        condition=binding.condition.expression if binding.condition else None,
        condition_result=condition_result,
        source_line=binding.source_line,
        outcome="granted",
    )
    reason = (
        f"{request.permission} granted on {request.resource} by {binding.role} "
        f"to {written} on {binding.resource}{_at(binding.source_line)}"
    )
    decision = Decision(Effect.ALLOW, request, reason, (entry,), policy.etag, time_dependent)
    if policy.audit_configs:  # most policies have none: skip the call
        permission = normalize_permission(request.permission)
        left_out = unrecorded(policy.audit_configs, chain, permission, keys.allow)
        if left_out is not None:
            return noted(decision, left_out=left_out)
    return decision


def _denied_by_rule(
    policy: Policy,
    request: AccessRequest,
    keys: CallerKeys,
    rule: DenyRule,
    condition_result: ConditionResult,
    detail: str,
    time_dependent: bool,
) -> Decision:
    principal = rule.principal_for(keys.deny)
    written = principal.written if principal is not None else None
    outcome = "denied"
    if condition_result == "error":
        outcome = f"denied: condition could not be evaluated ({detail}), deny rules fail closed"
    entry = TraceEntry(
        kind="deny_rule",
        resource=rule.resource,
        role=None,
        member=written,
        via_group=_via(policy.index, keys, principal.key) if principal and principal.key else None,
        condition=rule.condition.expression if rule.condition else None,
        condition_result=condition_result,
        source_line=rule.source_line,
        outcome=outcome,
    )
    reason = (
        f"{request.permission} denied on {request.resource} by a deny rule on {rule.resource}"
        f"{_at(rule.source_line)} naming {written}"
    )
    return Decision(Effect.DENY, request, reason, (entry,), policy.etag, time_dependent)


def _default_deny(
    policy: Policy,
    request: AccessRequest,
    keys: CallerKeys,
    chain: tuple[str, ...],
    permission: str,
    failures: dict[int, tuple[ConditionResult, str]],
    time_dependent: bool,
) -> Decision:
    per_resource = policy.index.grants.get(permission) or {}
    # The caller's own bindings whose condition failed come first: they are the likeliest
    # answer to "why was I denied?". Then bindings whose members did not match.
    trace = [
        _failed(policy.index, keys, binding, failure)
        for binding, failure in _failed_bindings(per_resource, chain, failures)
    ][:MAX_TRACE_BINDINGS]
    holding = 0
    for level in chain:
        entry = per_resource.get(level)
        if entry is None:
            continue
        holding += len(entry.bindings)
        room = MAX_TRACE_BINDINGS - len(trace)
        if room <= 0:
            continue
        if failures:
            trace.extend(
                miss
                for binding, miss in zip(entry.bindings, entry.misses, strict=False)
                if binding.ordinal not in failures
            )
            del trace[MAX_TRACE_BINDINGS:]
        else:
            trace.extend(entry.misses[:room])
    who = keys.member if keys.authenticated else "an unauthenticated caller"
    if holding:
        reason = (
            f"{request.permission} denied on {request.resource}: {holding} binding(s) on it or "
            f"its ancestors include the permission, none grants it to {who}"
        )
    else:
        reason = (
            f"{request.permission} denied on {request.resource}: no binding on it or its "
            "ancestors includes the permission"
        )
    return Decision(Effect.DENY, request, reason, tuple(trace), policy.etag, time_dependent)


def _failed_bindings(
    per_resource: Mapping[str, GrantEntry],
    chain: tuple[str, ...],
    failures: dict[int, tuple[ConditionResult, str]],
) -> list[tuple[Binding, tuple[ConditionResult, str]]]:
    if not failures:
        return []
    found: list[tuple[Binding, tuple[ConditionResult, str]]] = []
    for level in chain:
        entry = per_resource.get(level)
        if entry is not None:
            found.extend((b, failures[b.ordinal]) for b in entry.bindings if b.ordinal in failures)
    return found


def _failed(
    index: PolicyIndex, keys: CallerKeys, binding: Binding, failure: tuple[ConditionResult, str]
) -> TraceEntry:
    """A binding whose member matched but whose condition was false or failed."""
    result, detail = failure
    matched = next((m for m in binding.members if m.key in keys.allow), None)
    return TraceEntry(
        kind="binding",
        resource=binding.resource,
        role=binding.role,
        member=matched.written if matched is not None else None,
        via_group=_via(index, keys, matched.key) if matched and matched.key else None,
        condition=binding.condition.expression if binding.condition is not None else None,
        condition_result=result,
        source_line=binding.source_line,
        outcome="condition false" if result == "false" else f"condition error: {detail}",
    )


def _at(line: int | None) -> str:
    return f" (line {line})" if line is not None else ""


def explain(
    policy: Policy, caller: Caller, request: AccessRequest, now: datetime
) -> tuple[TraceEntry, ...]:
    """Every deny rule and binding on the resource and its ancestors, and how each fared.

    For `opsgate policy explain`: it scans the chain's entries and evaluates every condition,
    so it is slower than `evaluate`, and its entries do not by themselves say the effect.
    """
    index = policy.index
    permission = normalize_permission(request.permission)
    chain = policy.hierarchy.chain(request.resource)
    keys = keys_for(index, caller)
    conditions = _Conditions(chain, request, permission, now, policy.hierarchy)
    trace: list[TraceEntry] = []
    for level in chain:
        for rule in index.deny_by_resource.get(level, ()):
            trace.append(_explain_rule(index, keys, rule, permission, conditions))
    for level in chain:
        for binding in index.bindings_by_resource.get(level, ()):
            trace.append(_explain_binding(index, keys, binding, permission, conditions))
    return tuple(trace)


def _explain_rule(
    index: PolicyIndex,
    keys: CallerKeys,
    rule: DenyRule,
    permission: str,
    conditions: _Conditions,
) -> TraceEntry:
    principal = rule.principal_for(keys.deny)
    result, detail = conditions.evaluate(rule.condition)
    found = match(rule, permission, keys.deny, keys.allow)
    if found is DenyMatch.EXEMPT:
        exception = rule.exception_for(keys.allow)
        outcome = f"{found} as {exception.written if exception is not None else '?'}"
    elif found is not DenyMatch.APPLIES:
        outcome = found.value
    elif not condition_applies(result):
        outcome = "condition false"
    elif result == "error":
        outcome = f"denied: condition could not be evaluated ({detail}), deny rules fail closed"
    else:
        outcome = "denied"
    return TraceEntry(
        kind="deny_rule",
        resource=rule.resource,
        role=None,
        member=principal.written if principal is not None else None,
        via_group=_via(index, keys, principal.key) if principal and principal.key else None,
        condition=rule.condition.expression if rule.condition else None,
        condition_result=result,
        source_line=rule.source_line,
        outcome=outcome,
    )


def _explain_binding(
    index: PolicyIndex,
    keys: CallerKeys,
    binding: Binding,
    permission: str,
    conditions: _Conditions,
) -> TraceEntry:
    matched = next((m for m in binding.members if m.key in keys.allow), None)
    result, detail = conditions.evaluate(binding.condition)
    if permission not in binding.permissions:
        outcome = "role does not include the permission"
    elif matched is None:
        outcome = "no member matched"
    elif result == "false":
        outcome = "condition false"
    elif result == "error":
        outcome = f"condition error: {detail}"
    else:
        outcome = "grants"
    return TraceEntry(
        kind="binding",
        resource=binding.resource,
        role=binding.role,
        member=matched.written if matched is not None else None,
        via_group=_via(index, keys, matched.key) if matched and matched.key else None,
        condition=binding.condition.expression if binding.condition else None,
        condition_result=result,
        source_line=binding.source_line,
        outcome=outcome,
    )
