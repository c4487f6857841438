"""Issue 15 through the real gateway: no door passes on a header the gateway sets, and the audit
record of a call its deadline ended says DEADLINE_EXCEEDED."""

from __future__ import annotations

import base64
import dataclasses
import http.client
import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.audit.query import read_records
from gateway.config import AuditFileSettings, AuditSettings, Settings
from gateway.configschema import OutputFile
from gateway.headers import DEFAULT_IDENTITY_HEADER, header_family
from gateway.library import OpsgateChain
from gateway.rest.settings import RestSettings
from gateway.server import Gateway, start_gateway
from gateway.testing.loop import LoopThread
from tests.support.probe_upstream import TRAILING, Metadata, ProbeServicer, probe_upstream
from tests.support.stack import Identity, gateway_settings

FAST = "projects/acme/locations/l/operations/fast"
SLOW = "projects/acme/locations/l/operations/slow"  # the probe holds it for 30 s
CALLER = "user:pat@acme.example"
CUSTOM_IDENTITY = "x-team-principal"
MARK = "4242.5"  # every smuggled value; a valid X-Server-Timeout, so the REST door takes it
BINARY_MARK = MARK.encode()
# Anyone may read under projects/acme: these tests are about transport, not policy. The default
# profile has the REST door's paths.
VIEWERS = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [allAuthenticatedUsers]
"""


def _token(identity: Identity) -> str:
    return identity.token(email="pat@acme.example")


def _audit_file(path: Path) -> AuditSettings:
    return AuditSettings(sink="file", file=AuditFileSettings(path=OutputFile(path), fsync="never"))


def _viewers(directory: Path) -> Path:
    path = directory / "viewers.yaml"
    path.write_text(VIEWERS)
    return path


# -- 6. No header the gateway sets can be smuggled, on any door

# How a caller may spell a header so that a lenient server or proxy reads it as that header.
GRPC_STYLES: dict[str, Callable[[str], str]] = {
    "exact": lambda h: h,
    "underscore": lambda h: h.replace("-", "_"),
    "bin": lambda h: f"{h}-bin",
    "underscore-bin": lambda h: h.replace("-", "_") + "_bin",
    "mixed-bin-bin": lambda h: h.replace("-", "_", 1) + "-bin_bin",
}
# HTTP header names are case-insensitive; gRPC metadata keys arrive lower-case.
REST_STYLES: dict[str, Callable[[str], str]] = {
    **GRPC_STYLES,
    "upper": str.upper,
    "title-underscore-bin": lambda h: h.title().replace("-", "_") + "-Bin",
}
# The headers the gateway sets ("identity" is the configured one) ...
OWN_HEADERS = {
    "identity": None,
    "default-identity": DEFAULT_IDENTITY_HEADER,
    "opsgate-namespace": "x-opsgate-policy-etag",
    "request-id": "x-request-id",
    "server-timeout": "x-server-timeout",
}
# ... and other spellings of those whose exact key is the caller's own (its credential, and
# what the transport sets afresh on the upstream call).
OTHER_SPELLINGS = {
    "authorization-bin": "authorization-bin",
    "authorization-underscore-bin": "authorization_bin",
    "user-agent-underscore": "user_agent",
    "host-bin": "host-bin",
    "grpc-timeout-underscore": "grpc_timeout",
    "te-bin": "te-bin",
    "content-type-underscore": "content_type",
}


def _variants(styles: dict[str, Callable[[str], str]]) -> list[Any]:
    rows = [
        pytest.param(header, style, id=f"{name}-{style}")
        for name, header in OWN_HEADERS.items()
        for style in styles
    ]
    rows += [pytest.param(key, None, id=name) for name, key in OTHER_SPELLINGS.items()]
    return rows


def _spelt(header: str | None, style: str | None, identity_header: str) -> str:
    key = header or identity_header
    return key if style is None else REST_STYLES[style](key)


def _grpc_sent(key: str) -> tuple[str, str | bytes]:
    return key, BINARY_MARK if key.endswith("bin") else MARK


def _rest_sent(key: str) -> tuple[str, str]:
    """Binary headers are base64 over HTTP, as gRPC's own HTTP/2 encoding has them."""
    return key, base64.b64encode(BINARY_MARK).decode() if key.lower().endswith("bin") else MARK


