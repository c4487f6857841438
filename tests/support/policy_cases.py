"""The example policy's decision table, shared by the proxy and library-mode end-to-end tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.api_core import exceptions as core_exceptions
from google.api_core import operations_v1
from google.longrunning import operations_pb2, operations_pb2_grpc

from gateway.reference_upstream.seed import (
    ACME_PROD_EU,
    ACME_PROD_US,
    ACME_STAGING_US,
    DONE_OPERATION,
    GLOBEX_OPERATION,
    GLOBEX_US,
    STAGING_OPERATION,
    STUCK_OPERATION,
    SUPPORT_TIER1_VIEW,
    SUPPORT_TIER2_VIEW,
    TIER1_OPERATION,
    TIER2_OPERATION,
)
from tests.support.bearer import with_bearer
from tests.support.stack import Identity


class Target(Protocol):
    """Where the table's calls go: the proxy stack, or a server running the chain in-process."""

    identity: Identity
    raw_gateway_channel: grpc.Channel

    def with_token(self, token: str | None) -> operations_v1.OperationsClient: ...


MISSING_PROD_OPERATION = f"{ACME_PROD_US}/operations/404404404"
SERVICE = "contactcenterinsights.googleapis.com"


@dataclass(frozen=True)
class Who:
    """A caller: the claims their token carries."""

    email: str
    groups: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def claims(self) -> dict[str, Any]:
        return {"email": self.email, "groups": list(self.groups) or None, **self.extra}


ALICE = Who("alice@acme.example")
PAULA = Who("paula@acme.example")
BOB = Who("bob@acme.example")
DEV = Who("dev@acme.example")
MALLORY = Who("mallory@contractor.example")
MALLORY_AS_PLATFORM = Who("mallory@contractor.example", ("platform@acme.example",))
LEAD_AS_PLATFORM = Who("lead@acme.example", ("platform@acme.example",))
LEAD = Who("lead@acme.example")
CI = Who("ci-deployer@acme-prod.iam.gserviceaccount.com")
FRANK = Who("frank@contractor.example")
CAROL = Who("carol@acme.example")
DAVE = Who("dave@acme.example")
ERIN = Who("erin@acme.example")
ZOE = Who("zoe@acme.example")
# The test issuer is not Google and not configured with trust_hosted_domain: its `hd` proves
# nothing, so it cannot make an outsider a member of domain:acme.example.
OUTSIDER_CLAIMING_HD = Who("eve@elsewhere.example", extra={"hd": "acme.example"})
ANALYST = Who("ana@globex.example", ("analysts@globex.example",))
ANALYST_GROUP_PREFIX = Who("ana@globex.example", ("group:analysts@globex.example",))
STRANGER = Who("nobody@elsewhere.example")
OLD_ADMIN = Who("old-admin@acme.example")

OK = "OK"
DENIED = "PERMISSION_DENIED"
INVALID = "INVALID_ARGUMENT"
UNIMPLEMENTED = "UNIMPLEMENTED"
NOT_FOUND = "NOT_FOUND"

