"""TLS on the gateway's listener, and TLS with client certificates (mTLS) to the upstream."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1

from gateway.config import ServerTls, UpstreamTls
from gateway.reference_upstream import ReferenceUpstream, start_reference_upstream
from gateway.server import server_credentials, start_gateway
from gateway.testing.loop import LoopThread
from tests.support.bearer import with_bearer
from tests.support.certs import Pki, make_pki, requiring_client_certs
from tests.support.stack import Identity, gateway_settings

NAME = "projects/acme/locations/us-central1/operations/tls"


@pytest.fixture
def mtls_upstream(loop: LoopThread, tmp_path: Path) -> Iterator[tuple[Pki, ReferenceUpstream]]:
    """A reference upstream that demands client certificates, and the PKI behind it."""
    pki = make_pki(tmp_path)
    credentials = server_credentials(requiring_client_certs(pki))
    upstream = loop.run(
        start_reference_upstream("127.0.0.1:0", seed=False, server_credentials=credentials)
    )
    upstream.store.create(NAME)
    try:
        yield pki, upstream
    finally:
        loop.run(upstream.stop(0))


def test_tls_listener_and_mtls_upstream(
    loop: LoopThread, mtls_upstream: tuple[Pki, ReferenceUpstream], identity: Identity
) -> None:
    pki, upstream = mtls_upstream
    base = gateway_settings(f"localhost:{upstream.port}", identity)
    settings = dataclasses.replace(
        base,
        tls=ServerTls(cert_file=pki.server.cert_file, key_file=pki.server.key_file),
        upstream=dataclasses.replace(
            base.upstream,
            tls=UpstreamTls(
                ca_file=pki.ca_file, cert_file=pki.client.cert_file, key_file=pki.client.key_file
            ),
        ),
    )
    gateway = loop.run(start_gateway(settings))
    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca_file.read_bytes())
    try:
        with grpc.secure_channel(f"localhost:{gateway.port}", credentials) as channel:
            client = operations_v1.OperationsClient(with_bearer(channel, identity.token()))
            op = client.get_operation(NAME, timeout=10)
            assert op.name == NAME
        with (
            grpc.insecure_channel(f"localhost:{gateway.port}") as plaintext,
            pytest.raises(core_exceptions.ServiceUnavailable),
        ):
            # A plaintext client cannot talk to the TLS listener at all.
            operations_v1.OperationsClient(plaintext).get_operation(NAME, timeout=5, retry=None)
    finally:
        loop.run(gateway.stop(0))


def test_upstream_refuses_a_gateway_without_client_certificate(
    loop: LoopThread, mtls_upstream: tuple[Pki, ReferenceUpstream], identity: Identity
) -> None:
    pki, upstream = mtls_upstream
    base = gateway_settings(f"localhost:{upstream.port}", identity)
    settings = dataclasses.replace(
        base, upstream=dataclasses.replace(base.upstream, tls=UpstreamTls(ca_file=pki.ca_file))
    )
    gateway = loop.run(start_gateway(settings))
    try:
        with (
            grpc.insecure_channel(gateway.address) as channel,
            pytest.raises(core_exceptions.ServiceUnavailable) as err,
        ):
            client = operations_v1.OperationsClient(with_bearer(channel, identity.token()))
            client.get_operation(NAME, timeout=10, retry=None)
        assert err.value.reason == "UPSTREAM_UNAVAILABLE"
        assert not upstream.calls()
    finally:
        loop.run(gateway.stop(0))
