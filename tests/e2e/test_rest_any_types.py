"""Any fields of a real service's types through the REST door, read by google-api-core's REST
client in a fresh process: types from the installed client library, types from a descriptor set
only (the gateway never imports the library), and types nobody has (answered 200, losslessly).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from google.cloud import contact_center_insights_v1 as ccai
from google.protobuf import any_pb2, struct_pb2, timestamp_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from gateway.outcome import MemorySink
from gateway.reference_upstream import OperationStore, ReferenceUpstream, start_reference_upstream
from gateway.rest.anyjson import UNRESOLVED_HEADER
from gateway.server import start_gateway
from gateway.testing.loop import LoopThread
from gateway.testing.processes import ServerProcess, child_env
from tests.support.descriptor_sets import descriptor_set
from tests.support.stack import Identity, gateway_settings, quiet_audit_yaml

PARENT = "projects/acme/locations/us-central1"
ANALYSIS_OP = f"{PARENT}/operations/analysis-1"
BULK_OP = f"{PARENT}/operations/bulk-2"
HIDDEN_OP = f"{PARENT}/operations/hidden-3"
FAILED_OP = f"{PARENT}/operations/failed-4"
HIDDEN_TYPE = "type.googleapis.com/acme.hidden.v1.Secret"
OTHER_HIDDEN_TYPE = "type.googleapis.com/acme.hidden.v1.Other"
POLICY = """
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.admin
        members: [allAuthenticatedUsers]
"""
# Plain HTTP to 127.0.0.1, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY")

# The client, in a fresh Python process: google-api-core's REST operations client, reading with
# api-core's own default paths. argv: endpoint, token, then `get NAME` / `list PARENT` / `import
# MODULE` steps. Prints each operation it reads as JSON: name, done, and each Any's type URL and
# bytes as the client holds them after parsing the JSON.
CLIENT = """
import base64, importlib, json, sys
from google.api_core.operations_v1 import AbstractOperationsClient
from google.oauth2.credentials import Credentials

endpoint, token, *steps = sys.argv[1:]
client = AbstractOperationsClient(
    credentials=Credentials(token=token), client_options={"api_endpoint": endpoint}
)

def packed(any_field):
    return {"type": any_field.type_url, "b64": base64.b64encode(any_field.value).decode()}

def shown(op):
    return {
        "name": op.name,
        "done": op.done,
        "metadata": packed(op.metadata),
        "response": packed(op.response),
        "error": {"code": op.error.code, "details": [packed(d) for d in op.error.details]},
    }

out = []
for verb, arg in zip(steps[::2], steps[1::2]):
    if verb == "import":
        importlib.import_module(arg)
    elif verb == "get":
        out.append(shown(client.get_operation(arg)))
    else:
        out.extend(shown(op) for op in client.list_operations(arg, "", page_size=2))