def _assert_nothing_smuggled(received: Metadata, identity_header: str, *, proxied: bool) -> None:
    """The mark reached no one, and the only identity the recipient sees is the gateway's."""
    assert not [(k, v) for k, v in received if MARK in (v if isinstance(v, str) else v.decode())]
    identities = {header_family(identity_header), DEFAULT_IDENTITY_HEADER}
    claimed = [(k, v) for k, v in received if header_family(k) in identities]
    assert claimed == ([(identity_header, CALLER)] if proxied else [])
    assert not [k for k, _ in received if header_family(k) == "x-request-id"]


@dataclass
class Doors:
    """A gateway (gRPC proxy and REST door) and a library-mode server, each before a probe."""

    identity_header: str
    token: str
    gateway: Gateway
    upstream: ProbeServicer
    library_address: str
    servicer: ProbeServicer


def _library_config(identity: Identity, directory: Path, identity_header: str) -> Path:
    path = directory / "library.yaml"
    path.write_text(
        identity.issuer_yaml()
        + f"  identity_header: {identity_header}\n"
        + identity.policy_yaml(_viewers(directory))
        + f"audit:\n  sink: file\n  file:\n    path: {directory / 'library-audit.log'}\n"
    )
    return path


@pytest.fixture(
    scope="module", params=[DEFAULT_IDENTITY_HEADER, CUSTOM_IDENTITY], ids=["default", "custom"]
)
def doors(
    request: pytest.FixtureRequest,
    loop: LoopThread,
    identity: Identity,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Doors]:
    identity_header: str = request.param
    directory = tmp_path_factory.mktemp("doors")
    upstream_cm = probe_upstream()
    address, upstream = loop.run(upstream_cm.__aenter__())
    settings = gateway_settings(address, identity, _viewers(directory))
    settings = dataclasses.replace(
        settings,
        rest=RestSettings("127.0.0.1:0"),
        authentication=dataclasses.replace(
            settings.authentication, identity_header=identity_header
        ),
        audit=_audit_file(directory / "gateway-audit.log"),
    )
    gateway = loop.run(start_gateway(settings))
    chain = OpsgateChain.from_config(_library_config(identity, directory, identity_header))

    async def start_library() -> tuple[grpc.aio.Server, ProbeServicer, int]:
        servicer = ProbeServicer()
        server = grpc.aio.server(interceptors=chain.interceptors)
        operations_pb2_grpc.add_OperationsServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        await chain.prefetch()
        return server, servicer, port

    library, servicer, port = loop.run(start_library())
    try:
        yield Doors(
            identity_header,
            _token(identity),
            gateway,
            upstream,
            f"127.0.0.1:{port}",
            servicer,
        )
    finally:
        loop.run(library.stop(0))
        chain.close(10)
        loop.run(gateway.stop(0))
        loop.run(upstream_cm.__aexit__(None, None, None))


def _grpc_get(address: str, token: str, extra: list[tuple[str, str | bytes]]) -> Metadata:
    """GetOperation over gRPC; the answer's trailing metadata."""
    with grpc.insecure_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        _, call = stub.GetOperation.with_call(
            operations_pb2.GetOperationRequest(name=FAST),
            metadata=[("authorization", f"Bearer {token}"), *extra],
            timeout=10,
        )
        return tuple(call.trailing_metadata() or ())


@dataclass
class HttpReply:
    status: int
    headers: list[tuple[str, str]]


def _rest_request(
    address: str, path: str, headers: list[tuple[str, str]], timeout: float = 10
) -> HttpReply:
    """One HTTP request, its header names sent exactly as given (urllib would recase them)."""
    host, port = address.rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.putrequest("GET", path)
        for key, value in headers:
            connection.putheader(key, value)
        connection.endheaders()
        response = connection.getresponse()
        response.read()
        return HttpReply(response.status, response.getheaders())
    finally:
        connection.close()


