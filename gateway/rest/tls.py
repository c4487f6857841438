"""TLS for the REST door from the gateway's own `tls` settings, and the peer's auth context."""

from __future__ import annotations

import ssl
from typing import Any

from gateway.authn.certificates import PEM_KEY
from gateway.config import ServerTls
from gateway.errors import ConfigError


def server_ssl_context(tls: ServerTls) -> ssl.SSLContext:
    """The same certificate, key and client-certificate rule as the gRPC listener.

    As with grpc.ssl_server_credentials, a client certificate is requested (and must verify
    against client_ca_file) only when require_client_cert is set.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        if tls.require_client_cert and tls.client_ca_file is not None:
            context.load_verify_locations(cafile=tls.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError("<tls>", "tls", f"cannot set up TLS for the REST door: {exc}") from exc
    return context


def peer_auth_context(ssl_object: Any) -> dict[str, list[bytes]]:
    """What grpc's auth_context() holds for a TLS peer: its verified certificate as PEM."""
    if ssl_object is None:
        return {}
    context: dict[str, list[bytes]] = {"transport_security_type": [b"ssl"]}
    der = ssl_object.getpeercert(binary_form=True)
    if der:
        context[PEM_KEY] = [ssl.DER_cert_to_PEM_cert(der).encode("ascii")]
    return context
