"""parse_jwks: which keys a JWKS document yields, for which algorithms, and which it skips."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import NameOID
from jwt.algorithms import RSAAlgorithm

from gateway.authn.keys import RSA_ALGORITHMS, JwksError, VerificationKey, parse_jwks
from gateway.testing.tokens import SigningKey, claims, ec_key, ed_key, jwks, rsa_key

SOURCE = "https://idp.test"
AUDIENCE = "opsgate-test"
PUBLIC_KEY_TYPES = (
    rsa.RSAPublicKey,
    ec.EllipticCurvePublicKey,
    ed25519.Ed25519PublicKey,
    ed448.Ed448PublicKey,
)


def p521_key() -> SigningKey:
    return SigningKey("p521", "ES512", ec.generate_private_key(ec.SECP521R1()))


def ed448_key() -> SigningKey:
    return SigningKey("ed448", "EdDSA", ed448.Ed448PrivateKey.generate())  # type: ignore[arg-type]


def without_alg(jwk: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in jwk.items() if name != "alg"}


def assert_verifies(key: VerificationKey, signer: SigningKey, alg: str) -> None:
    """A real token signed with `alg` verifies with the prepared key, and only with it."""
    token = dataclasses.replace(signer, algorithm=alg).sign(claims(SOURCE, AUDIENCE))
    decoded = jwt.decode(token, key.key, algorithms=[alg], audience=AUDIENCE)
    assert decoded["iss"] == SOURCE


@pytest.mark.parametrize(
    ("make", "restrict", "expected"),
    [
        (lambda: rsa_key("RS256"), True, {"RS256"}),
        (lambda: rsa_key("PS384"), True, {"PS384"}),
        (lambda: rsa_key("RS256"), False, set(RSA_ALGORITHMS)),
        (lambda: ec_key("ES256"), True, {"ES256"}),
        (lambda: ec_key("ES384"), False, {"ES384"}),
        (p521_key, False, {"ES512"}),
        (ed_key, True, {"EdDSA"}),
        (ed448_key, False, {"EdDSA"}),
    ],
    ids=["rsa-RS256", "rsa-PS384", "rsa-any", "ec-P256", "ec-P384", "ec-P521", "ed25519", "ed448"],
)
def test_parses_signature_keys_with_their_algorithms(
    make: Callable[[], SigningKey], restrict: bool, expected: set[str]
) -> None:
    signer = make()
    jwk = signer.jwk if restrict else without_alg(signer.jwk)

    keys = parse_jwks({"keys": [jwk]}, SOURCE)

    assert list(keys) == [signer.kid]
    key = keys[signer.kid]
    assert key.kid == signer.kid
    assert key.algorithms == expected
    assert not any(alg.startswith("HS") for alg in key.algorithms)
    assert isinstance(key.key, PUBLIC_KEY_TYPES)  # prepared once, not a dict parsed per call
    for alg in sorted(expected):
        assert_verifies(key, signer, alg)


def _private_rsa_jwk() -> dict[str, Any]:
    private = rsa_key().private
    assert isinstance(private, rsa.RSAPrivateKey)
    return {**json.loads(RSAAlgorithm.to_jwk(private)), "kid": "private", "alg": "RS256"}


def _with(make: Callable[[], SigningKey], **changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: {**make().jwk, **changes}


def _without(make: Callable[[], SigningKey], field: str) -> Callable[[], dict[str, Any]]:
    return lambda: {name: value for name, value in make().jwk.items() if name != field}


@pytest.mark.parametrize(
    ("make_bad", "reason"),
    [
        (lambda: {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac", "alg": "HS256"}, "symmetric"),
        (_private_rsa_jwk, "private key"),
        (_with(rsa_key, use="enc"), "use is 'enc'"),
        (_with(rsa_key, key_ops=["encrypt"]), "key_ops"),
        (_with(rsa_key, alg="HS256"), "does not fit"),
        (_with(ec_key, alg="ES384"), "does not fit"),
        (_with(rsa_key, alg="RSA-OAEP"), "does not fit"),
        (_with(rsa_key, alg=["RS256"]), "does not fit"),
        (lambda: {"kty": "XYZ", "kid": "odd"}, "unsupported kty"),
        (_with(ec_key, crv="secp256k1"), "unsupported EC curve"),
        (lambda: {"kty": "OKP", "crv": "X25519", "x": "AAAA", "kid": "x"}, "unsupported OKP"),
        (_with(ed_key, crv=["Ed25519"]), "unsupported OKP"),
        (_without(rsa_key, "n"), "malformed"),
        (_with(ec_key, x="AAAA"), "malformed"),
        (_with(rsa_key, kid=7), "kid is not a string"),
        (lambda: "a string", "not a JSON object"),
    ],
    ids=[
        "oct",
        "private",
        "use-enc",
        "key-ops-encrypt",
        "rsa-as-HS256",
        "ec-alg-mismatch",
        "rsa-enc-alg",
        "alg-not-a-string",
        "unknown-kty",
        "ec-secp256k1",
        "okp-X25519",
        "crv-not-a-string",
        "rsa-without-n",
        "ec-bad-point",
        "kid-not-string",
        "not-an-object",
    ],
)
def test_unusable_keys_are_skipped_with_a_warning(
    make_bad: Callable[[], Any], reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    good = ec_key("ES256")
    caplog.set_level(logging.WARNING, logger="opsgate.authn")

    keys = parse_jwks({"keys": [make_bad(), good.jwk]}, SOURCE)

    assert list(keys) == [good.kid]
    warnings = [r.getMessage() for r in caplog.records if r.name == "opsgate.authn"]
    assert len(warnings) == 1
    assert SOURCE in warnings[0]
    assert reason in warnings[0]


@pytest.mark.parametrize(
    "document",
    [
        None,
        "keys",
        [{"kty": "RSA"}],
        {"issuer": SOURCE},
        {"keys": {"kty": "RSA"}},
        {"keys": []},
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"}]},
        {"kid": "not a certificate"},
    ],
    ids=[
        "null",
        "string",
        "list",
        "no-keys",
        "keys-not-a-list",
        "empty",
        "nothing-usable",
        "certs-without-pem",
    ],
)
def test_unusable_documents_raise_naming_the_source(document: Any) -> None:
    with pytest.raises(JwksError, match=SOURCE):
        parse_jwks(document, SOURCE)


def test_a_key_without_kid_is_kept_only_when_it_is_the_only_key() -> None:
    alone = ec_key()
    alone_jwk = {k: v for k, v in alone.jwk.items() if k != "kid"}
    named = ec_key()

    assert list(parse_jwks({"keys": [alone_jwk]}, SOURCE)) == [None]
    assert list(parse_jwks({"keys": [alone_jwk, named.jwk]}, SOURCE)) == [named.kid]


def test_a_repeated_kid_keeps_the_first_key() -> None:
    first = ec_key("ES256", kid="same")
    second = rsa_key("RS256", kid="same")

    keys = parse_jwks(jwks(first, second), SOURCE)

    assert keys["same"].algorithms == {"ES256"}
    assert_verifies(keys["same"], first, "ES256")


def _certificate(private: Any, name: str) -> str:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_google_x509_certs_are_rsa_keys_for_rs256_only(caplog: pytest.LogCaptureFixture) -> None:
    signer = rsa_key("RS256", kid="google-1")
    document = {
        "google-1": _certificate(signer.private, "google"),
        "ec-cert": _certificate(ec_key().private, "ec"),
        "broken": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    }
    caplog.set_level(logging.WARNING, logger="opsgate.authn")

    keys = parse_jwks(document, SOURCE)

    assert list(keys) == ["google-1"]
    assert keys["google-1"].algorithms == {"RS256"}
    assert_verifies(keys["google-1"], signer, "RS256")
    skipped = " ".join(r.getMessage() for r in caplog.records if r.name == "opsgate.authn")
    assert "'ec-cert'" in skipped
    assert "'broken'" in skipped
