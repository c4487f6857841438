"""Token checks in the compiled tier: jwt_authn's providers (signature, issuer, audience, expiry)
and, per provider, the rest of what opsgate's authentication refuses, as one CEL expression
that must hold. Its DENY fires when the expression is false OR fails to evaluate."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gateway.envoy.compiled import celexpr as c
from gateway.envoy.compiled import xds
from gateway.envoy.compiled.identity import Provider
from gateway.envoy.compiled.text import literal, whitespace_class
from gateway.envoy.compiled.xds import Json

JWT_FILTER = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
AUTHORIZATION_PREFIX = len("Bearer ")
JWT_CACHE_SIZE = 10000  # opsgate's own token_cache_size default


@dataclass(frozen=True, slots=True)
class KeySet:
    """Where a provider's keys are: a file read when the config is loaded, or a URL."""

    file: Path | None = None
    uri: str | None = None
    cluster: str | None = None  # the cluster the URL is fetched through


@dataclass(frozen=True, slots=True)
class TokenRules:
    """What one provider's tokens must satisfy beyond what jwt_authn checks."""

    provider: Provider
    keys: KeySet
    audiences: tuple[str, ...]  # empty: checked by `self_signed_audiences` instead
    clock_skew_s: int
    max_lifetime_s: float
    required_scopes: frozenset[str]
    require_scope: bool
    max_token_bytes: int
    self_signed_audiences: tuple[str, ...] | None = None  # service accounts: aud or a scope


def jwt_authn(rules: Sequence[TokenRules], allow_anonymous: bool) -> Json:
    """The jwt_authn filter: one provider per issuer, its payload kept as dynamic metadata
    under the provider's key, the authorization header never forwarded."""
    providers: dict[str, Json] = {}
    for rule in rules:
        provider = rule.provider
        config: Json = {
            "audiences": list(rule.audiences),
            # Kept for the DENY filter's size check; removed after it unless the config
            # forwards it (authentication.forward_authorization).
            "forward": True,
            "payload_in_metadata": provider.metadata_key,
            "clock_skew_seconds": rule.clock_skew_s,
            "require_expiration": True,
            # Verified tokens are remembered (their expiry still checked on each use): without
            # this Envoy 1.40 verifies the signature and decodes the payload on every call.
            "jwt_cache_config": {"jwt_cache_size": JWT_CACHE_SIZE},
        }
        if provider.kind != "service_account":
            config["issuer"] = provider.issuer
        # A service account's own JWT names it in `iss` in any case (opsgate compares the
        # canonical email): the provider takes any iss its keys sign, and the token filter
        # refuses one that is not the account (Provider.present, account_mismatch).
        if rule.keys.file is not None:
            config["local_jwks"] = {"filename": str(rule.keys.file)}
        else:
            config["remote_jwks"] = {
                "http_uri": {"uri": rule.keys.uri, "cluster": rule.keys.cluster, "timeout": "5s"},
                "cache_duration": "300s",
                "async_fetch": {"fast_listener": False},
                "retry_policy": {"num_retries": 3},
            }
        providers[provider.metadata_key] = config
    requirements: list[Json] = [{"provider_name": name} for name in providers]
    if allow_anonymous:
        requirements.append({"allow_missing": {}})
    requires: Json = (
        requirements[0]
        if len(requirements) == 1
        else {"requires_any": {"requirements": requirements}}
    )
    return {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_FILTER,
            "providers": providers,
            "rules": [{"match": {"prefix": "/"}, "requires": requires}],
        },
    }


def _payload(provider: Provider) -> Json:
    return c.index(c.dynamic_metadata(c.JWT_AUTHN), provider.metadata_key)


def _claim(payload: Json, name: str) -> Json:
    return c.index(payload, name)


def _typed(payload: Json, name: str, type_name: str) -> Json:
    return c.either(c.negated(c.has(payload, name)), c.is_type(_claim(payload, name), type_name))


def _now_seconds() -> Json:
    return c.call("double", c.call("int", c.field(c.ident("request"), "time")))


def _has_scope(words: Json, scope: str) -> Json:
    space = f"[{whitespace_class()}]"
    return c.call("matches", c.const(f"(?:^|{space}){literal(scope)}(?:{space}|$)"), target=words)


def scopes_hold(rule: TokenRules) -> Json:
    """opsgate's scopes(): `scope` (a string) else `scp` (a string or a list of strings); when
    the token carries either, it must hold every required scope; when neither, only an issuer
    that requires a scope refuses it."""
    payload = _payload(rule.provider)
    required = sorted(rule.required_scopes)

    def in_text(value: Json) -> Json:
        return c.both(c.const(True), *(_has_scope(value, s) for s in required))

    scope = _claim(payload, "scope")
    scp = _claim(payload, "scp")
    scp_list = c.both(c.is_type(scp, "list"), *(c.call("@in", c.const(s), scp) for s in required))
    scp_holds = c.either(c.both(c.is_type(scp, "string"), in_text(scp)), scp_list)
    scope_holds = c.both(c.is_type(scope, "string"), in_text(scope))
    neither = c.const(not rule.require_scope)
    return c.call(
        "_?_:_",
        c.has(payload, "scope"),
        scope_holds,
        c.call("_?_:_", c.has(payload, "scp"), scp_holds, neither),
    )