print(json.dumps(out))
"""


def _at(seconds: int) -> timestamp_pb2.Timestamp:
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=250_000_000)


def _packed(message: Message, url: str | None = None) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    if url is not None:
        packed.type_url = url
    return packed


def analysis_metadata() -> Message:
    return ccai.CreateAnalysisOperationMetadata.pb(
        ccai.CreateAnalysisOperationMetadata(
            create_time=_at(1_714_000_000),
            conversation=f"{PARENT}/conversations/c-1",
            annotator_selector=ccai.AnnotatorSelector(
                run_sentiment_annotator=True,
                run_entity_annotator=True,
                phrase_matchers=[f"{PARENT}/phraseMatchers/pm-1"],
            ),
        )
    )


def analysis() -> Message:
    call = ccai.AnalysisResult.CallAnalysisMetadata(
        entities={
            "e-1": ccai.Entity(
                display_name="Acme", type_=ccai.Entity.Type.ORGANIZATION, salience=0.5
            )
        },
        sentiments=[
            ccai.ConversationLevelSentiment(
                channel_tag=1, sentiment_data=ccai.SentimentData(magnitude=0.75, score=-0.25)
            )
        ],
    )
    return ccai.Analysis.pb(
        ccai.Analysis(
            name=f"{PARENT}/conversations/c-1/analyses/a-1",
            create_time=_at(1_714_000_060),
            analysis_result=ccai.AnalysisResult(
                call_analysis_metadata=call, end_time=_at(1_714_000_090)
            ),
        )
    )


def bulk_metadata(hidden_detail: bool = False) -> Message:
    """Still running; its partial errors are google.rpc.Status, whose details are Anys too."""
    details = [_packed(error_details_pb2.ErrorInfo(reason="QUOTA", domain="acme.example"))]
    if hidden_detail:
        details.append(_packed(struct_pb2.Struct(), OTHER_HIDDEN_TYPE))
    return ccai.BulkAnalyzeConversationsMetadata.pb(
        ccai.BulkAnalyzeConversationsMetadata(
            create_time=_at(1_714_000_100),
            completed_analyses_count=3,
            failed_analyses_count=1,
            total_requested_analyses_count=10,
            partial_errors=[status_pb2.Status(code=8, message="quota", details=details)],
        )
    )


def hidden_bytes() -> bytes:
    """Bytes of a type nobody here has (they happen to be a Timestamp's wire form)."""
    return _at(1_700_000_000).SerializeToString()


def service_store(unresolvable: bool = False) -> OperationStore:
    """Operations of Contact Center AI Insights; with `unresolvable`, two more whose Anys are
    of types nobody has (metadata, response, an error detail, and one nested in a known type)."""
    store = OperationStore()
    store.create(ANALYSIS_OP, metadata=_packed(analysis_metadata()), response=_packed(analysis()))
    store.create(BULK_OP, metadata=_packed(bulk_metadata(unresolvable)), finish_after=3600)
    if unresolvable:
        hidden = any_pb2.Any(type_url=HIDDEN_TYPE, value=hidden_bytes())
        store.create(HIDDEN_OP, metadata=hidden, response=hidden)
        error = status_pb2.Status(code=9, message="precondition", details=[hidden])
        error.details.add().Pack(error_details_pb2.ErrorInfo(reason="STATE"))
        store.create(FAILED_OP, metadata=_packed(analysis_metadata()), error=error)
    return store


@contextmanager
def upstream_serving(loop: LoopThread, store: OperationStore) -> Iterator[ReferenceUpstream]:
    upstream = loop.run(start_reference_upstream(seed=False, store=store))
    try:
        yield upstream
    finally:
        loop.run(upstream.stop(0))


@dataclass
class Door:
    address: str
    token: str

    @property
    def endpoint(self) -> str:
        return f"http://{self.address}"


@contextmanager
def in_process_door(
    loop: LoopThread, identity: Identity, store: OperationStore, rest_yaml: str = ""
) -> Iterator[Door]:
    """The gateway in this process (which has the client library imported), REST door on."""
    policy = identity.directory / "any-types-policy.yaml"
    policy.write_text(POLICY)
    with upstream_serving(loop, store) as upstream:
        settings = gateway_settings(
            upstream.address,
            identity,
            policy,
            extra_yaml=f"rest:\n  listen: 127.0.0.1:0\n{rest_yaml}",
        )
        gateway = loop.run(start_gateway(settings, sink=MemorySink()))
        try:
            assert gateway.rest is not None
            yield Door(gateway.rest.address, identity.token())
        finally:
            loop.run(gateway.stop(0))


def run_client(door: Door, *steps: str) -> list[dict[str, Any]]:
    """CLIENT in a fresh interpreter; what it read."""
    env = {k: v for k, v in child_env().items() if k not in _PROXY_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, door.endpoint, door.token, *steps],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    found: list[dict[str, Any]] = json.loads(done.stdout)
    return found


def unpacked(shown: dict[str, str], kind: type[Message]) -> Message:
    """A client's Any (type URL and bytes) as `kind`, checking the URL names it."""
    assert shown["type"] == f"type.googleapis.com/{kind.DESCRIPTOR.full_name}"
    return kind.FromString(base64.b64decode(shown["b64"]))


def assert_service_operations_round_trip(read: dict[str, dict[str, Any]]) -> None:
    meta_type = type(analysis_metadata())
    analysis_type = type(analysis())
    bulk_type = type(bulk_metadata())
    assert read[ANALYSIS_OP]["done"] is True
    assert unpacked(read[ANALYSIS_OP]["metadata"], meta_type) == analysis_metadata()
    assert unpacked(read[ANALYSIS_OP]["response"], analysis_type) == analysis()
    assert read[BULK_OP]["done"] is False
    assert unpacked(read[BULK_OP]["metadata"], bulk_type) == bulk_metadata()


def test_service_types_from_the_client_library(loop: LoopThread, identity: Identity) -> None:
    # The built-in profile's service: the gateway imports its client library by itself.
    with in_process_door(loop, identity, service_store()) as door:
        library = "google.cloud.contact_center_insights_v1"
        got = run_client(door, "import", library, "get", ANALYSIS_OP, "list", PARENT)
    assert [op["name"] for op in got] == [ANALYSIS_OP, ANALYSIS_OP, BULK_OP]
    assert got[0] == got[1]  # Get and List render one operation alike
    assert_service_operations_round_trip({op["name"]: op for op in got[1:]})


# Runs the gateway's CLI with the client library made uninstalled (as on an operator's
# machine without it): only the descriptor set can render its types.
_WITHOUT_LIBRARY = """
import sys

class NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.startswith("google.cloud.contact_center_insights"):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return None

sys.meta_path.insert(0, NotInstalled())
from gateway.cli import main
code = main(sys.argv[1:])
assert not [m for m in sys.modules if m.startswith("google.cloud.contact_center_insights")]
sys.exit(code)
"""


def test_service_types_from_a_descriptor_set_only(
    loop: LoopThread, identity: Identity, tmp_path: Path
) -> None:
    (tmp_path / "apis").mkdir()
    (tmp_path / "apis" / "insights.pb").write_bytes(
        descriptor_set(
            *(type(m).DESCRIPTOR for m in (analysis_metadata(), analysis(), bulk_metadata()))
        )
    )
    (tmp_path / "policy.yaml").write_text(POLICY)
    with upstream_serving(loop, service_store()) as upstream:
        config = tmp_path / "opsgate.yaml"
        config.write_text(
            f"listen: 127.0.0.1:0\nupstream:\n  target: {upstream.address}\n"
            + identity.issuer_yaml()
            + "authorization:\n  policy_file: policy.yaml\n"
            + quiet_audit_yaml(tmp_path)
            + "log_format: text\n"
            + "rest:\n  listen: 127.0.0.1:0\n  descriptor_sets: [apis/insights.pb]\n"
        )
        argv = [sys.executable, "-c", _WITHOUT_LIBRARY, "serve", "--config", str(config)]
        gateway = ServerProcess(argv, name="gateway", cwd=tmp_path)
        try:
            gateway.wait_ready()
            assert gateway.rest_address is not None
            door = Door(gateway.rest_address, identity.token())
            library = "google.cloud.contact_center_insights_v1"
            got = run_client(door, "import", library, "get", ANALYSIS_OP, "list", PARENT)
        finally:
            code = gateway.stop()
    assert code == 0, gateway.log_tail()
    log = "".join(gateway.lines)
    assert "types from google.cloud" not in log  # the library was not imported
    assert "cannot render Any" not in log
    assert [op["name"] for op in got] == [ANALYSIS_OP, ANALYSIS_OP, BULK_OP]
    assert_service_operations_round_trip({op["name"]: op for op in got[1:]})


# -- an Any nobody can resolve: answered in its place as an ErrorInfo (README, REST/JSON)


def http_get(door: Door, path: str) -> tuple[int, dict[str, str], Any]:
    request = urllib.request.Request(
        f"{door.endpoint}{path}", headers={"Authorization": f"Bearer {door.token}"}
    )
    with _OPENER.open(request, timeout=10) as response:
        return response.status, dict(response.headers), json.loads(response.read())


def unresolved_form(url: str, value: bytes) -> dict[str, Any]:
    """What stands in for an Any of a type the gateway cannot render (README, REST/JSON)."""
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": "ANY_TYPE_UNRESOLVED",
        "domain": "opsgate",
        "metadata": {"typeUrl": url, "value": base64.b64encode(value).decode()},
    }


