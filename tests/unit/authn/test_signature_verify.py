"""JwtVerifier's own signature check: every algorithm with real keys, and what it must refuse."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Mapping
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from gateway.authn.claims import PrincipalRules, TimeRules
from gateway.authn.jwt_verifier import (
    SIGNATURE_CHECKS,
    JwtRules,
    JwtVerifier,
    UnverifiedJwt,
    peek,
)
from gateway.authn.keys import EC_ALGORITHMS, RSA_ALGORITHMS, parse_jwks
from gateway.authn.principal import Principal
from gateway.authn.settings import ASYMMETRIC_ALGORITHMS
from gateway.errors import RpcError
from gateway.testing.tokens import SigningKey, claims, ec_key, ed_key, jwks, rsa_key

ISSUER = "https://idp.test"
AUDIENCE = "opsgate-test"
DOES_NOT_VERIFY = "the signature does not verify"
NOT_DECODED = "the token could not be decoded"


def p521_key() -> SigningKey:
    return SigningKey("p521", "ES512", ec.generate_private_key(ec.SECP521R1()))


def ed448_key() -> SigningKey:
    return SigningKey("ed448", "EdDSA", ed448.Ed448PrivateKey.generate())  # type: ignore[arg-type]


# One signer per algorithm (and both EdDSA curves), each with a key generated for the test run.
SIGNERS = {
    "RS256": lambda: rsa_key("RS256"),
    "RS384": lambda: rsa_key("RS384"),
    "RS512": lambda: rsa_key("RS512"),
    "PS256": lambda: rsa_key("PS256"),
    "PS384": lambda: rsa_key("PS384"),
    "PS512": lambda: rsa_key("PS512"),
    "ES256": lambda: ec_key("ES256"),
    "ES384": lambda: ec_key("ES384"),
    "ES512": p521_key,
    "EdDSA-Ed25519": ed_key,
    "EdDSA-Ed448": ed448_key,
}
# One of each key family, for the tampering cases.
FAMILIES = ["RS256", "PS256", "ES256", "ES384", "ES512", "EdDSA-Ed25519", "EdDSA-Ed448"]


class StaticKeys:
    """A key resolver answering one key whatever the token asks for (unlike keys.py's)."""

    def __init__(self, key: Any) -> None:
        self.key = key

    async def key_for(self, kid: str | None, alg: str, unverified: Mapping[str, Any]) -> Any:
        return self.key


def prepared_key(signer: SigningKey) -> Any:
    """The public key as the gateway prepares it: parsed from the signer's JWKS entry."""
    return parse_jwks(jwks(signer), "test")[signer.kid].key


def verifier(key: Any, algorithms: frozenset[str] | None = None) -> JwtVerifier:
    rules = JwtRules(
        issuers=frozenset({ISSUER}),
        audiences=frozenset({AUDIENCE}),
        algorithms=algorithms if algorithms is not None else frozenset(SIGNATURE_CHECKS),
        times=TimeRules(30.0, 86400.0),
        principal=PrincipalRules(issuer=ISSUER),
    )
    return JwtVerifier(rules, StaticKeys(key))


def verify(key: Any, token: str) -> Principal:
    return asyncio.run(verifier(key).verify(token, peek(token)))


def refusal(key: Any, token: str) -> str:
    """The log detail of the token_invalid error verifying `token` must raise."""
    with pytest.raises(RpcError) as caught:
        verify(key, token)
    assert caught.value.reason == "JWT_TOKEN_INVALID"
    return caught.value.log_detail


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def with_signature(token: str, signature: bytes | str) -> str:
    encoded = signature if isinstance(signature, str) else b64(signature)
    return token.rpartition(".")[0] + "." + encoded


@pytest.fixture(scope="module")
def made() -> dict[str, SigningKey]:
    return {name: make() for name, make in SIGNERS.items()}


@pytest.fixture(params=list(SIGNERS))
def signer(request: pytest.FixtureRequest, made: dict[str, SigningKey]) -> SigningKey:
    return made[request.param]


@pytest.fixture(params=FAMILIES)
def family(request: pytest.FixtureRequest, made: dict[str, SigningKey]) -> SigningKey:
    return made[request.param]


# Accepted


def test_every_algorithm_verifies_with_a_real_key(signer: SigningKey) -> None:
    token = signer.sign(claims(ISSUER, AUDIENCE, sub="alice-1"))

    principal = verify(prepared_key(signer), token)

    assert principal.subject == "alice-1"
    assert principal.issuer == ISSUER


def test_the_claims_returned_are_the_signed_ones(family: SigningKey) -> None:
    token = family.sign(claims(ISSUER, AUDIENCE, sub="bob-2", email="bob@example.com"))
    unverified = peek(token)

    principal = asyncio.run(verifier(prepared_key(family)).verify(token, unverified))

    assert (principal.subject, principal.email) == ("bob-2", "bob@example.com")
    assert unverified.claims == json.loads(unb64(token.split(".")[1]))


def test_the_supported_algorithms_are_exactly_those_keys_are_prepared_for() -> None:
    prepared = RSA_ALGORITHMS | set(EC_ALGORITHMS.values()) | {"EdDSA"}
    assert set(SIGNATURE_CHECKS) == prepared
    assert set(ASYMMETRIC_ALGORITHMS) <= set(SIGNATURE_CHECKS)


# Tampered or malformed


def test_a_tampered_payload_does_not_verify(family: SigningKey) -> None:
    header, _, signature = family.sign(claims(ISSUER, AUDIENCE, sub="alice")).split(".")
    forged = b64(json.dumps(claims(ISSUER, AUDIENCE, sub="admin")).encode())

    assert refusal(prepared_key(family), f"{header}.{forged}.{signature}") == DOES_NOT_VERIFY


def test_a_tampered_header_does_not_verify(family: SigningKey) -> None:
    _, payload, signature = family.sign(claims(ISSUER, AUDIENCE)).split(".")
    header = b64(json.dumps({"alg": family.algorithm, "kid": "other", "typ": "JWT"}).encode())

    assert refusal(prepared_key(family), f"{header}.{payload}.{signature}") == DOES_NOT_VERIFY


@pytest.mark.parametrize("position", [0, -1], ids=["first-byte", "last-byte"])
def test_a_tampered_signature_does_not_verify(family: SigningKey, position: int) -> None:
    token = family.sign(claims(ISSUER, AUDIENCE))
    signature = bytearray(unb64(token.rpartition(".")[2]))
    signature[position] ^= 0x01

    assert refusal(prepared_key(family), with_signature(token, bytes(signature))) == DOES_NOT_VERIFY


@pytest.mark.parametrize(
    "resize",
    [
        pytest.param(lambda sig: sig[:-1], id="one-byte-short"),
        pytest.param(lambda sig: sig + b"\0", id="one-byte-long"),
        pytest.param(lambda sig: b"\0" + sig, id="leading-zero"),
        pytest.param(lambda sig: sig[: len(sig) // 2], id="half"),
        pytest.param(lambda sig: sig + sig, id="doubled"),
        pytest.param(lambda sig: b"\0", id="one-byte"),
    ],
)
def test_a_signature_of_the_wrong_length_does_not_verify(family: SigningKey, resize: Any) -> None:
    token = family.sign(claims(ISSUER, AUDIENCE))
    signature = resize(unb64(token.rpartition(".")[2]))

    assert refusal(prepared_key(family), with_signature(token, signature)) == DOES_NOT_VERIFY


def test_an_ecdsa_signature_in_der_is_refused() -> None:
    # JWS carries r || s; DER is what cryptography signs, and no valid JWS signature.
    signer = ec_key("ES256")
    token = signer.sign(claims(ISSUER, AUDIENCE))
    header, payload, _ = token.split(".")
    private = signer.private
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    der = private.sign(f"{header}.{payload}".encode(), ec.ECDSA(hashes.SHA256()))

    assert refusal(prepared_key(signer), with_signature(token, der)) == DOES_NOT_VERIFY


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(lambda s: s[: len(s) - len(s) % 4 - 3], id="length-1-mod-4"),
        pytest.param(lambda s: s[:10] + "+" + s[11:], id="plus"),
        pytest.param(lambda s: s[:10] + "/" + s[11:], id="slash"),
        pytest.param(lambda s: s[:10] + "~" + s[11:], id="tilde"),
        pytest.param(lambda s: s[:10] + "\u00e9" + s[11:], id="non-ascii"),
        pytest.param(lambda s: s[:10] + "\udcff" + s[11:], id="lone-surrogate"),
        pytest.param(lambda s: s + "===", id="three-pads"),
        pytest.param(lambda s: s + "=", id="pad-to-wrong-length"),
        pytest.param(lambda s: "====", id="only-padding"),
        pytest.param(lambda s: "A", id="one-char"),
    ],
)
def test_a_signature_that_is_not_base64url_is_invalid(family: SigningKey, bad: Any) -> None:
    token = family.sign(claims(ISSUER, AUDIENCE))
    signature = bad(token.rpartition(".")[2])

    assert refusal(prepared_key(family), with_signature(token, signature)) == NOT_DECODED


@pytest.mark.parametrize(("length", "last"), [(2, "B"), (3, "B")])
def test_stray_bits_in_the_last_character_are_invalid(length: int, last: str) -> None:
    # "AB" and "AAB" decode (leniently) to the same bytes as "AA"/"AAA": not canonical.
    signer = rsa_key("RS256")
    token = signer.sign(claims(ISSUER, AUDIENCE))
    signature = token.rpartition(".")[2]
    trimmed = signature[: len(signature) - len(signature) % 4 - 4 + length]
    assert len(trimmed) % 4 == length

    detail = refusal(prepared_key(signer), with_signature(token, trimmed[:-1] + last))

    assert detail == NOT_DECODED


def test_a_padded_signature_still_verifies() -> None:
    # pyjwt accepted "=" padding on the signature segment (some issuers send it); so do we.
    signer = ec_key("ES256")  # 64 bytes: two padding characters
    token = signer.sign(claims(ISSUER, AUDIENCE))
    signature = token.rpartition(".")[2]
    assert len(signature) % 4 == 2

    assert verify(prepared_key(signer), with_signature(token, signature + "==")).subject


ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


@pytest.mark.parametrize("tail", [2, 3])
def test_a_payload_only_a_lenient_decoder_reads_is_invalid(tail: int) -> None:
    # Stray bits in the last character: the same claims to a lenient decoder (peek's), yet not
    # a canonical encoding. pyjwt refused such a token even when signed so; so do we.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = claims(ISSUER, AUDIENCE, x="")
    while len(b64(json.dumps(body).encode())) % 4 != tail:
        body["x"] += "x"
    signing_input, _ = raw_token({"alg": "RS256"}, body)
    header, payload = signing_input.split(".")
    stray = payload[:-1] + ALPHABET[ALPHABET.index(payload[-1]) + 1]
    assert peek(f"{header}.{stray}.c2ln").claims == body
    data = f"{header}.{stray}".encode()
    signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())

    assert refusal(private.public_key(), f"{header}.{stray}.{b64(signature)}") == NOT_DECODED


