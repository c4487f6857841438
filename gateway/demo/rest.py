"""The demo's REST/JSON calls, printed the way `curl` would show them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from gateway.demo.identity import DemoIdentity
from gateway.reference_upstream.seed import DONE_OPERATION


@dataclass(frozen=True, slots=True)
class RestStep:
    caller: str
    method: str
    path: str
    expected_status: int


REST_STEPS: tuple[RestStep, ...] = (
    RestStep("alice@acme.example", "GET", f"/v1/{DONE_OPERATION}", 200),
    RestStep("bob@acme.example", "POST", f"/v1/{DONE_OPERATION}:cancel", 403),
)


def _lowered(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Header names are case-insensitive (Envoy sends them in lower case)."""
    return {key.lower(): value for key, value in headers}


def _fetch(url: str, method: str, token: str | None) -> tuple[int, dict[str, str], bytes]:
    data = b"{}" if method == "POST" else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, _lowered(response.headers.items()), response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, _lowered(err.headers.items()), err.read()


async def run_rest_steps(address: str, identity: DemoIdentity, out: TextIO) -> int:
    """Each step as a curl command and its answer; returns how many did not answer as expected."""
    failures = 0
    for step in REST_STEPS:
        token = identity.token(step.caller)
        body_flag = " -d '{}'" if step.method == "POST" else ""
        print(
            f"$ curl -X {step.method} -H 'Authorization: Bearer <{step.caller}>'{body_flag} "
            f"http://{address}{step.path}",
            file=out,
        )
        status, headers, body = await asyncio.to_thread(
            _fetch, f"http://{address}{step.path}", step.method, token
        )
        ok = status == step.expected_status
        failures += not ok
        print(
            f"HTTP {status}  X-Request-Id: {headers.get('x-request-id', '-')}"
            + ("" if ok else "  [FAIL]"),
            file=out,
        )
        print(_brief(body), file=out)
        print(file=out)
    return failures


def _brief(body: bytes, limit: int = 600) -> str:
    try:
        text = json.dumps(json.loads(body), indent=2)
    except ValueError:
        text = body.decode("utf-8", "replace")
    return text if len(text) <= limit else text[:limit] + "\n..."