def test_an_unresolvable_type_is_answered_losslessly(
    loop: LoopThread, identity: Identity, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="opsgate.rest")
    hidden = unresolved_form(HIDDEN_TYPE, hidden_bytes())
    with in_process_door(loop, identity, service_store(unresolvable=True)) as door:
        status, headers, body = http_get(door, f"/v1/{HIDDEN_OP}")
        assert status == 200
        assert headers[UNRESOLVED_HEADER] == HIDDEN_TYPE
        assert body == {"name": HIDDEN_OP, "done": True, "metadata": hidden, "response": hidden}

        status, headers, body = http_get(door, f"/v1/{FAILED_OP}")
        assert (status, headers[UNRESOLVED_HEADER]) == (200, HIDDEN_TYPE)
        assert body["metadata"]["@type"].endswith("CreateAnalysisOperationMetadata")
        assert body["metadata"]["conversation"] == f"{PARENT}/conversations/c-1"
        assert body["error"] == {
            "code": 9,
            "message": "precondition",
            "details": [
                hidden,
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "STATE"},
            ],
        }

        # A page with resolvable and unresolvable operations: every one there, in order; an
        # unresolvable Any nested in a known type (a partial error's detail) is replaced alone.
        status, headers, body = http_get(door, f"/v1/{PARENT}/operations")
        assert status == 200
        assert headers[UNRESOLVED_HEADER] == f"{OTHER_HIDDEN_TYPE},{HIDDEN_TYPE}"
        names = [op["name"] for op in body["operations"]]
        assert names == [ANALYSIS_OP, BULK_OP, FAILED_OP, HIDDEN_OP]
        analysis_json = body["operations"][0]
        assert analysis_json["response"]["name"].endswith("/analyses/a-1")
        (partial,) = body["operations"][1]["metadata"]["partialErrors"]
        assert partial["details"] == [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": "QUOTA",
                "domain": "acme.example",
            },
            unresolved_form(OTHER_HIDDEN_TYPE, b""),
        ]
        assert body["operations"][3] == {
            "name": HIDDEN_OP,
            "done": True,
            "metadata": hidden,
            "response": hidden,
        }

        # A resolvable answer has no such header.
        _, headers, _ = http_get(door, f"/v1/{ANALYSIS_OP}")
        assert UNRESOLVED_HEADER not in headers

        # google-api-core's client, with the service's types and without the hidden ones,
        # still reads every operation (polling goes on) and gets the original bytes back.
        library = "google.cloud.contact_center_insights_v1"
        got = run_client(door, "get", HIDDEN_OP, "import", library, "list", PARENT)
    assert [op["name"] for op in got] == [HIDDEN_OP, ANALYSIS_OP, BULK_OP, FAILED_OP, HIDDEN_OP]
    assert got[0]["done"] is True
    info = unpacked(got[0]["metadata"], error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == ("ANY_TYPE_UNRESOLVED", "opsgate")
    assert info.metadata["typeUrl"] == HIDDEN_TYPE
    assert base64.b64decode(info.metadata["value"]) == hidden_bytes()
    assert got[3]["error"]["code"] == 9

    # One warning per type URL, however many answers carried it, naming the fix.
    warnings = [r.getMessage() for r in caplog.records if "cannot render Any" in r.getMessage()]
    assert len(warnings) == 2, warnings
    assert HIDDEN_TYPE in warnings[0] or HIDDEN_TYPE in warnings[1]
    assert all("rest.descriptor_sets" in w and "rest.type_modules" in w for w in warnings)


@pytest.fixture(autouse=True)
def _no_proxy_in_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in _PROXY_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    assert "HTTP_PROXY" not in os.environ