@pytest.mark.parametrize(("header", "style"), _variants(GRPC_STYLES))
def test_grpc_proxy_drops_every_spelling_of_a_gateway_header(
    doors: Doors, header: str | None, style: str | None
) -> None:
    key = _spelt(header, style, doors.identity_header)
    _grpc_get(doors.gateway.address, doors.token, [_grpc_sent(key)])
    _assert_nothing_smuggled(doors.upstream.metadata[-1], doors.identity_header, proxied=True)


@pytest.mark.parametrize(("header", "style"), _variants(GRPC_STYLES))
def test_library_mode_servicer_never_sees_a_gateway_header(
    doors: Doors, header: str | None, style: str | None
) -> None:
    key = _spelt(header, style, doors.identity_header)
    _grpc_get(doors.library_address, doors.token, [_grpc_sent(key)])
    _assert_nothing_smuggled(doors.servicer.metadata[-1], doors.identity_header, proxied=False)


@pytest.mark.parametrize(("header", "style"), _variants(REST_STYLES))
def test_rest_door_drops_every_spelling_of_a_gateway_header(
    doors: Doors, header: str | None, style: str | None
) -> None:
    assert doors.gateway.rest is not None
    key = _spelt(header, style, doors.identity_header)
    headers = [("Authorization", f"Bearer {doors.token}"), _rest_sent(key)]
    reply = _rest_request(doors.gateway.rest.address, f"/v1/{FAST}", headers)
    assert reply.status == 200
    _assert_nothing_smuggled(doors.upstream.metadata[-1], doors.identity_header, proxied=True)


def test_the_callers_host_header_never_reaches_the_upstream(doors: Doors) -> None:
    _grpc_get(doors.gateway.address, doors.token, [("host", "internal.example")])
    assert not [k for k, _ in doors.upstream.metadata[-1] if header_family(k) == "host"]


@pytest.mark.parametrize(
    "upstream_ids",
    [(("x-request-id", "upstream"),), (("x_request_id", "upstream"), ("x-request-id-bin", b"u"))],
    ids=["exact", "other-spellings"],
)
def test_the_answer_carries_the_gateways_request_id_only(
    doors: Doors, upstream_ids: Metadata
) -> None:
    """An upstream's own x-request-id would shadow the one the audit record has."""
    assert doors.gateway.rest is not None
    doors.upstream.trailing = (*TRAILING, *upstream_ids)
    try:
        trailing = _grpc_get(doors.gateway.address, doors.token, [])
        rest = _rest_request(
            doors.gateway.rest.address, f"/v1/{FAST}", [("Authorization", f"Bearer {doors.token}")]
        )
    finally:
        doors.upstream.trailing = TRAILING
    ids = [v for k, v in trailing if header_family(k) == "x-request-id"]
    assert len(ids) == 1 and ids[0] != "upstream"
    assert [k for k, _ in trailing if k.startswith("x-upstream-trailing")]  # the rest relayed
    rest_ids = [v for k, v in rest.headers if header_family(k) == "x-request-id"]
    assert len(rest_ids) == 1 and rest_ids[0] != "upstream"


# -- 8. The audit record names the deadline when the deadline ended the call

CONCURRENT = 60
SHORT_DEADLINE_S = 0.3


@dataclass
class Audited:
    gateway: Gateway
    upstream: ProbeServicer
    audit_file: Path
    token: str

    def codes(self, expected: int) -> list[int]:
        """The status codes of the first `expected` audit records, once they are all written."""
        assert self.gateway.pipeline.audit.writer.flush(10)
        _wait_for(lambda: len(list(read_records([self.audit_file]))) >= expected)
        records = list(read_records([self.audit_file]))
        assert len(records) == expected
        return [r["protoPayload"]["status"].get("code", 0) for r in records]


