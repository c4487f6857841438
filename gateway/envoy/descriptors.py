"""The FileDescriptorSet Envoy's grpc_json_transcoder reads: google.longrunning.Operations and
its imports, each method's `google.api.http` option replaced by the service profile's REST rules."""

from __future__ import annotations

import base64

from google.api import annotations_pb2, http_pb2
from google.longrunning import operations_pb2
from google.protobuf import (
    descriptor_pb2,
    duration_pb2,
    field_mask_pb2,
    struct_pb2,
    timestamp_pb2,
    wrappers_pb2,
)
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2

from gateway.profile import HttpRule, ServiceProfile
from gateway.routing import SERVICE, SERVICE_PREFIX

OPERATIONS_FILE = operations_pb2.DESCRIPTOR.name  # google/longrunning/operations.proto
# The error details opsgate and upstreams put in google.rpc.Status, and the well-known types
# upstreams pack into an Operation's metadata and response: the transcoder prints an Any as JSON
# only if its type is in the set (else it answers 502 for the whole call).
_EXTRA_FILES = (
    error_details_pb2.DESCRIPTOR,
    struct_pb2.DESCRIPTOR,
    timestamp_pb2.DESCRIPTOR,
    duration_pb2.DESCRIPTOR,
    wrappers_pb2.DESCRIPTOR,
    field_mask_pb2.DESCRIPTOR,
)


def _with_imports(roots: tuple[FileDescriptor, ...]) -> list[FileDescriptor]:
    """Every file `roots` need, each after the files it imports (the order protoc writes)."""
    ordered: list[FileDescriptor] = []
    seen: set[str] = set()

    def visit(file: FileDescriptor) -> None:
        if file.name in seen:
            return
        seen.add(file.name)
        for imported in file.dependencies:
            visit(imported)
        ordered.append(file)

    for root in roots:
        visit(root)
    return ordered


def _http_option(rules: list[HttpRule]) -> http_pb2.HttpRule:
    """The first rule as the method's binding, the rest as additional_bindings (profile order)."""
    option = http_pb2.HttpRule()
    for index, rule in enumerate(rules):
        binding = option if index == 0 else option.additional_bindings.add()
        setattr(binding, rule.verb.lower(), rule.template.text)
        binding.body = rule.body
    return option


def operations_descriptor_set(profile: ServiceProfile) -> descriptor_pb2.FileDescriptorSet:
    """Copies of the installed descriptors (nothing is added to any pool), the Operations
    methods' REST bindings exactly the profile's: a method the profile gives no REST rule
    has none, so Envoy transcodes only the paths opsgate's own REST door serves."""
    rules: dict[str, list[HttpRule]] = {}
    for method, rule in profile.http_rules:
        rules.setdefault(method.removeprefix(SERVICE_PREFIX), []).append(rule)
    found = descriptor_pb2.FileDescriptorSet()
    for file in _with_imports((operations_pb2.DESCRIPTOR, *_EXTRA_FILES)):
        proto = found.file.add()
        file.CopyToProto(proto)
        if file.name != OPERATIONS_FILE:
            continue
        (service,) = (s for s in proto.service if f"{proto.package}.{s.name}" == SERVICE)
        for method in service.method:
            method.options.ClearExtension(annotations_pb2.http)
            if method.name in rules:
                method.options.Extensions[annotations_pb2.http].CopyFrom(
                    _http_option(rules[method.name])
                )
    return found


def descriptor_bin(profile: ServiceProfile) -> str:
    """The set, serialized and base64-encoded: the transcoder's inline `proto_descriptor_bin`."""
    serialized = operations_descriptor_set(profile).SerializeToString(deterministic=True)
    return base64.b64encode(serialized).decode("ascii")