def test_an_unencoded_payload_header_is_invalid() -> None:
    # RFC 7797 "b64": false, signed over the header and payload as they stand: not supported.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input, data = raw_token({"alg": "RS256", "b64": False}, claims(ISSUER, AUDIENCE))
    signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())

    assert refusal(private.public_key(), f"{signing_input}.{b64(signature)}") == NOT_DECODED


def test_deeply_nested_json_is_invalid_not_a_crash() -> None:
    header = b64(b"[" * 5000)
    with pytest.raises(RpcError) as caught:
        peek(f"{header}.e30.c2ln")
    assert caught.value.log_detail == "header or payload is not base64url JSON"


# Keys of the wrong type or curve


def raw_token(header: dict[str, Any], body: dict[str, Any]) -> tuple[str, bytes]:
    """The unsigned "header.payload" and its bytes, for tokens pyjwt would refuse to sign."""
    signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(body).encode())
    return signing_input, signing_input.encode()


def test_an_rsa_key_is_refused_for_an_es256_header() -> None:
    # An RSA signature under an ES256 header, offered with the RSA key that made it.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    signing_input, data = raw_token({"alg": "ES256", "kid": "k"}, claims(ISSUER, AUDIENCE))
    signature = private.sign(data, padding.PKCS1v15(), hashes.SHA256())

    assert refusal(private.public_key(), f"{signing_input}.{b64(signature)}") == NOT_DECODED


