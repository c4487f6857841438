"""Principals from verified client certificates: a SPIFFE URI or email SAN mapped in config."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

from cachetools import LRUCache
from cryptography import x509

from gateway.authn.principal import Principal
from gateway.authn.settings import ClientCertificateConfig
from gateway.policy.members import caller_member_key, canonical_identity

PEM_KEY = "x509_pem_cert"  # grpc's auth_context property holding the verified peer certificate


def certificate_sans(pem: bytes) -> tuple[str, ...]:
    """'uri:...' and 'email:...' entries of a certificate's subjectAltName."""
    cert = x509.load_pem_x509_certificate(pem)
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    uris = (f"uri:{v}" for v in sans.get_values_for_type(x509.UniformResourceIdentifier))
    emails = (f"email:{canonical_identity(v)}" for v in sans.get_values_for_type(x509.RFC822Name))
    return (*uris, *emails)


class CertificateIdentities:
    """Looks up the principal of a call's client certificate; certificates are parsed once."""

    def __init__(self, config: ClientCertificateConfig) -> None:
        self.require_token = config.require_token
        self._by_san: dict[str, str] = {}
        for identity in config.identities:
            # The member in canonical form, as the identity header and audit records show it.
            member = caller_member_key(identity.principal)
            if identity.san_uri is not None:
                self._by_san[f"uri:{identity.san_uri}"] = member
            if identity.san_email is not None:
                self._by_san[f"email:{canonical_identity(identity.san_email)}"] = member
        # Certificate digest -> its principal (None: no mapped SAN). Parsed once per
        # certificate; one Principal per certificate, so its policy Caller is built once too.
        self._principals: LRUCache[bytes, tuple[Principal | None]] = LRUCache(maxsize=10_000)

    def principal_for(self, auth_context: Mapping[str, Sequence[bytes]]) -> Principal | None:
        """The mapped principal of the verified peer certificate, or None (no cert, no mapping)."""
        pems = auth_context.get(PEM_KEY) or ()
        if not pems:
            return None
        pem = pems[0]
        digest = hashlib.sha256(pem).digest()
        found = self._principals.get(digest)
        if found is None:
            found = self._principals[digest] = (self._map(certificate_sans(pem)),)
        return found[0]

    def _map(self, sans: tuple[str, ...]) -> Principal | None:
        for san in sans:
            member = self._by_san.get(san)
            if member is not None:
                value = san.partition(":")[2]
                email = (
                    member.partition(":")[2]
                    if member.startswith(("serviceAccount:", "user:"))
                    else None
                )
                return Principal(
                    member=member,
                    issuer="x509",
                    subject=value,
                    email=email,
                    email_verified=email is not None,
                    token_kind="client_certificate",
                )
        return None