def _audience_or_scope(payload: Json, accepted: tuple[str, ...]) -> Json:
    """Self-signed service-account JWTs: an accepted audience, or no aud at all and a scope."""
    aud = _claim(payload, "aud")
    if accepted:
        one = c.both(c.is_type(aud, "string"), c.call("@in", aud, _node_list(accepted)))
        listed = c.either(*(c.call("@in", c.const(a), aud) for a in accepted))
        named = c.either(one, c.both(c.is_type(aud, "list"), listed))
    else:
        named = c.const(False)
    scoped = c.either(c.has(payload, "scope"), c.has(payload, "scp"))
    return c.either(
        c.both(c.has(payload, "aud"), named), c.both(c.negated(c.has(payload, "aud")), scoped)
    )


def _node_list(values: tuple[str, ...]) -> Json:
    return c._node("list_expr", {"elements": [c.const(v) for v in values]})


def valid(rule: TokenRules) -> Json:
    """What must hold of a token this provider verified, for opsgate to accept it."""
    provider = rule.provider
    payload = _payload(provider)
    parts: list[Json] = [
        _typed(payload, "email", "string"),
        _typed(payload, "sub", "string"),
        _typed(payload, "email_verified", "bool"),
    ]
    if provider.trust_hosted_domain:
        parts.append(_typed(payload, "hd", "string"))
    if provider.groups_claim is not None:
        parts.append(_typed(payload, provider.groups_claim, "list"))
    if provider.kind == "email":
        email = _claim(payload, "email")
        parts.append(c.both(c.has(payload, "email"), c.call("_!=_", email, c.const(""))))
        if provider.require_email_verified:
            verified = _claim(payload, "email_verified")
            said = c.both(c.has(payload, "email_verified"), c.call("_==_", verified, c.const(True)))
            parts.append(
                said
                if not provider.emails_verified
                else c.either(said, c.negated(c.has(payload, "email_verified")))
            )
    elif provider.kind == "service_account":
        iss, sub = _claim(payload, "iss"), _claim(payload, "sub")
        parts.append(c.both(c.has(payload, "sub"), c.call("_==_", sub, iss)))
    elif provider.kind == "sub":
        sub = _claim(payload, "sub")
        parts.append(c.both(c.has(payload, "sub"), c.call("_!=_", sub, c.const(""))))
    # Times: iat not in the future; the lifetime from iat, else nbf, else now, to exp.
    exp, iat, nbf = (_claim(payload, n) for n in ("exp", "iat", "nbf"))
    skew = float(rule.clock_skew_s)
    parts.append(
        c.either(
            c.negated(c.has(payload, "iat")),
            c.call("_<=_", iat, c.call("_+_", _now_seconds(), c.const(skew))),
        )
    )
    start = c.call(
        "_?_:_",
        c.has(payload, "iat"),
        iat,
        c.call("_?_:_", c.has(payload, "nbf"), nbf, _now_seconds()),
    )
    parts.append(c.call("_<=_", c.call("_-_", exp, start), c.const(float(rule.max_lifetime_s))))
    if rule.self_signed_audiences is not None:
        parts.append(_audience_or_scope(payload, rule.self_signed_audiences))
    authorization = c.index(c.field(c.ident("request"), "headers"), "authorization")
    limit = rule.max_token_bytes + AUTHORIZATION_PREFIX
    parts.append(c.call("_<=_", c.call("size", authorization), c.const(limit)))
    return c.both(*parts)


# A JSON list of strings as Envoy's formatter writes it (compact, strings escaped).
_STRING = r'"(?:[^"\\]|\\.)*"'
LIST_OF_STRINGS = rf"\[(?:{_STRING}(?:,{_STRING})*)?\]"


def lists_malformed(rule: TokenRules) -> Json:
    """A claim that is a list with an element that is not a string (opsgate refuses the
    token): the claim's type by CEL, its elements by the JSON the formatter wrote."""
    payload = _payload(rule.provider)
    checks = [
        xds.all_of(
            # Cheapest first: CEL runs only for a claim that is there and no list of strings.
            xds.header_matches(header, "(?s:.*)"),
            xds.negate(xds.header_matches(header, LIST_OF_STRINGS)),
            xds.cel(c.is_type(_claim(payload, claim), "list")),
        )
        for header, claim in rule.provider.list_claims.items()
    ]
    return xds.any_of(*checks)