def test_a_p256_signature_is_refused_with_a_p384_key() -> None:
    token = ec_key("ES256").sign(claims(ISSUER, AUDIENCE))
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key()

    assert refusal(p384, token) == NOT_DECODED


def test_an_es384_header_is_refused_with_a_p256_key_that_made_its_signature() -> None:
    # A curve mismatch is refused before any signature arithmetic, whichever way round.
    private = ec.generate_private_key(ec.SECP256R1())
    signing_input, data = raw_token({"alg": "ES384", "kid": "k"}, claims(ISSUER, AUDIENCE))
    r, s = decode_dss_signature(private.sign(data, ec.ECDSA(hashes.SHA384())))
    signature = r.to_bytes(48, "big") + s.to_bytes(48, "big")

    assert refusal(private.public_key(), f"{signing_input}.{b64(signature)}") == NOT_DECODED


KEY_TYPES = {
    "rsa": lambda: rsa_key("RS256").private.public_key(),
    "p256": lambda: ec.generate_private_key(ec.SECP256R1()).public_key(),
    "p384": lambda: ec.generate_private_key(ec.SECP384R1()).public_key(),
    "p521": lambda: ec.generate_private_key(ec.SECP521R1()).public_key(),
    "ed25519": lambda: ed25519.Ed25519PrivateKey.generate().public_key(),
    "ed448": lambda: ed448.Ed448PrivateKey.generate().public_key(),
    "rsa-private": lambda: rsa_key("RS256").private,
    "not-a-key": lambda: b"-----BEGIN PUBLIC KEY-----",
}
FITS = {
    **{alg: {"rsa"} for alg in RSA_ALGORITHMS},
    "ES256": {"p256"},
    "ES384": {"p384"},
    "ES512": {"p521"},
    "EdDSA-Ed25519": {"ed25519", "ed448"},
    "EdDSA-Ed448": {"ed25519", "ed448"},
}


