"""gateway.testing.envoy starts a real Envoy: ports learnt by listener name, restart on the same
ports, several at once, a refused config explained."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest

from gateway.testing.envoy import (
    ADMIN_LISTENER,
    EnvoyProcess,
    envoy_available,
    envoy_process,
    validate,
)
from gateway.testing.processes import ProcessError

pytestmark = pytest.mark.skipif(not envoy_available(), reason="no envoy binary")

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _listener(name: str, body: str) -> dict[str, Any]:
    """A listener on 127.0.0.1:0 answering every request 200 with `body`."""
    return {
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": HCM,
                            "stat_prefix": name,
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": "all",
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": {"prefix": "/"},
                                                "direct_response": {
                                                    "status": 200,
                                                    "body": {"inline_string": body},
                                                },
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {"@type": ROUTER},
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def _bootstrap(*listeners: dict[str, Any]) -> dict[str, Any]:
    return {"static_resources": {"listeners": list(listeners)}}


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        return reply.status, reply.read().decode()


def test_two_listeners_answer_on_the_ports_it_learnt() -> None:
    bootstrap = _bootstrap(_listener("one", "first"), _listener("two", "second"))
    with envoy_process(bootstrap) as envoy:
        assert set(envoy.ports) == {"one", "two", ADMIN_LISTENER}
        assert envoy.ports["one"] != envoy.ports["two"]
        assert _get(envoy.url("one", "/any/path")) == (200, "first")
        assert _get(envoy.url("two")) == (200, "second")
        assert envoy.admin_get("/ready").strip() == "LIVE"
        assert envoy.stats(r"^http\.one\.downstream_rq_2xx$") == {"http.one.downstream_rq_2xx": 1}
        # The caller's dict is never changed: port 0 stays port 0 for the next one.
    assert (
        bootstrap["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
        == 0
    )


def test_restart_after_a_kill_or_a_stop_comes_back_on_the_same_ports() -> None:
    with envoy_process(_bootstrap(_listener("web", "up"))) as envoy:
        ports, first_pid = dict(envoy.ports), envoy.pid
        envoy.kill()
        assert not envoy.process.alive()
        envoy.restart()
        assert envoy.ports == ports and envoy.pid != first_pid
        assert _get(envoy.url("web")) == (200, "up")
        assert envoy.stop() == 0  # drained, then SIGTERM: a clean exit
        envoy.restart()
        assert envoy.ports == ports
        assert _get(envoy.url("web")) == (200, "up")


def test_several_envoys_run_at_once() -> None:
    with (
        envoy_process(_bootstrap(_listener("web", "a")), name="a") as a,
        envoy_process(_bootstrap(_listener("web", "b")), name="b") as b,
    ):
        assert a.ports["web"] != b.ports["web"]
        assert _get(a.url("web")) == (200, "a")
        assert _get(b.url("web")) == (200, "b")


def test_a_refused_config_says_why() -> None:
    broken = _listener("web", "x")
    broken["filter_chains"][0]["filters"][0]["typed_config"]["no_such_field"] = True
    with pytest.raises(ProcessError, match="no_such_field"):
        validate(_bootstrap(broken))
    with pytest.raises(ProcessError, match="no_such_field"):
        envoy_process(_bootstrap(broken), timeout=20)
    assert "envoy refused" not in validate(_bootstrap(_listener("web", "x")))


def test_an_unknown_listener_is_named_in_the_error() -> None:
    with (
        envoy_process(_bootstrap(_listener("web", "x"))) as envoy,
        pytest.raises(ProcessError, match="no listener 'nope'"),
    ):
        envoy.address("nope")
    assert isinstance(envoy, EnvoyProcess)