# (id, who, method, resource, expected)
CASES: list[tuple[str, Who, str, str, str]] = [
    # Production admins: the platform team, directly and through a static group.
    ("alice-get-prod", ALICE, "get", DONE_OPERATION, OK),
    ("alice-list-prod", ALICE, "list", ACME_PROD_US, OK),
    ("alice-cancel-prod", ALICE, "cancel", DONE_OPERATION, OK),
    ("alice-get-view-op", ALICE, "get", TIER1_OPERATION, OK),
    # Google's catalogue: no predefined role holds authorizedOperations.cancel (roles.yaml).
    ("alice-cancel-view-op", ALICE, "cancel", TIER1_OPERATION, DENIED),
    ("alice-get-missing-is-upstream-not-found", ALICE, "get", MISSING_PROD_OPERATION, NOT_FOUND),
    ("paula-via-group-get-prod", PAULA, "get", DONE_OPERATION, OK),
    ("paula-cancel-eu-exempt-from-freeze", PAULA, "cancel", STUCK_OPERATION, OK),
    ("paula-owner-of-globex-get", PAULA, "get", GLOBEX_OPERATION, OK),
    ("paula-owner-of-globex-cancel", PAULA, "cancel", GLOBEX_OPERATION, OK),
    # Viewers.
    ("bob-get-prod", BOB, "get", DONE_OPERATION, OK),
    ("bob-list-prod-eu", BOB, "list", ACME_PROD_EU, OK),
    ("bob-cancel-prod", BOB, "cancel", DONE_OPERATION, DENIED),
    ("bob-get-view-op-inherited", BOB, "get", TIER1_OPERATION, OK),
    ("bob-list-view-inherited", BOB, "list", SUPPORT_TIER1_VIEW, OK),
    ("bob-cancel-view-op", BOB, "cancel", TIER1_OPERATION, DENIED),
    ("bob-cancel-missing-denied-like-existing", BOB, "cancel", MISSING_PROD_OPERATION, DENIED),
    ("bob-get-staging-by-domain", BOB, "get", STAGING_OPERATION, OK),
    ("bob-get-globex", BOB, "get", GLOBEX_OPERATION, DENIED),
    # Engineering (static group) and contractors nested in it.
    ("dev-get-prod", DEV, "get", DONE_OPERATION, OK),
    ("dev-cancel-staging-basic-editor", DEV, "cancel", STAGING_OPERATION, OK),
    ("dev-cancel-prod", DEV, "cancel", DONE_OPERATION, DENIED),
    ("mallory-get-prod-nested-group", MALLORY, "get", DONE_OPERATION, OK),
    ("mallory-cancel-staging", MALLORY, "cancel", STAGING_OPERATION, OK),
    ("mallory-cancel-prod", MALLORY, "cancel", DONE_OPERATION, DENIED),
    ("mallory-platform-claim-still-denied", MALLORY_AS_PLATFORM, "cancel", DONE_OPERATION, DENIED),
    ("mallory-platform-claim-get-ok", MALLORY_AS_PLATFORM, "get", DONE_OPERATION, OK),
    ("mallory-platform-cancel-view-denied", MALLORY_AS_PLATFORM, "cancel", TIER1_OPERATION, DENIED),
    ("lead-excepted-from-deny", LEAD_AS_PLATFORM, "cancel", DONE_OPERATION, OK),
    ("lead-exception-does-not-grant", LEAD, "cancel", DONE_OPERATION, DENIED),
    ("lead-get-prod", LEAD, "get", DONE_OPERATION, OK),
    # The deploy pipeline: a conditioned grant, and the EU freeze.
    ("ci-get-prod-conditioned", CI, "get", DONE_OPERATION, OK),
    ("ci-cancel-prod-us", CI, "cancel", DONE_OPERATION, OK),
    ("ci-cancel-prod-eu-freeze", CI, "cancel", STUCK_OPERATION, DENIED),
    ("ci-list-prod-eu", CI, "list", ACME_PROD_EU, OK),
    ("ci-cancel-staging", CI, "cancel", STAGING_OPERATION, OK),
    ("ci-get-globex", CI, "get", GLOBEX_OPERATION, DENIED),
    # The expired incident grant.
    ("frank-get-eu-expired", FRANK, "get", STUCK_OPERATION, DENIED),
    ("frank-list-eu-expired", FRANK, "list", ACME_PROD_EU, DENIED),
    # Support agents: only authorized views.
    ("carol-get-tier1", CAROL, "get", TIER1_OPERATION, OK),
    ("carol-list-tier1", CAROL, "list", SUPPORT_TIER1_VIEW, OK),
    ("carol-get-tier2", CAROL, "get", TIER2_OPERATION, OK),
    ("carol-cancel-tier1", CAROL, "cancel", TIER1_OPERATION, DENIED),
    ("carol-get-plain-op", CAROL, "get", DONE_OPERATION, DENIED),
    ("carol-list-plain-location", CAROL, "list", ACME_PROD_US, DENIED),
    ("dave-via-nested-group-get-tier1", DAVE, "get", TIER1_OPERATION, OK),
    ("dave-list-tier2", DAVE, "list", SUPPORT_TIER2_VIEW, OK),
    ("dave-cancel-tier2-own-view", DAVE, "cancel", TIER2_OPERATION, OK),
    ("dave-cancel-tier1-not-his-view", DAVE, "cancel", TIER1_OPERATION, DENIED),
    ("erin-custom-role-cancel-tier1", ERIN, "cancel", TIER1_OPERATION, OK),
    ("erin-get-tier2", ERIN, "get", TIER2_OPERATION, OK),
    ("erin-list-tier2", ERIN, "list", SUPPORT_TIER2_VIEW, OK),
    ("erin-get-plain-op", ERIN, "get", DONE_OPERATION, DENIED),
    # domain: members.
    ("zoe-verified-domain-staging", ZOE, "get", STAGING_OPERATION, OK),
    ("zoe-list-staging", ZOE, "list", ACME_STAGING_US, OK),
    ("untrusted-hd-no-domain", OUTSIDER_CLAIMING_HD, "get", STAGING_OPERATION, DENIED),
    ("zoe-cancel-staging", ZOE, "cancel", STAGING_OPERATION, DENIED),
    ("zoe-get-prod", ZOE, "get", DONE_OPERATION, DENIED),
    # The partner, with groups from the token's claim.
    ("analyst-get-globex", ANALYST, "get", GLOBEX_OPERATION, OK),
    ("analyst-group-prefix-in-claim", ANALYST_GROUP_PREFIX, "get", GLOBEX_OPERATION, OK),
    ("analyst-list-globex", ANALYST, "list", GLOBEX_US, OK),
    ("analyst-cancel-globex", ANALYST, "cancel", GLOBEX_OPERATION, DENIED),
    ("analyst-get-prod", ANALYST, "get", DONE_OPERATION, DENIED),
    # Nobody in particular; a deleted member.
    ("stranger-get-prod", STRANGER, "get", DONE_OPERATION, DENIED),
    ("stranger-get-missing", STRANGER, "get", MISSING_PROD_OPERATION, DENIED),
    ("stranger-list-prod", STRANGER, "list", ACME_PROD_US, DENIED),
    ("deleted-member-never-matches", OLD_ADMIN, "get", GLOBEX_OPERATION, DENIED),
    # Methods and names the profile does not route.
    ("wait-unimplemented", ALICE, "wait", DONE_OPERATION, UNIMPLEMENTED),
    ("delete-unimplemented", ALICE, "delete", DONE_OPERATION, UNIMPLEMENTED),
    ("name-without-location", ALICE, "get", "projects/acme-prod/operations/1", INVALID),
    ("name-dot-dot", ALICE, "get", f"{ACME_PROD_US}/operations/../operations/1", INVALID),
    ("list-on-operation-name", ALICE, "list", DONE_OPERATION, INVALID),
    ("percent-encoded-name", ALICE, "get", f"{ACME_PROD_US}/operations/a%2Fb", INVALID),
    ("nul-in-name", ALICE, "get", f"{ACME_PROD_US}/operations/a\x00b", INVALID),
    ("empty-name", ALICE, "get", "", INVALID),
    ("overlong-name", ALICE, "get", f"{ACME_PROD_US}/operations/{'9' * 1100}", INVALID),
]

