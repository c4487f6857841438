"""Our declarations of Envoy's messages against bytes Envoy's own API (xds-protos 1.85.0) wrote.

The golden bytes below were serialized, deterministically, by xds-protos' generated classes for
the messages each test spells out; ours must read them field for field and write the same bytes.
"""

from __future__ import annotations

from google.protobuf import descriptor_pool
from google.protobuf.message import Message

from gateway.envoy import protos

CHECK_REQUEST = bytes.fromhex(
    "0ae5010a450a0f0a0d120831302e302e302e3118b32b22137370696666653a2f2f61636d652f6e732f63692a1d"
    "2d2d2d2d2d424547494e25323043455254494649434154452d2d2d2d2d227812760a08656e766f792d69641204"
    "504f53541a190a0d617574686f72697a6174696f6e12084265617265722074222b2f676f6f676c652e6c6f6e67"
    "72756e6e696e672e4f7065726174696f6e732f4765744f7065726174696f6e2a026777320468747470480c5206"
    "485454502f32620800000000030a016152140a0c6f7073676174655f646f6f72120472657374620c0a0a67772e"
    "6578616d706c65"
)
CHECK_OK = bytes.fromhex(
    "0a001a4d12230a1f0a13782d6f7073676174652d7072696e636970616c1208757365723a61406218022a0d6175"
    "74686f72697a6174696f6e32170a130a0c782d726571756573742d696412036162631802221a0a180a0f6f7073"
    "676174655f63616c6c5f696412051a03616263"
)
CHECK_DENIED = bytes.fromhex(
    "0a020807121f0a0308930312140a100a0b677270632d73746174757312013718021a027b7d"
)
ACCESS_LOGS = bytes.fromhex(
    "0a0912076f70736761746512dd010ada010a633a0410c0843d52041080897a7a08757073747265616d820103e0"
    "01018a013c0a3a0a1c656e766f792e66696c746572732e687474702e6578745f617574687a121a0a180a0f6f70"
    "73676174655f63616c6c5f696412051a03616263ba010510a0cb980110031a2d2a2b2f676f6f676c652e6c6f6e"
    "6772756e6e696e672e4f7065726174696f6e732f4765744f7065726174696f6e22420a0308c8012a1b0a0c6772"
    "70632d6d657373616765120b6e6f74253230666f756e642a100a0b677270632d737461747573120135320c7669"
    "615f757073747265616d"
)
GET = "/google.longrunning.Operations/GetOperation"


def _bytes(message: Message) -> bytes:
    return message.SerializeToString(deterministic=True)


def test_check_request_reads_as_envoy_wrote_it() -> None:
    attributes = protos.CheckRequest.FromString(CHECK_REQUEST).attributes
    source = attributes.source
    assert (source.address.socket_address.address, source.address.socket_address.port_value) == (
        "10.0.0.1",
        5555,
    )
    assert source.principal == "spiffe://acme/ns/ci"
    assert source.certificate == "-----BEGIN%20CERTIFICATE-----"
    http = attributes.request.http
    assert (http.id, http.method, http.path, http.host, http.protocol) == (
        "envoy-id",
        "POST",
        GET,
        "gw",
        "HTTP/2",
    )
    assert dict(http.headers) == {"authorization": "Bearer t"}
    assert http.raw_body == b"\x00\x00\x00\x00\x03\n\x01a"
    assert dict(attributes.context_extensions) == {"opsgate_door": "rest"}
    assert attributes.tls_session.sni == "gw.example"
    assert _bytes(protos.CheckRequest.FromString(CHECK_REQUEST)) == CHECK_REQUEST


def test_check_responses_are_written_as_envoy_reads_them() -> None:
    ok = protos.CheckResponse()
    ok.status.code = 0
    ok.ok_response.SetInParent()
    option = ok.ok_response.headers.add()
    option.header.key, option.header.value, option.append_action = (
        "x-opsgate-principal",
        "user:a@b",
        2,
    )
    ok.ok_response.headers_to_remove.append("authorization")
    added = ok.ok_response.response_headers_to_add.add()
    added.header.key, added.header.value, added.append_action = "x-request-id", "abc", 2
    ok.dynamic_metadata.fields["opsgate_call_id"].string_value = "abc"
    assert _bytes(ok) == CHECK_OK

    denied = protos.CheckResponse()
    denied.status.code = 7
    denied.denied_response.status.code = 403
    header = denied.denied_response.headers.add()
    header.header.key, header.header.value, header.append_action = "grpc-status", "7", 2
    denied.denied_response.body = "{}"
    assert _bytes(denied) == CHECK_DENIED


def test_access_log_entries_read_as_envoy_wrote_them() -> None:
    message = protos.StreamAccessLogsMessage.FromString(ACCESS_LOGS)
    assert message.identifier.log_name == "opsgate"
    (entry,) = message.http_logs.log_entry
    common = entry.common_properties
    call_id = common.metadata.filter_metadata["envoy.filters.http.ext_authz"].fields
    assert call_id["opsgate_call_id"].string_value == "abc"
    assert (common.duration.nanos, common.upstream_cluster) == (2_500_000, "upstream")
    assert common.time_to_first_upstream_tx_byte.nanos == 1_000_000
    assert common.time_to_last_upstream_rx_byte.nanos == 2_000_000
    assert common.response_flags.downstream_remote_reset
    assert entry.request.path == GET
    assert entry.response.response_code.value == 200
    assert dict(entry.response.response_trailers) == {
        "grpc-status": "5",
        "grpc-message": "not%20found",
    }
    assert entry.response.response_code_details == "via_upstream"
    assert _bytes(message) == ACCESS_LOGS


def test_the_messages_live_in_a_pool_of_their_own() -> None:
    """Nothing is registered in protobuf's default pool: a process that also loads Envoy's API
    (xds-protos) or another copy of these files cannot clash with ours."""
    default = descriptor_pool.Default()
    for name in protos.MESSAGES:
        try:
            default.FindMessageTypeByName(name)
        except KeyError:
            continue
        raise AssertionError(f"{name} is in the default pool")
    assert protos.CheckRequest.DESCRIPTOR.file.pool is protos.POOL
