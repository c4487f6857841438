"""The generated Envoy bootstrap: fail closed, no caller-chosen ids or underscore headers, no route
timeout, the body limit from the config, the transcoder before ext_authz with the profile's paths;
and every variant is one that the real Envoy accepts (`envoy --mode validate`)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from gateway.config import ServerTls, Settings, UpstreamTls, load_settings
from gateway.envoy.bootstrap import (
    AUTHORIZER_CLUSTER,
    EXT_AUTHZ,
    GRPC_LISTENER,
    REST_LISTENER,
    TRANSCODER,
    UPSTREAM_CLUSTER,
    EnvoyLayout,
    render_bootstrap,
    to_yaml,
)
from gateway.envoy.descriptors import OPERATIONS_FILE
from gateway.envoy.settings import (
    CALL_ID_KEY,
    DOOR_KEY,
    GRPC_DOOR,
    LOGGED_RESPONSE_HEADERS,
    METADATA_NAMESPACE,
    REST_DOOR,
)
from gateway.errors import ConfigError
from gateway.profile import ServiceProfile, load_profile
from gateway.routing import SERVICE, SERVICE_PREFIX
from gateway.testing.envoy import envoy_available, validate
from tests.support.certs import Pki, make_pki

FULL_PROFILE = Path(__file__).resolve().parents[2] / "support" / "full_profile.yaml"
Obj = dict[str, Any]


def _settings(tmp_path: Path, extra: str = "", envoy: str = "{}") -> Settings:
    (tmp_path / "jwks.json").write_text('{"keys": []}')
    (tmp_path / "policy.yaml").write_text("allow: []\n")
    path = tmp_path / "opsgate.yaml"
    path.write_text(
        f"listen: 0.0.0.0:9000\nenvoy: {envoy}\n{extra}"
        "authentication:\n  issuers:\n    - issuer: https://idp.example.com\n"
        "      audiences: [opsgate]\n      jwks_file: jwks.json\n"
        "authorization:\n  policy_file: policy.yaml\n"
    )
    return load_settings(path, require_upstream=False)


LAYOUT = EnvoyLayout(
    listen="127.0.0.1:0", rest_listen="127.0.0.1:0", upstream="127.0.0.1:50051", admin="127.0.0.1:0"
)


def _listeners(bootstrap: Obj) -> dict[str, Obj]:
    return {listener["name"]: listener for listener in bootstrap["static_resources"]["listeners"]}


def _manager(listener: Obj) -> Obj:
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    manager: Obj = hcm["typed_config"]
    return manager


def _filter(manager: Obj, name: str) -> Obj:
    (found,) = [f["typed_config"] for f in manager["http_filters"] if f["name"] == name]
    config: Obj = found
    return config


def _route(manager: Obj) -> Obj:
    (host,) = manager["route_config"]["virtual_hosts"]
    (route,) = host["routes"]
    found: Obj = route
    return found


def _cluster(bootstrap: Obj, name: str) -> Obj:
    (found,) = [c for c in bootstrap["static_resources"]["clusters"] if c["name"] == name]
    cluster: Obj = found
    return cluster


def _descriptor_rules(transcoder: Obj) -> dict[str, list[tuple[str, str, str]]]:
    """(verb, path, body) of every binding of every Operations method in the inline descriptor."""
    found = descriptor_pb2.FileDescriptorSet.FromString(
        base64.b64decode(transcoder["proto_descriptor_bin"])
    )
    (operations,) = [f for f in found.file if f.name == OPERATIONS_FILE]
    (service,) = operations.service
    rules: dict[str, list[tuple[str, str, str]]] = {}
    for method in service.method:
        option = method.options.Extensions[annotations_pb2.http]
        bindings = [option, *option.additional_bindings] if option.WhichOneof("pattern") else []
        rules[method.name] = [
            (b.WhichOneof("pattern").upper(), getattr(b, b.WhichOneof("pattern")), b.body)
            for b in bindings
        ]
    return rules


# --- the shape ---------------------------------------------------------------------------------


@pytest.mark.parametrize("listener", [GRPC_LISTENER, REST_LISTENER])
def test_every_listener_fails_closed_and_sends_the_whole_body(
    tmp_path: Path, listener: str
) -> None:
    settings = _settings(tmp_path, envoy="{max_body_bytes: 12345}")
    manager = _manager(_listeners(render_bootstrap(settings, LAYOUT))[listener])
    authz = _filter(manager, EXT_AUTHZ)
    assert authz["failure_mode_allow"] is False
    assert authz["status_on_error"] == {"code": "ServiceUnavailable"}  # UNAVAILABLE, not 403
    assert authz["transport_api_version"] == "V3"
    assert authz["grpc_service"]["envoy_grpc"] == {"cluster_name": AUTHORIZER_CLUSTER}
    assert authz["grpc_service"]["timeout"] == "2s"
    assert authz["with_request_body"] == {
        "max_request_bytes": 12345 + 5,  # the message's limit plus the frame header
        "allow_partial_message": False,
        "pack_as_bytes": True,
    }
    assert authz["include_peer_certificate"] is True
    # The authorizer's metadata lands under the namespace the access log is read by.
    assert EXT_AUTHZ == METADATA_NAMESPACE


@pytest.mark.parametrize("listener", [GRPC_LISTENER, REST_LISTENER])
def test_callers_choose_no_request_id_no_address_and_no_underscore_header(
    tmp_path: Path, listener: str
) -> None:
    manager = _manager(_listeners(render_bootstrap(_settings(tmp_path), LAYOUT))[listener])
    assert manager["common_http_protocol_options"]["headers_with_underscores_action"] == (
        "REJECT_REQUEST"
    )
    assert manager["generate_request_id"] is True
    assert manager["preserve_external_request_id"] is False
    assert manager["use_remote_address"] is True
    assert manager["xff_num_trusted_hops"] == 0


@pytest.mark.parametrize(
    ("listener", "door"), [(GRPC_LISTENER, GRPC_DOOR), (REST_LISTENER, REST_DOOR)], ids=str
)
def test_one_route_for_everything_with_no_timeout_and_the_listeners_door(
    tmp_path: Path, listener: str, door: str
) -> None:
    manager = _manager(_listeners(render_bootstrap(_settings(tmp_path), LAYOUT))[listener])
    route = _route(manager)
    assert route["match"] == {"prefix": "/"}
    assert route["route"]["cluster"] == UPSTREAM_CLUSTER
    assert route["route"]["timeout"] == "0s"
    assert route["route"]["max_stream_duration"] == {"grpc_timeout_header_max": "0s"}
    per_filter = route["typed_per_filter_config"][EXT_AUTHZ]
    assert per_filter["check_settings"]["context_extensions"] == {DOOR_KEY: door}


def test_no_call_outlives_the_wait_for_its_access_log_entry(tmp_path: Path) -> None:
    settings = _settings(tmp_path, envoy="{completion_timeout_s: 100}")
    layout = EnvoyLayout(upstream="127.0.0.1:1", longest_call_s=90)
    manager = _manager(_listeners(render_bootstrap(settings, layout))[GRPC_LISTENER])
    assert manager["stream_idle_timeout"] == "90s"
    assert manager["common_http_protocol_options"]["max_stream_duration"] == "90s"
    with pytest.raises(ConfigError, match=r"completion_timeout_s.*must exceed"):
        render_bootstrap(settings, EnvoyLayout(upstream="127.0.0.1:1", longest_call_s=100))


def test_the_transcoder_runs_before_ext_authz_on_the_rest_listener_only(tmp_path: Path) -> None:
    """On the REST listener the Lua filter comes first, so it is the last on the way out: it
    turns the transcoder's rendering of an upstream error into Google's JSON error."""
    listeners = _listeners(render_bootstrap(_settings(tmp_path), LAYOUT))
    rest = [f["name"] for f in _manager(listeners[REST_LISTENER])["http_filters"]]
    grpc = [f["name"] for f in _manager(listeners[GRPC_LISTENER])["http_filters"]]
    assert rest == [
        "envoy.filters.http.lua",
        TRANSCODER,
        EXT_AUTHZ,
        "envoy.filters.http.router",
    ]
    assert grpc == [EXT_AUTHZ, "envoy.filters.http.router"]
    transcoder = _filter(_manager(listeners[REST_LISTENER]), TRANSCODER)
    assert transcoder["services"] == [SERVICE]
    assert transcoder["request_validation_options"]["reject_unknown_method"] is True
    assert transcoder["request_validation_options"]["reject_unknown_query_parameters"] is True


@pytest.mark.parametrize(
    "profile",
    [load_profile(), load_profile(path=FULL_PROFILE)],
    ids=["contactcenterinsights", "full-no-rest"],
)
def test_the_descriptor_carries_exactly_the_profiles_rest_paths(
    tmp_path: Path, profile: ServiceProfile
) -> None:
    bootstrap = render_bootstrap(_settings(tmp_path), LAYOUT, profile=profile)
    transcoder = _filter(_manager(_listeners(bootstrap)[REST_LISTENER]), TRANSCODER)
    expected: dict[str, list[tuple[str, str, str]]] = {}
    for method, rule in profile.http_rules:
        expected.setdefault(method.removeprefix(SERVICE_PREFIX), []).append(
            (rule.verb, rule.template.text, rule.body)
        )
    found = _descriptor_rules(transcoder)
    assert {name: rules for name, rules in found.items() if rules} == expected
    # googleapis' own binding (/v1/{name=operations/**}) is gone from every method.
    assert set(found) == {
        "ListOperations",
        "GetOperation",
        "DeleteOperation",
        "CancelOperation",
        "WaitOperation",
    }


def test_the_builtin_profile_reaches_envoy_as_googles_rest_paths(tmp_path: Path) -> None:
    bootstrap = render_bootstrap(_settings(tmp_path), LAYOUT)
    rules = _descriptor_rules(_filter(_manager(_listeners(bootstrap)[REST_LISTENER]), TRANSCODER))
    assert ("GET", "/v1/{name=projects/*/locations/*/operations/*}", "") in rules["GetOperation"]
    assert (
        "POST",
        "/v1/{name=projects/*/locations/*/operations/*}:cancel",
        "*",
    ) in rules["CancelOperation"]
    assert rules["DeleteOperation"] == rules["WaitOperation"] == []


@pytest.mark.parametrize("listener", [GRPC_LISTENER, REST_LISTENER])
def test_the_access_log_reports_allowed_calls_endings_to_opsgate(
    tmp_path: Path, listener: str
) -> None:
    settings = _settings(tmp_path, envoy="{log_name: edge-7}")
    (log,) = _manager(_listeners(render_bootstrap(settings, LAYOUT))[listener])["access_log"]
    assert log["name"] == "envoy.access_loggers.http_grpc"
    config = log["typed_config"]
    assert config["common_config"]["log_name"] == "edge-7"
    assert config["common_config"]["grpc_service"]["envoy_grpc"] == {
        "cluster_name": AUTHORIZER_CLUSTER
    }
    assert config["common_config"]["transport_api_version"] == "V3"
    assert config["additional_response_headers_to_log"] == list(LOGGED_RESPONSE_HEADERS)
    assert config["additional_response_trailers_to_log"] == list(LOGGED_RESPONSE_HEADERS)
    allowed, refused_by_ext_authz = log["filter"]["or_filter"]["filters"]
    matcher = allowed["metadata_filter"]
    assert matcher["matcher"]["filter"] == METADATA_NAMESPACE
    assert matcher["matcher"]["path"] == [{"key": CALL_ID_KEY}]
    assert matcher["match_if_key_not_found"] is False
    assert refused_by_ext_authz == {"response_flag_filter": {"flags": ["UAEX"]}}


def test_both_clusters_speak_http2_and_are_health_checked(tmp_path: Path) -> None:
    bootstrap = render_bootstrap(_settings(tmp_path), LAYOUT)
    for name in (UPSTREAM_CLUSTER, AUTHORIZER_CLUSTER):
        cluster = _cluster(bootstrap, name)
        (options,) = cluster["typed_extension_protocol_options"].values()
        assert "http2_protocol_options" in options["explicit_http_config"]
        (check,) = cluster["health_checks"]
        assert "grpc_health_check" in check
    # A wildcard `listen` is asked on loopback: opsgate beside Envoy.
    authorizer = _cluster(bootstrap, AUTHORIZER_CLUSTER)["load_assignment"]["endpoints"][0]
    address = authorizer["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": "127.0.0.1", "port_value": 9000}


# --- refusals ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "envoy", "layout", "problem"),
    [
        ("upstream: {target: '127.0.0.1:1'}\n", "null", EnvoyLayout(), r"key 'envoy': is missing"),
        ("", "{}", EnvoyLayout(), r"key 'upstream': is not set"),
        ("", "{}", EnvoyLayout(upstream="127.0.0.1"), r"not HOST:PORT"),
        ("", "{}", EnvoyLayout(upstream="unix:relative"), r"unix:/ABSOLUTE/PATH"),
        (
            "tls: {cert_file: c.pem, key_file: c.pem}\n",
            "{}",
            EnvoyLayout(upstream="127.0.0.1:1"),
            r"--authorizer-ca",
        ),
        (
            "tls: {cert_file: c.pem, key_file: c.pem, client_ca_file: c.pem, "
            "require_client_cert: true}\n",
            "{}",
            EnvoyLayout(upstream="127.0.0.1:1", authorizer_tls=UpstreamTls(ca_file=Path("c"))),
            r"--authorizer-cert",
        ),
        (
            "",
            "{}",
            EnvoyLayout(upstream="127.0.0.1:1", authorizer_tls=UpstreamTls(ca_file=Path("c"))),
            r"opsgate listens in plaintext",
        ),
    ],
    ids=[
        "no-envoy-section",
        "no-upstream",
        "upstream-without-port",
        "relative-unix-socket",
        "tls-without-ca",
        "mtls-without-client-cert",
        "tls-flags-for-plaintext",
    ],
)
def test_what_cannot_work_is_refused_with_the_key_to_fix(
    tmp_path: Path, extra: str, envoy: str, layout: EnvoyLayout, problem: str
) -> None:
    (tmp_path / "c.pem").write_text("x")
    settings = _settings(tmp_path, extra, envoy)
    with pytest.raises(ConfigError, match=problem):
        render_bootstrap(settings, layout)


# --- the real Envoy accepts every variant ------------------------------------------------------


def _pki(tmp_path: Path) -> Pki:
    directory = tmp_path / "pki"
    directory.mkdir()
    return make_pki(directory)


def _variant(tmp_path: Path, name: str) -> Obj:
    """One rendered variant, with real certificate files where it names any."""
    if name == "grpc-only":
        return render_bootstrap(_settings(tmp_path), EnvoyLayout(upstream="127.0.0.1:50051"))
    if name == "grpc-and-rest":
        return render_bootstrap(_settings(tmp_path), LAYOUT)
    if name == "unix-socket-and-dns":
        layout = EnvoyLayout(
            upstream="unix:///run/ops/ops.sock", authorizer="opsgate.internal:9000"
        )
        return render_bootstrap(_settings(tmp_path), layout)
    if name == "custom-profile-without-rest-paths":
        return render_bootstrap(
            _settings(tmp_path), LAYOUT, profile=load_profile(path=FULL_PROFILE)
        )
    pki = _pki(tmp_path)
    if name == "upstream-tls-from-config":
        extra = (
            f"upstream:\n  target: ops.internal:443\n  tls: {{ca_file: {pki.ca_file}, "
            f"cert_file: {pki.client.cert_file}, key_file: {pki.client.key_file}}}\n"
        )
        return render_bootstrap(_settings(tmp_path, extra), EnvoyLayout())
    if name == "tls-everywhere":
        extra = (
            f"tls: {{cert_file: {pki.server.cert_file}, key_file: {pki.server.key_file}, "
            f"client_ca_file: {pki.ca_file}, require_client_cert: true}}\n"
        )
        layout = EnvoyLayout(
            rest_listen="0.0.0.0:10001",
            upstream="127.0.0.1:50051",
            authorizer="localhost:9000",
            tls=ServerTls(pki.server.cert_file, pki.server.key_file, pki.ca_file, True),
            authorizer_tls=UpstreamTls(
                ca_file=pki.ca_file, cert_file=pki.client.cert_file, key_file=pki.client.key_file
            ),
        )
        return render_bootstrap(_settings(tmp_path, extra), layout)
    raise AssertionError(name)


VARIANTS = [
    "grpc-only",
    "grpc-and-rest",
    "unix-socket-and-dns",
    "custom-profile-without-rest-paths",
    "upstream-tls-from-config",
    "tls-everywhere",
]


@pytest.mark.skipif(not envoy_available(), reason="no envoy binary")
@pytest.mark.parametrize("name", VARIANTS)
def test_envoy_accepts_every_variant(tmp_path: Path, name: str) -> None:
    bootstrap = _variant(tmp_path, name)
    validate(bootstrap)
    # The YAML the CLI writes is the same config.
    path = tmp_path / "envoy.yaml"
    path.write_text(to_yaml(bootstrap, ["generated"]))
    validate(path)


def test_tls_everywhere_verifies_names_and_presents_certificates(tmp_path: Path) -> None:
    bootstrap = _variant(tmp_path, "tls-everywhere")
    authorizer = _cluster(bootstrap, AUTHORIZER_CLUSTER)["transport_socket"]["typed_config"]
    assert authorizer["sni"] == "localhost"
    validation = authorizer["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "DNS", "matcher": {"exact": "localhost"}}
    ]
    assert authorizer["common_tls_context"]["tls_certificates"]
    for listener in _listeners(bootstrap).values():
        (chain,) = listener["filter_chains"]
        downstream = chain["transport_socket"]["typed_config"]
        assert downstream["require_client_certificate"] is True
        assert downstream["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]


# --- the command -------------------------------------------------------------------------------


def test_the_command_writes_the_bootstrap_envoy_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli import main

    _settings(tmp_path)
    config = str(tmp_path / "opsgate.yaml")
    out = tmp_path / "envoy.yaml"
    flags = ["--upstream", "127.0.0.1:50051", "--rest-listen", "127.0.0.1:8081"]
    assert main(["envoy-config", "--config", config, *flags, "--out", str(out)]) == 0
    assert main(["envoy-config", "--config", config, *flags]) == 0
    printed = capsys.readouterr().out
    assert printed == out.read_text()
    assert printed.startswith("# Envoy bootstrap written by `opsgate envoy-config`")
    loaded = yaml.safe_load(printed)
    assert set(_listeners(loaded)) == {GRPC_LISTENER, REST_LISTENER}
    assert loaded == render_bootstrap(
        _settings(tmp_path),
        EnvoyLayout(upstream="127.0.0.1:50051", rest_listen="127.0.0.1:8081"),
    )
    if envoy_available():
        validate(out)


@pytest.mark.parametrize(
    ("flags", "problem"),
    [
        ([], "give --upstream"),
        (["--upstream", "h:1", "--tls-cert", "c.pem"], "needs --tls-key"),
        (["--upstream", "h:1", "--authorizer-cert", "c.pem"], "go together"),
        (["--upstream", "h:1", "--listen", "nowhere"], "not HOST:PORT"),
    ],
    ids=["no-upstream", "cert-without-key", "client-cert-without-key", "bad-listen"],
)
def test_the_command_refuses_with_exit_2_and_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flags: list[str], problem: str
) -> None:
    from gateway.cli import main

    _settings(tmp_path)
    assert main(["envoy-config", "--config", str(tmp_path / "opsgate.yaml"), *flags]) == 2
    assert problem in capsys.readouterr().err
