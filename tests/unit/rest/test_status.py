"""gRPC status → HTTP status, and Google's JSON error body built from grpc-status-details-bin."""

from __future__ import annotations

import grpc
import pytest
from google.api_core import exceptions as core_exceptions

from gateway.errors import StatusCode, permission_denied, rate_limited
from gateway.rest.status import HTTP_STATUS, error_body, retry_after, status_details

# google/rpc/code.proto, code by code.
EXPECTED = {
    "OK": 200,
    "CANCELLED": 499,
    "UNKNOWN": 500,
    "INVALID_ARGUMENT": 400,
    "DEADLINE_EXCEEDED": 504,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "PERMISSION_DENIED": 403,
    "UNAUTHENTICATED": 401,
    "RESOURCE_EXHAUSTED": 429,
    "FAILED_PRECONDITION": 400,
    "ABORTED": 409,
    "OUT_OF_RANGE": 400,
    "UNIMPLEMENTED": 501,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
    "DATA_LOSS": 500,
}


def test_every_code_has_googles_http_status() -> None:
    assert {code.name: status for code, status in HTTP_STATUS.items()} == EXPECTED
    assert set(HTTP_STATUS) == set(StatusCode)
    assert {(c.value, c.name) for c in StatusCode} == {
        (c.value[0], c.name) for c in grpc.StatusCode
    }


@pytest.mark.parametrize("code", [c for c in grpc.StatusCode if c is not grpc.StatusCode.OK])
def test_agrees_with_google_api_core(code: grpc.StatusCode) -> None:
    known = core_exceptions.exception_class_for_grpc_status(code).code
    if known is not None:  # api-core leaves UNKNOWN and DATA_LOSS without one
        status = HTTP_STATUS[StatusCode(code.value[0])]
        assert status == known
        assert core_exceptions.exception_class_for_http_status(status).code == known


def test_error_body_is_googles_shape() -> None:
    failure = permission_denied("svc.operations.get", "projects/p", "svc.googleapis.com", "why")
    details = status_details(failure.trailing_metadata())
    assert error_body(failure.code, failure.message, details) == {
        "error": {
            "code": 403,
            "message": failure.message,
            "status": "PERMISSION_DENIED",
            "details": [
                {
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "IAM_PERMISSION_DENIED",
                    "domain": "svc.googleapis.com",
                    "metadata": {"permission": "svc.operations.get", "resource": "projects/p"},
                }
            ],
        }
    }


def test_error_without_details_has_no_details_key() -> None:
    assert error_body(StatusCode.NOT_FOUND, "gone") == {
        "error": {"code": 404, "message": "gone", "status": "NOT_FOUND"}
    }


def test_unreadable_or_absent_details() -> None:
    assert status_details(()) is None
    assert status_details((("grpc-status-details-bin", b"\xff\xff"),)) is None


def test_retry_info_becomes_retry_after_in_whole_seconds() -> None:
    failure = rate_limited("per-caller", 1.2)
    assert retry_after(status_details(failure.trailing_metadata())) == "2"
    denied = permission_denied("a.b.c", "r", "s", "")
    assert retry_after(status_details(denied.trailing_metadata())) is None
