"""The transcoder's descriptor set: self-contained, in import order, a copy (the process's own
descriptors keep googleapis' REST binding), and the same bytes every time."""

from __future__ import annotations

from google.api import annotations_pb2
from google.longrunning import operations_pb2
from google.protobuf import descriptor_pool

from gateway.envoy.descriptors import OPERATIONS_FILE, descriptor_bin, operations_descriptor_set
from gateway.profile import load_profile
from gateway.routing import SERVICE


def test_the_set_loads_alone_in_a_fresh_pool_in_the_order_given() -> None:
    found = operations_descriptor_set(load_profile())
    names = [file.name for file in found.file]
    assert len(names) == len(set(names))
    pool = descriptor_pool.DescriptorPool()
    for file in found.file:
        assert set(file.dependency) <= set(names[: names.index(file.name)]), file.name
        pool.Add(file)
    service = pool.FindServiceByName(SERVICE)
    assert {m.name for m in service.methods} >= {"GetOperation", "ListOperations"}
    # What convert_grpc_status prints in error details.
    assert pool.FindMessageTypeByName("google.rpc.ErrorInfo")
    assert OPERATIONS_FILE in names


def test_the_installed_descriptors_are_not_changed() -> None:
    operations_descriptor_set(load_profile())
    method = operations_pb2.DESCRIPTOR.services_by_name["Operations"].methods_by_name[
        "GetOperation"
    ]
    assert method.GetOptions().Extensions[annotations_pb2.http].get == "/v1/{name=operations/**}"


def test_the_same_profile_gives_the_same_bytes() -> None:
    assert descriptor_bin(load_profile()) == descriptor_bin(load_profile())
