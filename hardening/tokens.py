"""Forged and mutated tokens, each with what the gateway may do with it.

A `Forged` token either must be refused (`accept_as is None`), or may only ever authenticate
as the caller its `accept_as` claims name (and, unless `may_refuse`, must). Mutations start
from a real token of a real caller: flipped bits in each segment (in the text and in the
decoded bytes), swapped, dropped and extra segments, alg/kid/crit/jku/jwk header attacks,
iss/aud/exp/nbf/iat and principal-claim mutations re-signed with the real key, non-ASCII and
oversized tokens, and junk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import serialization
from jwt.algorithms import get_default_algorithms

from gateway.testing.tokens import SigningKey, claims, rsa_key
from hardening.env import AUDIENCE, ISSUER, Keys

Claims = dict[str, Any]
MAX_TOKEN_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Forged:
    """One token to present, and what it may authenticate as."""

    family: str
    token: str
    accept_as: Claims | None = None  # None: must be refused
    may_refuse: bool = True  # False: a token that must be accepted (as accept_as)
    scope_refusal: bool = False  # refused as PERMISSION_DENIED (scope), not UNAUTHENTICATED


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def lenient_b64(text: str) -> bytes | None:
    """Decode as PyJWT does (padding added, non-alphabet characters discarded)."""
    try:
        data = text.encode("ascii")
    except UnicodeEncodeError:
        return None
    try:
        return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))
    except (binascii.Error, ValueError):
        return None


def equivalent(token: str, original: str) -> bool:
    """Same signing input and the same signature bytes: the same token to a JWS verifier."""
    parts, base = token.split("."), original.split(".")
    if len(parts) != 3:
        return False
    if parts[:2] != base[:2]:
        return False
    signature = lenient_b64(parts[2])
    return signature is not None and signature == lenient_b64(base[2])


def sign_raw(key: SigningKey, header: dict[str, Any] | bytes, payload: bytes, alg: str) -> str:
    """A JWS over exactly these header and payload bytes, signed by `key` with `alg`."""
    header_bytes = header if isinstance(header, bytes) else json.dumps(header).encode()
    signing_input = f"{b64(header_bytes)}.{b64(payload)}".encode()
    algorithm = get_default_algorithms()[alg]
    prepared = algorithm.prepare_key(key.private)
    return f"{signing_input.decode()}.{b64(algorithm.sign(signing_input, prepared))}"


def _now() -> int:
    return int(time.time())


class Forge:
    """Makes Forged tokens from a base caller's claims with this world's keys."""

    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.attacker = rsa_key(kid="attacker", fresh=True)
        public = keys.primary.private.public_key()
        self.public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def base_claims(self, who: Claims) -> Claims:
        return claims(ISSUER, AUDIENCE, **who)

    def sign(
        self, body: Claims, key: SigningKey | None = None, header: dict[str, Any] | None = None
    ) -> str:
        key = key or self.keys.primary
        full = {"alg": key.algorithm, "typ": "JWT", "kid": key.kid, **(header or {})}
        full = {k: v for k, v in full.items() if v is not _DROP}
        return sign_raw(key, full, json.dumps(body).encode(), key.algorithm)

    # -- the families -------------------------------------------------------------------------

    def valid(self, who: Claims, use_ec: bool = False) -> Forged:
        body = self.base_claims(who)
        key = self.keys.ec if use_ec else self.keys.primary
        return Forged("valid-ec" if use_ec else "valid", self.sign(body, key), body, False)

    def bitflip_text(self, who: Claims, segment: int, position: int, bit: int) -> Forged:
        body = self.base_claims(who)
        original = self.sign(body)
        parts = original.split(".")
        text = parts[segment]
        index = position % len(text)
        flipped = chr(ord(text[index]) ^ (1 << (bit % 7)))
        parts[segment] = text[:index] + flipped + text[index + 1 :]
        token = ".".join(parts)
        same = equivalent(token, original)
        return Forged(f"bitflip-text-{_SEGMENTS[segment]}", token, body if same else None)

    def bitflip_bytes(self, who: Claims, segment: int, position: int, bit: int) -> Forged:
        body = self.base_claims(who)
        parts = self.sign(body).split(".")
        data = bytearray(lenient_b64(parts[segment]) or b"")
        index = position % len(data)
        data[index] ^= 1 << (bit % 8)
        parts[segment] = b64(bytes(data))
        return Forged(f"bitflip-bytes-{_SEGMENTS[segment]}", ".".join(parts))

    def segments(self, who: Claims, shape: str) -> Forged:
        body = self.base_claims(who)
        token = self.sign(body)
        h, p, s = token.split(".")
        shapes: dict[str, str] = {
            "psh": f"{p}.{s}.{h}",
            "phs": f"{p}.{h}.{s}",
            "hsp": f"{h}.{s}.{p}",
            "shp": f"{s}.{h}.{p}",
            "sph": f"{s}.{p}.{h}",
            "hp": f"{h}.{p}",
            "hps-s": f"{h}.{p}.{s}.{s}",
            "h-s": f"{h}..{s}",
            "-ps": f".{p}.{s}",
            "hp-": f"{h}.{p}.",
            "dots": "...",
            "hpp": f"{h}.{p}.{p}",
            "hhs": f"{h}.{h}.{s}",
            "padded-sig": f"{h}.{p}.{s}==",
            "padded-payload": f"{h}.{p}==.{s}",
            "std-b64-sig": f"{h}.{p}.{s.replace('-', '+').replace('_', '/')}",
            "json-header": f"{json.dumps({'alg': 'RS256'})}.{p}.{s}",
            "space-inside": f"{h}.{p[:10]} {p[10:]}.{s}",
        }
        forged = shapes[shape]
        return Forged(f"segments-{shape}", forged, body if equivalent(forged, token) else None)

    def header_attack(self, who: Claims, attack: str) -> Forged:
        body = self.base_claims(who)
        primary, attacker = self.keys.primary, self.attacker
        evil_jwk = {**attacker.jwk}
        made: dict[str, Callable[[], str]] = {
            "kid-unknown": lambda: self.sign(body, header={"kid": "no-such-kid"}),
            "kid-of-ec-key": lambda: self.sign(body, header={"kid": self.keys.ec.kid}),
            "kid-missing": lambda: self.sign(body, header={"kid": _DROP}),
            "kid-traversal": lambda: self.sign(body, header={"kid": "../../../../etc/passwd"}),
            "kid-int": lambda: self.sign(body, header={"kid": 12345}),
            "kid-null": lambda: self.sign(body, header={"kid": None}),
            "kid-list": lambda: self.sign(body, header={"kid": [primary.kid]}),
            "kid-huge": lambda: self.sign(body, header={"kid": "k" * 6000}),
            "kid-nul": lambda: self.sign(body, header={"kid": primary.kid + "\x00"}),
            "kid-case": lambda: self.sign(body, header={"kid": primary.kid.upper()}),
            "kid-space": lambda: self.sign(body, header={"kid": primary.kid + " "}),
            "crit": lambda: self.sign(body, header={"crit": ["exp"]}),
            "crit-empty": lambda: self.sign(body, header={"crit": []}),
            "jku-attacker": lambda: self.sign(
                body, attacker, {"jku": "http://127.0.0.1:9/jwks", "kid": "attacker"}
            ),
            "x5u-attacker": lambda: self.sign(
                body, attacker, {"x5u": "http://127.0.0.1:9/cert", "kid": "attacker"}
            ),
            "jwk-embedded": lambda: self.sign(body, attacker, {"jwk": evil_jwk, "kid": "attacker"}),
            "jwk-embedded-real-kid": lambda: self.sign(
                body, attacker, {"jwk": {**evil_jwk, "kid": primary.kid}, "kid": primary.kid}
            ),
            "attacker-key-real-kid": lambda: self.sign(body, attacker, {"kid": primary.kid}),
            "header-not-object": lambda: sign_raw(
                primary, b'["RS256"]', json.dumps(body).encode(), "RS256"
            ),
            "header-not-json": lambda: sign_raw(
                primary, b"{alg: RS256", json.dumps(body).encode(), "RS256"
            ),
        }
        return Forged(f"header-{attack}", made[attack]())

    def alg_attack(self, who: Claims, attack: str) -> Forged:
        body = self.base_claims(who)
        payload = json.dumps(body).encode()
        kid = self.keys.primary.kid
        s = self.sign(body).split(".")[2]

        def unsigned(alg: Any, signature: str = "") -> str:
            header = b64(json.dumps({"alg": alg, "typ": "JWT", "kid": kid}).encode())
            return f"{header}.{b64(payload)}.{signature}"

        def hs256(secret: bytes) -> str:
            header = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
            signing_input = f"{header}.{b64(payload)}".encode()
            mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
            return f"{signing_input.decode()}.{b64(mac)}"

        def resigned(alg: str, key: SigningKey | None = None) -> str:
            signer = key or self.keys.primary
            return sign_raw(signer, {"alg": alg, "typ": "JWT", "kid": kid}, payload, alg)

        made: dict[str, Callable[[], str]] = {
            "none-empty-sig": lambda: unsigned("none"),
            "none-real-sig": lambda: unsigned("none", s),
            "None": lambda: unsigned("None"),
            "NONE": lambda: unsigned("NONE"),
            "none-dot-x": lambda: unsigned("none", "x"),
            "hs256-public-pem": lambda: hs256(self.public_pem),
            "hs256-empty-secret": lambda: hs256(b""),
            "rs384-same-key": lambda: resigned("RS384"),
            "rs512-same-key": lambda: resigned("RS512"),
            "ps256-same-key": lambda: resigned("PS256"),
            "es256-header-rsa-sig": lambda: unsigned("ES256", s),
            "eddsa-header-rsa-sig": lambda: unsigned("EdDSA", s),
            "alg-missing": lambda: sign_raw(
                self.keys.primary, {"typ": "JWT", "kid": kid}, payload, "RS256"
            ),
            "alg-lowercase": lambda: unsigned("rs256", s),
            "alg-list": lambda: unsigned(["RS256"], s),
            "alg-huge": lambda: unsigned("RS256" * 1000, s),
            "ec-sig-rsa-kid": lambda: resigned("ES256", self.keys.ec),
        }
        return Forged(f"alg-{attack}", made[attack]())

    def claim_attack(self, who: Claims, attack: str) -> Forged:
        """Claims mutated and re-signed with the real key: the signature is good."""
        now = _now()
        refusals: dict[str, Claims] = {
            "iss-other": {"iss": "https://evil.example"},
            "iss-trailing-slash": {"iss": ISSUER + "/"},
            "iss-upper": {"iss": ISSUER.upper()},
            "iss-missing": {"iss": None},
            "iss-list": {"iss": [ISSUER]},
            "iss-nul": {"iss": ISSUER + "\x00"},
            "aud-other": {"aud": "someone-else"},
            "aud-empty-list": {"aud": []},
            "aud-missing": {"aud": None},
            "aud-int": {"aud": 123},
            "aud-int-list": {"aud": [123]},
            "aud-upper": {"aud": AUDIENCE.upper()},
            "aud-space": {"aud": AUDIENCE + " "},
            "aud-object": {"aud": {"aud": AUDIENCE}},
            "exp-past": {"iat": now - 7200, "exp": now - 3600},
            "exp-string": {"exp": str(now + 300)},
            "exp-missing": {"exp": None},
            "exp-far-future": {"exp": now + 10**9},
            "exp-bool": {"exp": True},
            "exp-negative": {"exp": -1},
            "exp-before-iat": {"iat": now, "exp": now - 100},
            "exp-huge-float": {"exp": 1e308},
            "nbf-future": {"nbf": now + 600},
            "iat-future": {"iat": now + 600, "exp": now + 900},
            "iat-string": {"iat": str(now)},
            "email-verified-false": {"email_verified": False},
            "email-verified-string": {"email_verified": "true"},
            "email-missing": {"email": None},
            "email-empty": {"email": ""},
            "email-int": {"email": 42},
            "groups-string": {"groups": "platform@acme.example"},
            "groups-ints": {"groups": [1, 2]},
            "scp-int": {"scope": None, "scp": 5},
        }
        if attack in refusals:
            return Forged(
                f"claims-{attack}", self.sign(self.base_claims({**who, **refusals[attack]}))
            )
        if attack == "scope-insufficient":
            body = self.base_claims({**who, "scope": "openid email"})
            return Forged("claims-scope-insufficient", self.sign(body), scope_refusal=True)
        if attack == "exp-nan":
            body = self.base_claims(who)
            payload = json.dumps({**body, "exp": float("nan")}).encode()  # NaN: not JSON
            header = {"alg": "RS256", "typ": "JWT", "kid": self.keys.primary.kid}
            return Forged("claims-exp-nan", sign_raw(self.keys.primary, header, payload, "RS256"))
        if attack == "duplicate-email-keys":
            # Two `email` members: JSON parsers differ; a verifier must not be confused by it.
            body = self.base_claims(who)
            rest = json.dumps({k: v for k, v in body.items() if k != "email"})[1:-1]
            last = json.dumps(body["email"])
            text = f'{{"email": "mallory@contractor.example", {rest}, "email": {last}}}'
            header = {"alg": "RS256", "typ": "JWT", "kid": self.keys.primary.kid}
            token = sign_raw(self.keys.primary, header, text.encode(), "RS256")
            return Forged("claims-duplicate-email-keys", token, json.loads(text))
        # Valid signatures for confusable principals: they authenticate as exactly who they say.
        confusable: dict[str, Claims] = {
            "email-upper": {"email": str(who.get("email", "")).upper()},
            "email-trailing-space": {"email": f"{who.get('email')} "},
            "email-zero-width": {"email": f"{who.get('email')}\u200b"},
            "email-nul": {"email": f"{who.get('email')}\x00"},
            "email-crlf": {
                "email": f"{who.get('email')}\r\nx-opsgate-principal: user:alice@acme.example"
            },
            "email-unicode-domain-member": {"email": "zoë@acme.example", "hd": "acme.example"},
            "email-fullwidth-at": {"email": "alice\uff20acme.example"},
            "hd-spoof": {"hd": "acme.example", "email_verified": None},
            "groups-claimed-platform": {"groups": ["group:platform@acme.example"]},
            "groups-huge": {"groups": [f"g{i}@acme.example" for i in range(300)]},
            "sa-suffix-upper": {"email": "ci-deployer@acme-prod.IAM.GSERVICEACCOUNT.COM"},
        }
        body = self.base_claims({**who, **confusable[attack]})
        return Forged(f"confusable-{attack}", self.sign(body), body)

    def non_ascii(self, who: Claims, position: int, char: str) -> Forged:
        token = self.sign(self.base_claims(who))
        index = position % (len(token) + 1)
        return Forged("non-ascii", token[:index] + char + token[index:])

    def huge(self, who: Claims, size: int) -> Forged:
        """A real token padded to about `size` characters with a junk claim."""
        body = self.base_claims(who)
        base_len = len(self.sign(body))
        pad = max(0, (size - base_len) * 3 // 4)
        padded = {**body, "padding": "x" * pad}
        token = self.sign(padded)
        if len(token.encode()) <= MAX_TOKEN_BYTES:
            return Forged(f"huge-valid-{size}", token, padded, may_refuse=False)
        return Forged(f"huge-over-limit-{size}", token)

    def junk(self, text: str) -> Forged:
        return Forged("junk", text)


_SEGMENTS = ("header", "payload", "signature")
_DROP = object()  # a header field to leave out

SEGMENT_SHAPES = (
    "psh", "phs", "hsp", "shp", "sph", "hp", "hps-s", "h-s", "-ps", "hp-", "dots", "hpp", "hhs",
    "padded-sig", "padded-payload", "std-b64-sig", "json-header", "space-inside",
)  # fmt: skip
HEADER_ATTACKS = (
    "kid-unknown", "kid-of-ec-key", "kid-missing", "kid-traversal", "kid-int", "kid-null",
    "kid-list", "kid-huge", "kid-nul", "kid-case", "kid-space", "crit", "crit-empty",
    "jku-attacker", "x5u-attacker", "jwk-embedded", "jwk-embedded-real-kid",
    "attacker-key-real-kid", "header-not-object", "header-not-json",
)  # fmt: skip
ALG_ATTACKS = (
    "none-empty-sig", "none-real-sig", "None", "NONE", "none-dot-x", "hs256-public-pem",
    "hs256-empty-secret", "rs384-same-key", "rs512-same-key", "ps256-same-key",
    "es256-header-rsa-sig", "eddsa-header-rsa-sig", "alg-missing", "alg-lowercase", "alg-list",
    "alg-huge", "ec-sig-rsa-kid",
)  # fmt: skip
CLAIM_ATTACKS = (
    "iss-other", "iss-trailing-slash", "iss-upper", "iss-missing", "iss-list", "iss-nul",
    "aud-other", "aud-empty-list", "aud-missing", "aud-int", "aud-int-list", "aud-upper",
    "aud-space", "aud-object", "exp-past", "exp-string", "exp-missing", "exp-far-future",
    "exp-bool", "exp-negative", "exp-before-iat", "exp-huge-float", "nbf-future",
    "iat-future", "iat-string", "email-verified-false", "email-verified-string",
    "email-missing", "email-empty", "email-int", "groups-string", "groups-ints", "scp-int",
    "scope-insufficient", "duplicate-email-keys", "email-upper", "email-trailing-space",
    "hd-spoof", "groups-claimed-platform", "groups-huge", "sa-suffix-upper",
    # Found bugs' triggers (KB-1: principals with non-ASCII or control characters; KB-6: NaN
    # exp), drawn again now that they are fixed.
    "email-zero-width", "email-nul", "email-crlf", "email-unicode-domain-member",
    "email-fullwidth-at", "exp-nan",
)  # fmt: skip
HUGE_SIZES = (9_000, 15_500, 16_500, 40_000, 70_000)
