"""Envoy's ext_authz and access-log messages, wire-compatible, in a descriptor pool of our own.

Only the fields the door reads or writes are declared, with Envoy's own full names and field
numbers (taken from Envoy 1.40's API, as xds-protos 1.85 ships it); a field we do not declare
is kept as an unknown field, never misread. The messages live in a private DescriptorPool, not
protobuf's default one: the project never installs xds-protos (it overwrites
googleapis-common-protos' files) and a process that does load it, or any other copy of Envoy's
API, cannot clash with these.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import (
    any_pb2,
    descriptor_pb2,
    descriptor_pool,
    duration_pb2,
    message_factory,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.rpc import status_pb2

_Field = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "string": _Field.TYPE_STRING,
    "bytes": _Field.TYPE_BYTES,
    "bool": _Field.TYPE_BOOL,
    "int32": _Field.TYPE_INT32,  # Envoy's enums: the same varint on the wire
    "int64": _Field.TYPE_INT64,
    "uint32": _Field.TYPE_UINT32,
    "uint64": _Field.TYPE_UINT64,
    "double": _Field.TYPE_DOUBLE,
}

# One field: (name, number, type, flags); type is a scalar name above or a message's full name
# ("map<string,T>" for maps); flags: "repeated", or "oneof:NAME".
FieldSpec = tuple[str, int, str, str]
MESSAGES: dict[str, tuple[FieldSpec, ...]] = {
    # envoy/config/core/v3
    "envoy.config.core.v3.SocketAddress": (
        ("protocol", 1, "int32", ""),
        ("address", 2, "string", ""),
        ("port_value", 3, "uint32", ""),
    ),
    "envoy.config.core.v3.Pipe": (("path", 1, "string", ""),),
    "envoy.config.core.v3.Address": (
        ("socket_address", 1, "envoy.config.core.v3.SocketAddress", "oneof:address"),
        ("pipe", 2, "envoy.config.core.v3.Pipe", "oneof:address"),
    ),
    "envoy.config.core.v3.Metadata": (
        ("filter_metadata", 1, "map<string,google.protobuf.Struct>", ""),
    ),
    "envoy.config.core.v3.HeaderValue": (
        ("key", 1, "string", ""),
        ("value", 2, "string", ""),
        ("raw_value", 3, "bytes", ""),
    ),
    "envoy.config.core.v3.HeaderValueOption": (
        ("header", 1, "envoy.config.core.v3.HeaderValue", ""),
        ("append", 2, "google.protobuf.BoolValue", ""),
        ("append_action", 3, "int32", ""),
    ),
    "envoy.config.core.v3.HeaderMap": (
        ("headers", 1, "envoy.config.core.v3.HeaderValue", "repeated"),
    ),
    # envoy/type/v3
    "envoy.type.v3.HttpStatus": (("code", 1, "int32", ""),),
    # envoy/service/auth/v3
    "envoy.service.auth.v3.AttributeContext.Peer": (
        ("address", 1, "envoy.config.core.v3.Address", ""),
        ("service", 2, "string", ""),
        ("principal", 4, "string", ""),
        ("certificate", 5, "string", ""),
    ),
    "envoy.service.auth.v3.AttributeContext.HttpRequest": (
        ("id", 1, "string", ""),
        ("method", 2, "string", ""),
        ("headers", 3, "map<string,string>", ""),
        ("path", 4, "string", ""),
        ("host", 5, "string", ""),
        ("scheme", 6, "string", ""),
        ("query", 7, "string", ""),
        ("size", 9, "int64", ""),
        ("protocol", 10, "string", ""),
        # A string in Envoy's API, but filled with the body's bytes as they are (without
        # pack_as_bytes): bytes here, so a frame that is not UTF-8 still reads.
        ("body", 11, "bytes", ""),
        ("raw_body", 12, "bytes", ""),
        ("header_map", 13, "envoy.config.core.v3.HeaderMap", ""),
    ),
    "envoy.service.auth.v3.AttributeContext.Request": (
        ("time", 1, "google.protobuf.Timestamp", ""),
        ("http", 2, "envoy.service.auth.v3.AttributeContext.HttpRequest", ""),
    ),
    "envoy.service.auth.v3.AttributeContext.TLSSession": (("sni", 1, "string", ""),),
    "envoy.service.auth.v3.AttributeContext": (
        ("source", 1, "envoy.service.auth.v3.AttributeContext.Peer", ""),
        ("destination", 2, "envoy.service.auth.v3.AttributeContext.Peer", ""),
        ("request", 4, "envoy.service.auth.v3.AttributeContext.Request", ""),
        ("context_extensions", 10, "map<string,string>", ""),
        ("metadata_context", 11, "envoy.config.core.v3.Metadata", ""),
        ("tls_session", 12, "envoy.service.auth.v3.AttributeContext.TLSSession", ""),
    ),
    "envoy.service.auth.v3.CheckRequest": (
        ("attributes", 1, "envoy.service.auth.v3.AttributeContext", ""),
    ),
    "envoy.service.auth.v3.DeniedHttpResponse": (
        ("status", 1, "envoy.type.v3.HttpStatus", ""),
        ("headers", 2, "envoy.config.core.v3.HeaderValueOption", "repeated"),
        ("body", 3, "string", ""),
    ),
    "envoy.service.auth.v3.OkHttpResponse": (
        ("headers", 2, "envoy.config.core.v3.HeaderValueOption", "repeated"),
        ("headers_to_remove", 5, "string", "repeated"),
        ("response_headers_to_add", 6, "envoy.config.core.v3.HeaderValueOption", "repeated"),
    ),
    "envoy.service.auth.v3.CheckResponse": (
        ("status", 1, "google.rpc.Status", ""),
        ("denied_response", 2, "envoy.service.auth.v3.DeniedHttpResponse", "oneof:http_response"),
        ("ok_response", 3, "envoy.service.auth.v3.OkHttpResponse", "oneof:http_response"),
        ("dynamic_metadata", 4, "google.protobuf.Struct", ""),
    ),
    # envoy/data/accesslog/v3
    "envoy.data.accesslog.v3.ResponseFlags": (
        ("no_healthy_upstream", 2, "bool", ""),
        ("upstream_request_timeout", 3, "bool", ""),
        ("local_reset", 4, "bool", ""),
        ("upstream_remote_reset", 5, "bool", ""),
        ("upstream_connection_failure", 6, "bool", ""),
        ("upstream_connection_termination", 7, "bool", ""),
        ("upstream_overflow", 8, "bool", ""),
        ("no_route_found", 9, "bool", ""),
        ("downstream_connection_termination", 15, "bool", ""),
        ("stream_idle_timeout", 17, "bool", ""),
        ("upstream_max_stream_duration_reached", 20, "bool", ""),
        ("duration_timeout", 23, "bool", ""),
        ("upstream_protocol_error", 24, "bool", ""),
        ("overload_manager", 26, "bool", ""),
        ("downstream_remote_reset", 28, "bool", ""),
    ),
    "envoy.data.accesslog.v3.AccessLogCommon": (
        ("downstream_remote_address", 2, "envoy.config.core.v3.Address", ""),
        ("start_time", 5, "google.protobuf.Timestamp", ""),
        ("time_to_first_upstream_tx_byte", 7, "google.protobuf.Duration", ""),
        ("time_to_last_upstream_rx_byte", 10, "google.protobuf.Duration", ""),
        ("upstream_cluster", 15, "string", ""),
        ("response_flags", 16, "envoy.data.accesslog.v3.ResponseFlags", ""),
        ("metadata", 17, "envoy.config.core.v3.Metadata", ""),
        ("route_name", 19, "string", ""),
        ("duration", 23, "google.protobuf.Duration", ""),
        ("custom_tags", 22, "map<string,string>", ""),
        ("stream_id", 26, "string", ""),
        ("intermediate_log_entry", 27, "bool", ""),
        ("access_log_type", 33, "int32", ""),
    ),
    "envoy.data.accesslog.v3.HTTPRequestProperties": (
        ("request_method", 1, "int32", ""),
        ("path", 5, "string", ""),
        ("user_agent", 6, "string", ""),
        ("request_id", 9, "string", ""),
    ),
    "envoy.data.accesslog.v3.HTTPResponseProperties": (
        ("response_code", 1, "google.protobuf.UInt32Value", ""),
        ("response_headers", 4, "map<string,string>", ""),
        ("response_trailers", 5, "map<string,string>", ""),
        ("response_code_details", 6, "string", ""),
    ),
    "envoy.data.accesslog.v3.HTTPAccessLogEntry": (
        ("common_properties", 1, "envoy.data.accesslog.v3.AccessLogCommon", ""),
        ("protocol_version", 2, "int32", ""),
        ("request", 3, "envoy.data.accesslog.v3.HTTPRequestProperties", ""),
        ("response", 4, "envoy.data.accesslog.v3.HTTPResponseProperties", ""),
    ),
    # envoy/service/accesslog/v3
    "envoy.service.accesslog.v3.StreamAccessLogsMessage.Identifier": (
        ("log_name", 2, "string", ""),
    ),
    "envoy.service.accesslog.v3.StreamAccessLogsMessage.HTTPAccessLogEntries": (
        ("log_entry", 1, "envoy.data.accesslog.v3.HTTPAccessLogEntry", "repeated"),
    ),
    "envoy.service.accesslog.v3.StreamAccessLogsMessage": (
        ("identifier", 1, "envoy.service.accesslog.v3.StreamAccessLogsMessage.Identifier", ""),
        (
            "http_logs",
            2,
            "envoy.service.accesslog.v3.StreamAccessLogsMessage.HTTPAccessLogEntries",
            "oneof:log_entries",
        ),
    ),
    "envoy.service.accesslog.v3.StreamAccessLogsResponse": (),
}

PACKAGES = (
    "envoy.config.core.v3",
    "envoy.type.v3",
    "envoy.service.auth.v3",
    "envoy.data.accesslog.v3",
    "envoy.service.accesslog.v3",
)
_WELL_KNOWN = (any_pb2, struct_pb2, timestamp_pb2, duration_pb2, wrappers_pb2, status_pb2)

CHECK_METHOD = "/envoy.service.auth.v3.Authorization/Check"
ACCESS_LOG_METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


def _package_of(full_name: str) -> str:
    return next(p for p in PACKAGES if full_name.startswith(p + "."))


def _add_field(
    message: descriptor_pb2.DescriptorProto, spec: FieldSpec, oneofs: dict[str, int]
) -> None:
    name, number, kind, flags = spec
    field = message.field.add(name=name, number=number, json_name=_json_name(name))
    field.label = _Field.LABEL_REPEATED if flags == "repeated" else _Field.LABEL_OPTIONAL
    if kind.startswith("map<"):
        key_type, value_type = kind[4:-1].split(",")
        entry = message.nested_type.add(name=_camel(name) + "Entry")
        entry.options.map_entry = True
        _add_field(entry, ("key", 1, key_type, ""), {})
        _add_field(entry, ("value", 2, value_type, ""), {})
        field.label = _Field.LABEL_REPEATED
        field.type = _Field.TYPE_MESSAGE
        field.type_name = f".{_full_name_of(message)}.{entry.name}"
        return
    if kind in _SCALARS:
        field.type = _SCALARS[kind]
    else:
        field.type = _Field.TYPE_MESSAGE
        field.type_name = "." + kind
    if flags.startswith("oneof:"):
        oneof = flags.partition(":")[2]
        if oneof not in oneofs:
            oneofs[oneof] = len(message.oneof_decl)
            message.oneof_decl.add(name=oneof)
        field.oneof_index = oneofs[oneof]


# DescriptorProto has no link to its parent: full names are tracked on the side while building.
_FULL_NAMES: dict[int, str] = {}


def _full_name_of(message: descriptor_pb2.DescriptorProto) -> str:
    return _FULL_NAMES[id(message)]


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("_"))


def _json_name(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.capitalize() for part in rest)


def _file_for(package: str, messages: Iterable[str]) -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name=f"opsgate/envoy/{package.replace('.', '/')}.proto", package=package, syntax="proto3"
    )
    file.dependency.extend(module.DESCRIPTOR.name for module in _WELL_KNOWN)
    file.dependency.extend(
        f"opsgate/envoy/{other.replace('.', '/')}.proto"
        for other in PACKAGES[: PACKAGES.index(package)]
    )
    built: dict[str, descriptor_pb2.DescriptorProto] = {}
    for full_name in sorted(messages, key=lambda name: name.count(".")):
        outer, _, short = full_name.rpartition(".")
        parent = built.get(outer)
        message = parent.nested_type.add(name=short) if parent else file.message_type.add()
        message.name = short
        _FULL_NAMES[id(message)] = full_name
        built[full_name] = message
    for full_name, message in built.items():
        oneofs: dict[str, int] = {}
        for spec in MESSAGES[full_name]:
            _add_field(message, spec, oneofs)
    return file


def _service(file: descriptor_pb2.FileDescriptorProto, path: str, streaming: bool) -> None:
    service_name, method_name = path.strip("/").split("/")
    service = file.service.add(name=service_name.rpartition(".")[2])
    prefix = file.package
    request, response = {
        CHECK_METHOD: ("CheckRequest", "CheckResponse"),
        ACCESS_LOG_METHOD: ("StreamAccessLogsMessage", "StreamAccessLogsResponse"),
    }[path]
    service.method.add(
        name=method_name,
        input_type=f".{prefix}.{request}",
        output_type=f".{prefix}.{response}",
        client_streaming=streaming,
    )


def _build_pool() -> descriptor_pool.DescriptorPool:
    pool = descriptor_pool.DescriptorPool()
    for module in _WELL_KNOWN:
        pool.AddSerializedFile(module.DESCRIPTOR.serialized_pb)
    for package in PACKAGES:
        file = _file_for(package, (name for name in MESSAGES if _package_of(name) == package))
        if package == "envoy.service.auth.v3":
            _service(file, CHECK_METHOD, streaming=False)
        elif package == "envoy.service.accesslog.v3":
            _service(file, ACCESS_LOG_METHOD, streaming=True)
        pool.Add(file)
    _FULL_NAMES.clear()
    return pool


POOL = _build_pool()


def message_class(full_name: str) -> Any:
    """The message class for one of Envoy's messages declared above."""
    return message_factory.GetMessageClass(POOL.FindMessageTypeByName(full_name))


CheckRequest = message_class("envoy.service.auth.v3.CheckRequest")
CheckResponse = message_class("envoy.service.auth.v3.CheckResponse")
HeaderValueOption = message_class("envoy.config.core.v3.HeaderValueOption")
HTTPAccessLogEntry = message_class("envoy.data.accesslog.v3.HTTPAccessLogEntry")
StreamAccessLogsMessage = message_class("envoy.service.accesslog.v3.StreamAccessLogsMessage")
StreamAccessLogsResponse = message_class("envoy.service.accesslog.v3.StreamAccessLogsResponse")