PERMISSIONS = {
    ("get", False): "contactcenterinsights.operations.get",
    ("get", True): "contactcenterinsights.authorizedOperations.get",
    ("list", False): "contactcenterinsights.operations.list",
    ("list", True): "contactcenterinsights.authorizedOperations.list",
    ("cancel", False): "contactcenterinsights.operations.cancel",
    ("cancel", True): "contactcenterinsights.authorizedOperations.cancel",
}


def call(stack: Target, who: Who, method: str, resource: str) -> None:
    channel = with_bearer(stack.raw_gateway_channel, stack.identity.token(**who.claims()))
    client = stack.with_token(stack.identity.token(**who.claims()))
    if method == "get":
        client.get_operation(resource, retry=None, timeout=10)
    elif method == "list":
        next(iter(client.list_operations(resource, "", retry=None, timeout=10).pages), None)
    elif method == "cancel":
        client.cancel_operation(resource, retry=None, timeout=10)
    elif method == "delete":
        client.delete_operation(resource, retry=None, timeout=10)
    else:
        stub = operations_pb2_grpc.OperationsStub(channel)
        stub.WaitOperation(operations_pb2.WaitOperationRequest(name=resource), timeout=10)


def outcome(stack: Target, who: Who, method: str, resource: str) -> tuple[str, Any]:
    try:
        call(stack, who, method, resource)
    except core_exceptions.GoogleAPICallError as err:
        return err.grpc_status_code.name, err
    except grpc.RpcError as err:
        return err.code().name, err
    return OK, None
