"""The reference upstream: an in-memory google.longrunning.Operations server for demos and tests."""

from __future__ import annotations

from gateway.reference_upstream.calls import CallLog, CallRecord
from gateway.reference_upstream.errors import (
    InjectedFault,
    InvalidArgument,
    OperationExists,
    OperationNotFound,
    RequestError,
)
from gateway.reference_upstream.seed import seed_demo
from gateway.reference_upstream.server import (
    ListenError,
    ReferenceUpstream,
    run_reference_upstream,
    start_reference_upstream,
)
from gateway.reference_upstream.servicer import ReferenceOperationsServicer
from gateway.reference_upstream.store import CANCELLED_ERROR, OperationStore, Page

__all__ = [
    "CANCELLED_ERROR",
    "CallLog",
    "CallRecord",
    "InjectedFault",
    "InvalidArgument",
    "ListenError",
    "OperationExists",
    "OperationNotFound",
    "OperationStore",
    "Page",
    "ReferenceOperationsServicer",
    "ReferenceUpstream",
    "RequestError",
    "run_reference_upstream",
    "seed_demo",
    "start_reference_upstream",
]