def _audited_settings(address: str, identity: Identity, audit_file: Path) -> Settings:
    settings = gateway_settings(address, identity, _viewers(audit_file.parent))
    return dataclasses.replace(
        settings, rest=RestSettings("127.0.0.1:0"), audit=_audit_file(audit_file)
    )


@pytest.fixture
def audited(loop: LoopThread, identity: Identity, tmp_path: Path) -> Iterator[Audited]:
    upstream_cm = probe_upstream()
    address, upstream = loop.run(upstream_cm.__aenter__())
    audit_file = tmp_path / "audit.log"
    gateway = loop.run(start_gateway(_audited_settings(address, identity, audit_file)))
    try:
        yield Audited(gateway, upstream, audit_file, _token(identity))
    finally:
        loop.run(gateway.stop(0))
        loop.run(upstream_cm.__aexit__(None, None, None))


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_grpc_calls_whose_deadline_expires_are_recorded_deadline_exceeded(
    audited: Audited,
) -> None:
    """Many at once, so that some clients' resets reach the gateway while its own copy of the
    deadline (which starts later) still shows a few ms: those were recorded CANCELLED."""
    metadata = [("authorization", f"Bearer {audited.token}")]
    request = operations_pb2.GetOperationRequest(name=SLOW)

    with grpc.insecure_channel(audited.gateway.address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)

        def call(_: int) -> grpc.StatusCode:
            try:
                stub.GetOperation(request, metadata=metadata, timeout=SHORT_DEADLINE_S)
            except grpc.RpcError as err:
                return err.code()
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(CONCURRENT) as pool:
            seen = list(pool.map(call, range(CONCURRENT)))
    assert set(seen) == {grpc.StatusCode.DEADLINE_EXCEEDED}
    assert audited.codes(CONCURRENT) == [grpc.StatusCode.DEADLINE_EXCEEDED.value[0]] * CONCURRENT


def test_rest_calls_whose_deadline_expires_are_recorded_deadline_exceeded(
    audited: Audited,
) -> None:
    """Each client gives up (and disconnects) at its X-Server-Timeout, racing the door's own
    timer for that deadline, which starts a little later."""
    assert audited.gateway.rest is not None
    address = audited.gateway.rest.address
    headers = [
        ("Authorization", f"Bearer {audited.token}"),
        ("X-Server-Timeout", str(SHORT_DEADLINE_S)),
    ]

    def call(_: int) -> int | None:
        try:
            return _rest_request(address, f"/v1/{SLOW}", headers, timeout=SHORT_DEADLINE_S).status
        except (TimeoutError, OSError):
            return None  # the client gave up first

    with ThreadPoolExecutor(CONCURRENT // 2) as pool:
        seen = list(pool.map(call, range(CONCURRENT // 2)))
    assert set(seen) <= {504, None}
    expected = [grpc.StatusCode.DEADLINE_EXCEEDED.value[0]] * (CONCURRENT // 2)
    assert audited.codes(CONCURRENT // 2) == expected


def test_calls_cancelled_well_before_their_deadline_stay_cancelled(audited: Audited) -> None:
    assert audited.gateway.rest is not None
    metadata = [("authorization", f"Bearer {audited.token}")]
    with grpc.insecure_channel(audited.gateway.address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)
        futures = [
            stub.GetOperation.future(
                operations_pb2.GetOperationRequest(name=SLOW), metadata=metadata, timeout=30
            )
            for _ in range(3)
        ]
        _wait_for(lambda: len(audited.upstream.deadlines) == 3)  # all reached the upstream
        for future in futures:
            future.cancel()
        host, port = audited.gateway.rest.address.rsplit(":", 1)
        with socket.create_connection((host, int(port))) as client:
            client.sendall(
                f"GET /v1/{SLOW} HTTP/1.1\r\nHost: x\r\nX-Server-Timeout: 30\r\n"
                f"Authorization: Bearer {audited.token}\r\n\r\n".encode()
            )
            _wait_for(lambda: len(audited.upstream.deadlines) == 4)
        assert audited.codes(4) == [grpc.StatusCode.CANCELLED.value[0]] * 4