@pytest.mark.parametrize(
    ("name", "key_type"),
    [(name, key_type) for name in SIGNERS for key_type in KEY_TYPES if key_type not in FITS[name]],
)
def test_a_key_of_another_type_is_refused_never_tried(
    made: dict[str, SigningKey], name: str, key_type: str
) -> None:
    token = made[name].sign(claims(ISSUER, AUDIENCE))

    assert refusal(KEY_TYPES[key_type](), token) == NOT_DECODED


# The verifier's own contract


def test_an_unsupported_algorithm_in_the_rules_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match="HS256"):
        verifier(None, frozenset({"RS256", "HS256"}))


def test_an_alg_outside_the_issuers_rules_is_refused_before_any_key() -> None:
    signer = ec_key("ES256")
    token = signer.sign(claims(ISSUER, AUDIENCE))
    with pytest.raises(RpcError) as caught:
        asyncio.run(verifier(None, frozenset({"RS256"})).verify(token, peek(token)))
    assert caught.value.log_detail == "the token's alg is not one this issuer may use"


def test_the_peek_must_be_of_the_token_verified() -> None:
    signer = rsa_key("RS256")
    token = signer.sign(claims(ISSUER, AUDIENCE, sub="alice"))
    other = signer.sign(claims(ISSUER, AUDIENCE, sub="mallory"))

    with pytest.raises(ValueError, match="not the peek"):
        asyncio.run(verifier(prepared_key(signer)).verify(token, peek(other)))


def test_the_token_stays_out_of_the_peeks_repr() -> None:
    token = rsa_key("RS256").sign(claims(ISSUER, AUDIENCE))
    unverified = peek(token)

    text = repr(unverified)

    assert isinstance(unverified, UnverifiedJwt)
    assert all(segment not in text for segment in token.split(".")[1:])
