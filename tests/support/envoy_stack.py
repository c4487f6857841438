"""A real Envoy in front of the reference upstream, asking a real opsgate (the proxy's own gateway,
with `envoy:` on) about every call: the stack the Envoy door's end-to-end tests run against."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from google.api_core import operations_v1

from gateway.envoy.bootstrap import GRPC_LISTENER, REST_LISTENER, EnvoyLayout, render_bootstrap
from gateway.testing.envoy import EnvoyProcess, envoy_process
from gateway.testing.loop import LoopThread
from tests.support.bearer import with_bearer
from tests.support.stack import EXAMPLE_POLICY, Identity, Stack, running_stack

# Plain HTTP to 127.0.0.1, never through a proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class EnvoyStack:
    """`own` is opsgate's own door (the proxy) on the same gateway that authorizes for Envoy."""

    own: Stack
    envoy: EnvoyProcess
    raw_gateway_channel: grpc.Channel  # to Envoy's gRPC listener, no credentials

    @property
    def identity(self) -> Identity:
        return self.own.identity

    def with_token(self, token: str | None) -> operations_v1.OperationsClient:
        return operations_v1.OperationsClient(with_bearer(self.raw_gateway_channel, token))

    def settled(self, timeout: float = 10.0) -> None:
        """Wait until Envoy has reported the ending of every call it let through."""
        door = self.own.gateway.envoy
        assert door is not None
        deadline = time.monotonic() + timeout
        while door.join.waiting:
            if time.monotonic() > deadline:
                raise AssertionError(f"{door.join.waiting} calls' endings never reported")
            time.sleep(0.02)

    def recorded(self, count: int, timeout: float = 10.0) -> None:
        """Wait until the trail holds `count` records (an allowed call's is written when
        Envoy's access-log entry for it arrives)."""
        deadline = time.monotonic() + timeout
        while len(self.own.sink.outcomes()) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.own.sink.outcomes())} records, not {count}")
            time.sleep(0.02)

    def rest(
        self, verb: str, path: str, token: str | None = None, body: bytes | None = None
    ) -> HttpReply:
        """One HTTP request to Envoy's REST listener."""
        return http_request(self.envoy.url(REST_LISTENER, path), verb, token, body)


def http_request(
    url: str, verb: str, token: str | None = None, body: bytes | None = None
) -> HttpReply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=body, method=verb, headers=headers)
    try:
        with _OPENER.open(request, timeout=10) as reply:
            return HttpReply(reply.status, dict(reply.headers.items()), reply.read())
    except urllib.error.HTTPError as error:
        return HttpReply(error.code, dict(error.headers.items()), error.read())


def envoy_yaml(protocol: str, more: str = "") -> str:
    """opsgate's `envoy:` section for Envoy asking over `protocol` ('grpc' or 'http')."""
    http = "http_listen: 127.0.0.1:0" if protocol == "http" else ""
    return f"envoy: {{{', '.join(p for p in (http, more) if p)}}}\n"


def bootstrap_for(stack: Stack, **layout: Any) -> dict[str, Any]:
    """Envoy's bootstrap, as `opsgate envoy-config` writes it, on loopback ports of its own."""
    assert stack.settings is not None
    defaults: dict[str, Any] = {
        "listen": "127.0.0.1:0",
        "rest_listen": "127.0.0.1:0",
        "upstream": stack.upstream.address,
        "authorizer": stack.gateway.address,
        "authorizer_http": stack.gateway.envoy_http_address,  # None: Envoy asks over gRPC
        "admin": "127.0.0.1:0",
    }
    return render_bootstrap(
        stack.settings,
        EnvoyLayout(**{**defaults, **layout}),
        profile=stack.gateway.pipeline.profile,
    )


@contextmanager
def running_envoy_stack(
    loop: LoopThread,
    identity: Identity,
    *,
    policy: Path | None = EXAMPLE_POLICY,
    envoy_yaml: str = "envoy: {}\n",
    authentication_yaml: str = "",
    authorization_yaml: str = "",
    **layout: Any,
) -> Iterator[EnvoyStack]:
    with ExitStack() as stack:
        own = stack.enter_context(
            running_stack(
                loop,
                identity,
                seed=True,
                policy=policy,
                extra_yaml=envoy_yaml,
                authentication_yaml=authentication_yaml,
                authorization_yaml=authorization_yaml,
            )
        )
        envoy = stack.enter_context(envoy_process(bootstrap_for(own, **layout), name="envoy-e2e"))
        channel = stack.enter_context(grpc.insecure_channel(envoy.address(GRPC_LISTENER)))
        yield EnvoyStack(own, envoy, channel)
