"""Rate limits, client-certificate identities and trace ids, through the real gateway."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1
from google.rpc import error_details_pb2

from gateway.authn.settings import CertificateIdentity, ClientCertificateConfig
from gateway.config import RateLimitSettings
from gateway.outcome import MemorySink
from gateway.reference_upstream import ReferenceUpstream
from gateway.reference_upstream.seed import DONE_OPERATION, STAGING_OPERATION
from gateway.server import Gateway, start_gateway
from gateway.testing.loop import LoopThread
from tests.support.bearer import with_bearer
from tests.support.certs import make_pki, requiring_client_certs
from tests.support.stack import EXAMPLE_POLICY, Identity, gateway_settings

DEPLOYER_SPIFFE = "spiffe://acme.example/ns/ci/sa/deployer"
OTHER_SPIFFE = "spiffe://acme.example/ns/ci/sa/intruder"


@pytest.fixture
def started(loop: LoopThread) -> Iterator[list[Gateway]]:
    gateways: list[Gateway] = []
    yield gateways
    for gateway in gateways:
        loop.run(gateway.stop(0))


def _details(err: core_exceptions.GoogleAPICallError) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for detail in err.details:
        if isinstance(detail, error_details_pb2.RetryInfo):
            found["retry"] = detail.retry_delay.ToTimedelta().total_seconds()
    return found


def test_a_burst_past_the_limit_is_refused_before_the_upstream(
    loop: LoopThread, upstream: ReferenceUpstream, identity: Identity, started: list[Gateway]
) -> None:
    settings = dataclasses.replace(
        gateway_settings(upstream.address, identity, EXAMPLE_POLICY),
        rate_limits=(RateLimitSettings(name="per-principal", rate_per_s=0.5, burst=5),),
    )
    sink = MemorySink()
    gateway = loop.run(start_gateway(settings, sink=sink))
    started.append(gateway)
    bob = identity.token(email="bob@acme.example")
    alice = identity.token(email="alice@acme.example")
    channel = grpc.insecure_channel(gateway.address)
    client = operations_v1.OperationsClient(with_bearer(channel, bob))
    before = len(upstream.calls())
    for _ in range(5):
        client.get_operation(DONE_OPERATION, retry=None, timeout=10)
    refused = 0
    for _ in range(10):
        with pytest.raises(core_exceptions.TooManyRequests) as err:
            client.get_operation(DONE_OPERATION, retry=None, timeout=10)
        refused += 1
        assert err.value.reason == "RATE_LIMIT_EXCEEDED"
        assert err.value.metadata == {"limit": "per-principal"}
        assert 0 < _details(err.value)["retry"] <= 2.0
    assert len(upstream.calls()) - before == 5  # the upstream saw none of the refused calls
    # Another principal has a bucket of its own.
    operations_v1.OperationsClient(with_bearer(channel, alice)).get_operation(
        DONE_OPERATION, retry=None, timeout=10
    )
    codes = [o.code.name for o in sink.outcomes()]
    assert codes.count("RESOURCE_EXHAUSTED") == refused  # each refusal audited
    channel.close()


def test_client_certificate_identities(
    loop: LoopThread,
    upstream: ReferenceUpstream,
    identity: Identity,
    tmp_path: Path,
    started: list[Gateway],
) -> None:
    pki = make_pki(
        tmp_path,
        client_sans=[x509.UniformResourceIdentifier(DEPLOYER_SPIFFE)],
        other_clients=[
            [x509.UniformResourceIdentifier(OTHER_SPIFFE)],
            [x509.UniformResourceIdentifier("spiffe://acme.example/ns/ci/sa/unmapped")],
        ],
    )
    base = gateway_settings(upstream.address, identity, EXAMPLE_POLICY)
    settings = dataclasses.replace(
        base,
        tls=requiring_client_certs(pki),
        authentication=dataclasses.replace(
            base.authentication,
            client_certificates=ClientCertificateConfig(
                identities=(
                    CertificateIdentity(
                        principal="serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com",
                        san_uri=DEPLOYER_SPIFFE,
                    ),
                    CertificateIdentity(
                        principal="principal://acme.example/ns/ci/sa/intruder",
                        san_uri=OTHER_SPIFFE,
                    ),
                ),
                require_token=False,
            ),
        ),
    )
    gateway = loop.run(start_gateway(settings))
    started.append(gateway)

    def client(pair: Any) -> tuple[grpc.Channel, operations_v1.OperationsClient]:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pki.ca_file.read_bytes(),
            private_key=pair.key_file.read_bytes(),
            certificate_chain=pair.cert_file.read_bytes(),
        )
        channel = grpc.secure_channel(f"localhost:{gateway.port}", credentials)
        return channel, operations_v1.OperationsClient(channel)

    deployer_channel, deployer = client(pki.client)
    op = deployer.get_operation(DONE_OPERATION, retry=None, timeout=10)  # bound in the policy
    assert op.name == DONE_OPERATION
    assert dict(upstream.calls()[-1].metadata)["x-opsgate-principal"] == (
        "serviceAccount:ci-deployer@acme-prod.iam.gserviceaccount.com"
    )
    intruder_channel, intruder = client(pki.others[0])
    with pytest.raises(core_exceptions.PermissionDenied):  # mapped, but bound to nothing
        intruder.get_operation(STAGING_OPERATION, retry=None, timeout=10)
    unmapped_channel, unmapped = client(pki.others[1])
    with pytest.raises(core_exceptions.Unauthenticated):  # no mapping and no token
        unmapped.get_operation(DONE_OPERATION, retry=None, timeout=10)
    for channel in (deployer_channel, intruder_channel, unmapped_channel):
        channel.close()


def test_traceparent_relayed_and_recorded(
    loop: LoopThread, upstream: ReferenceUpstream, identity: Identity, started: list[Gateway]
) -> None:
    sink = MemorySink()
    settings = gateway_settings(upstream.address, identity, EXAMPLE_POLICY)
    gateway = loop.run(start_gateway(settings, sink=sink))
    started.append(gateway)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    with grpc.insecure_channel(gateway.address) as channel:
        client = operations_v1.OperationsClient(
            with_bearer(channel, identity.token(email="alice@acme.example"))
        )
        client.get_operation(
            DONE_OPERATION, retry=None, timeout=10, metadata=[("traceparent", traceparent)]
        )
    assert dict(upstream.calls()[-1].metadata)["traceparent"] == traceparent  # unchanged
    event = gateway.pipeline.audit.event(sink.outcomes()[-1])
    assert event.trace == "projects/acme-prod/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert event.span_id == "00f067aa0ba902b7"
