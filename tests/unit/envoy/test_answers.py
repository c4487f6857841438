"""The authorizer's answers: headers set and removed when allowed; refusals as opsgate's own doors."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import unquote

import pytest
from google.rpc import status_pb2

from gateway.authn.principal import Principal
from gateway.envoy.answers import Allow, Answers, Refuse
from gateway.envoy.completion import JoinKeys
from gateway.envoy.door import check_response
from gateway.errors import STATUS_DETAILS_KEY, CallFailure, PermissionDenied, Unauthenticated
from gateway.rest.status import failure_answer
from tests.support.calls import a_call

GET = "/google.longrunning.Operations/GetOperation"
IDENTITY = "x-opsgate-principal"


def principal(member: str) -> Principal:
    return Principal(member=member, subject=member, issuer="https://idp.test")


def headers_of(options: object) -> dict[str, str]:
    return {option.header.key: option.header.value for option in options}  # type: ignore[attr-defined]


def check_response_of(answer: Allow | Refuse) -> Any:
    """The answer as the gRPC protocol's CheckResponse sends it (what Envoy reads)."""
    return check_response(answer)


CALLER_HEADERS = [
    "authorization",
    "user-agent",
    "content-type",
    "te",
    "grpc-timeout",
    "traceparent",
    "x-goog-request-params",
    IDENTITY,  # the exact key: overwritten, not removed
    "x-opsgate-principal-bin",
    "x-opsgate-anything",
    "x-request-id",
    "x-server-timeout",
    "grpc-status-details",
]


@pytest.mark.parametrize("forward_authorization", [False, True])
def test_allowed_sets_the_identity_and_removes_every_caller_copy(
    forward_authorization: bool,
) -> None:
    answers_keys = JoinKeys()
    answers = Answers(
        identity_header=IDENTITY,
        forward_authorization=forward_authorization,
        join_key=answers_keys.key,
    )
    call = a_call(GET)
    call.principal = principal("user:alice@acme.example")
    response = check_response_of(answers.allowed(call, CALLER_HEADERS))
    ok = response.ok_response
    removed = set(ok.headers_to_remove)
    assert removed == {
        *(() if forward_authorization else ("authorization",)),
        "x-opsgate-principal-bin",
        "x-opsgate-anything",
        "x-request-id",
        "x-server-timeout",
    }
    assert headers_of(ok.headers) == {IDENTITY: "user:alice@acme.example"}
    assert all(option.append_action == 2 for option in ok.headers)  # overwrite, never append
    assert headers_of(ok.response_headers_to_add) == {"x-request-id": call.request_id}
    key = response.dynamic_metadata.fields["x-opsgate-call-key"].string_value
    assert answers_keys.call_id(key) == call.request_id
    assert response.status.code == 0


def test_anonymous_allowed_call_has_the_identity_header_removed() -> None:
    answers = Answers(identity_header=IDENTITY, forward_authorization=False)
    allow = answers.allowed(a_call(GET), [IDENTITY])
    assert allow.upstream_removed == (IDENTITY,)
    assert allow.upstream_set == ()


def test_identity_is_percent_encoded_like_the_proxy_sends_it() -> None:
    answers = Answers(identity_header=IDENTITY, forward_authorization=False)
    call = a_call(GET)
    call.principal = principal("user:zoë@acme.example\r\nx-evil: 1")
    value = dict(answers.allowed(call, []).upstream_set)[IDENTITY]
    assert value.isascii() and "\r" not in value and "\n" not in value


FAILURES: list[CallFailure] = [
    PermissionDenied(
        "Permission 'contactcenterinsights.operations.get' denied on resource 'projects/p' "
        "(or it may not exist).",
        reason="IAM_PERMISSION_DENIED",
    ),
    Unauthenticated("Request had invalid authentication credentials. Ünïcode %.", reason="X"),
]


@pytest.mark.parametrize("failure", FAILURES, ids=["denied", "unauthenticated"])
def test_grpc_refusal_carries_the_proxys_status(failure: CallFailure) -> None:
    call = a_call(GET)
    response = check_response_of(
        Answers(identity_header=IDENTITY, forward_authorization=False).refused(
            call, failure, rest=False
        )
    )
    denied = response.denied_response
    headers = headers_of(denied.headers)
    assert response.status.code == int(failure.code)
    assert denied.status.code == 200 and denied.body == ""
    assert headers["grpc-status"] == str(int(failure.code))
    assert headers["content-type"] == "application/grpc"
    assert headers["x-request-id"] == call.request_id
    encoded = headers[STATUS_DETAILS_KEY]
    sent = base64.b64decode(encoded + "=" * (-len(encoded) % 4))
    assert sent == dict(failure.trailing_metadata())[STATUS_DETAILS_KEY]
    assert status_pb2.Status.FromString(sent).message == failure.message
    # grpc-message is percent-encoded as gRPC's spec says; grpc clients decode it back.
    assert unquote(headers["grpc-message"]) == failure.message
    assert headers["grpc-message"].isascii()


@pytest.mark.parametrize("failure", FAILURES, ids=["denied", "unauthenticated"])
def test_rest_refusal_is_the_rest_doors_answer(failure: CallFailure) -> None:
    call = a_call(GET)
    response = check_response_of(
        Answers(identity_header=IDENTITY, forward_authorization=False).refused(
            call, failure, rest=True
        )
    )
    status, headers, body = failure_answer(failure)
    denied = response.denied_response
    assert denied.status.code == status
    assert json.loads(denied.body) == body
    sent = headers_of(denied.headers)
    assert sent["content-type"].startswith("application/json")
    assert {key.lower(): value for key, value in headers.items()}.items() <= sent.items()
    assert sent["x-request-id"] == call.request_id
