"""The benchmark harness, run as CI runs it: `--quick`. No timing is asserted.

`python -m benchmarks --quick --no-install` starts the reference upstream, the gateway and every
row it can, drives them, runs the micro-benchmarks, library mode, scale, memory and long calls,
and must write the report and the JSON with every section and no phase error, on a machine
without h2load, nginx, cedarpy, casbin or matplotlib as well (those parts are skipped with a
note). It fails when the harness breaks, never on a figure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import engines, h2load, policygen, procs, stats, targets, wire

REPO = Path(__file__).resolve().parents[2]

SECTIONS = (
    "## Targets",
    "## End-to-end rows",
    "## Library mode",
    "## Scale",
    "## Memory",
    "## Long calls",
    "## Micro-benchmarks",
    "## Profiles",
    "## Environment",
    "## Notes",
)


@pytest.mark.timeout(420)
def test_quick_run_writes_the_report_and_the_json(tmp_path: Path) -> None:
    env = dict(os.environ, GRPC_VERBOSITY="ERROR")
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--no-install", "--out", str(tmp_path)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = (tmp_path / "REPORT.md").read_text()
    for section in SECTIONS:
        assert section in report, section
    results = json.loads((tmp_path / "results.json").read_text())
    assert {"meta", "environment", "targets", "rows", "micro", "notes"} <= results.keys()
    assert results["errors"] == []
    assert results["meta"]["mode"] == "quick"
    assert {t["key"] for t in results["targets"]} >= {"warm_cpu", "cold_cpu", "decision_cached"}
    for key in ("opsgate-warm-py", "opsgate-cold-py"):
        row = results["rows"][key]
        assert row["check_passed"], row["check"]
        assert row["concurrency"]["16"]["calls"] == [1500, 1500, 1500]  # 3 repeats, every call
    if "opsgate-rest" in results["rows"]:  # an h2load row: only where h2load is installed
        assert results["rows"]["opsgate-rest"]["check_passed"], results["rows"]["opsgate-rest"]
    skipped = {entry["phase"] for entry in results["skipped"]}  # over budget: said, not broken
    for phase in ("library", "scale", "long_calls", "memory"):
        assert results.get(phase) or phase in skipped, f"{phase} neither ran nor was skipped"
    assert results["micro"]["policy"]["effects"]["100"]["allow via nested group"] == "ALLOW"
    assert results["environment"]["versions"]["python"]


def test_h2load_summary_and_log_are_read(tmp_path: Path) -> None:
    summary = (
        "finished in 500.63ms, 11956.00 req/s, 6.24MB/s\n"
        "requests: 5978 total, 5982 started, 5978 done, 5970 succeeded, 8 failed, 0 errored, "
        "0 timeout\n"
    )
    assert h2load.parse_summary(summary) == (0.50063, 11956.0, 5970, 8, 0)
    log = tmp_path / "log.tsv"
    log.write_text("1\t200\t850\n2\t200\t900\n3\t503\t100\n")
    assert h2load.parse_log(log) == ([850, 900, 100], 1)
    assert h2load.connections_for(1) == (1, 1)
    assert h2load.connections_for(64) == (16, 4)


def test_h2load_drives_grpc_posts_or_http1_gets(tmp_path: Path) -> None:
    log = tmp_path / "log.tsv"
    grpc_argv = h2load.argv_for(
        "http://a/m", tmp_path / "b", concurrency=64, seconds=1, token="t", log_path=log
    )
    assert "content-type: application/grpc" in grpc_argv and "--h1" not in grpc_argv
    assert grpc_argv[grpc_argv.index("-c") + 1 :][:3] == ["16", "-m", "4"]
    rest_argv = h2load.argv_for(
        "http://a/v1/x", None, concurrency=64, seconds=1, token="t", log_path=log, h1=True
    )
    assert "--h1" in rest_argv and "-d" not in rest_argv
    assert "content-type: application/grpc" not in rest_argv
    assert rest_argv[rest_argv.index("-c") + 1 :][:3] == ["64", "-m", "1"]  # no pipelining
    assert "authorization: Bearer t" in rest_argv and rest_argv[-1] == "http://a/v1/x"


def _cpu_row(cpu_us: float) -> dict[str, Any]:
    figures = {"cpu_us": stats.figure([cpu_us]), "rps": stats.figure([1e6 / cpu_us])}
    return {"concurrency": {"16": figures}}


def test_targets_are_issue_16s_and_the_rest_door_is_reported() -> None:
    results = {
        "rows": {
            "forwarder-fast": _cpu_row(800),
            "opsgate-warm": _cpu_row(990),  # 1.24x: within 1.25x
            "opsgate-rest": _cpu_row(1485),
        },
        "library": {
            "overhead_of_medians": 0.29,
            "concurrency": 16,
            "cpu_us": {"with": stats.figure([129]), "without": stats.figure([100])},
        },
    }
    found = {t["key"]: t for t in targets.evaluate(results, "python -m benchmarks")}
    assert found["warm_cpu"]["passed"] is True and "1.25x" in found["warm_cpu"]["target"]
    assert found["library"]["passed"] is True and "30%" in found["library"]["target"]
    assert found["rest_cpu"]["passed"] is None  # reported, not pass/fail
    assert found["rest_cpu"]["value"] == pytest.approx(1.5)
    assert "c=16: 1.50x (1485 vs 990 µs)" in found["rest_cpu"]["measured"]
    results["library"]["overhead_of_medians"] = 0.31
    missed = {t["key"]: t for t in targets.evaluate(results, "python -m benchmarks")}
    assert missed["library"]["passed"] is False


def test_cpu_and_memory_of_a_process_tree_are_read() -> None:
    user, system = procs.tree_cpu_seconds(os.getpid())
    assert user >= 0 and system >= 0
    assert os.getpid() in procs.descendants(os.getpid())
    assert procs.rss_bytes(os.getpid()) > 0
    assert procs.cpu_ticks(2**22 + 12345) == (0, 0)  # no such process


def test_grpc_frames_and_payload_comparison() -> None:
    message = wire.get_request()
    frame = wire.grpc_frame(message)
    assert frame[0] == 0 and int.from_bytes(frame[1:5], "big") == len(message)
    assert frame[5:] == message
    assert not wire.same_operation(b"\x0a\x01x", b"\x0a\x01y")


def test_figures_are_median_with_range() -> None:
    fig = stats.figure([3.0, 1.0, 2.0])
    assert (fig["median"], fig["min"], fig["max"]) == (2.0, 1.0, 3.0)
    assert stats.fmt(fig) == "2 (1\u20133)"
    assert stats.percentile([1, 2, 3, 4, 5], 0.5) == 3


def test_policygen_is_deterministic_and_the_rbac_translations_cover_it() -> None:
    data = policygen.generate(100)
    assert data == policygen.generate(100)
    rbac = engines.rbac_only(engines.with_case_grants(data))
    assert all("condition" not in b for entry in rbac["allow"] for b in entry["bindings"])
    cedar = engines.cedar_policies(rbac, lambda role: {"contactcenterinsights.operations.get"})
    assert 'principal in Group::"g5@acme.example"' in cedar
    lines = engines.casbin_lines(rbac, lambda role: {"p.x"}, engines.RBAC_CASES)
    assert any(line.startswith("g2, projects/p0/locations/l0, projects/p0") for line in lines)


def test_engines_agree_with_opsgate_when_installed(tmp_path: Path) -> None:
    pytest.importorskip("cedarpy")
    pytest.importorskip("casbin")
    from gateway.policy import load_policy_text

    rbac = engines.rbac_only(engines.with_case_grants(policygen.generate(100)))
    policy = load_policy_text(policygen.to_json(rbac), "rbac.json")
    cedar, _ = engines.cedar_decider(rbac, policy.role_permissions, engines.RBAC_CASES)
    casbin, _ = engines.casbin_decider(rbac, policy.role_permissions, engines.RBAC_CASES, tmp_path)
    for case in engines.RBAC_CASES:
        assert cedar(case)() == casbin(case)() == case.name.startswith("allow")


def _envoy_row(cpu_us: float, rps: float, authorizer_us: float | None = None) -> dict[str, Any]:
    figures = {
        "cpu_us": stats.figure([cpu_us]),
        "authorizer_cpu_us": stats.figure([authorizer_us] if authorizer_us else []),
        "total_cpu_us": stats.figure([cpu_us + (authorizer_us or 0.0)]),
        "rps": stats.figure([rps]),
        "p50_us": stats.figure([1e6 / rps]),
    }
    return {"concurrency": {"1": figures, "64": figures}}


def test_envoy_targets_are_issue_17s_ratios_within_the_phase() -> None:
    envoy = {
        "rows": {
            "opsgate-proxy": _envoy_row(1000, 1000),
            "envoy-authz-grpc": _envoy_row(250, 3000, 300),
            "envoy-authz-http": _envoy_row(280, 2800, 200),
            "envoy-opsgate": _envoy_row(240, 1600, 350),  # 590 µs: 0.59x; 1.6x req/s
            "envoy-opsgate-w2": _envoy_row(250, 2000, 400),
        }
    }
    found = {t["key"]: t for t in targets.envoy_targets(envoy, "python -m benchmarks --only envoy")}
    assert found["envoy_cpu"]["passed"] is True
    assert "Envoy 240 + authorizer 350" in found["envoy_cpu"]["measured"]
    assert found["envoy_throughput"]["passed"] is True
    assert found["envoy_latency"]["passed"] is True  # 1600 req/s at c=1 is a shorter p50
    assert found["authorizer_share"]["passed"] is True  # 350 / 240 = 1.46x
    assert found["authorizer_workers"]["passed"] is None
    assert found["authorizer_workers"]["value"] == pytest.approx(1.25)
    assert found["extauthz_protocol"]["passed"] is None
    assert "the floor is HTTP" in found["extauthz_protocol"]["measured"]
    envoy["rows"]["envoy-opsgate"] = _envoy_row(300, 1400, 500)
    missed = {t["key"]: t for t in targets.envoy_targets(envoy, "x")}
    assert [missed[k]["passed"] for k in ("envoy_cpu", "envoy_throughput", "authorizer_share")] == [
        False,
        False,
        False,
    ]
    assert all(t["passed"] is None for t in targets.envoy_targets({}, "x"))  # not measured


def test_minimal_authorizers_answer_allow() -> None:
    from benchmarks import minimal

    # CheckResponse{status: {}, ok_response: {}}: field 1 and 3, empty messages.
    assert minimal.OK_CHECK_RESPONSE == b"\x0a\x00\x1a\x00"
    sent: list[bytes] = []

    class Transport:
        def write(self, data: bytes) -> None:
            sent.append(data)

    protocol = minimal._Http200()
    protocol.connection_made(Transport())
    protocol.data_received(b"POST /check HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\nabc")
    protocol.data_received(b"defgGET /check HTTP/1.1\r\nhost: x\r\n\r\n")
    assert b"".join(sent) == minimal.HTTP_OK * 2


SMOKE_ENVOY = (sys.executable, "-m", "benchmarks", "--smoke", "--only", "envoy", "--no-install")


@pytest.mark.timeout(300)
def test_the_envoy_phase_runs_alone(tmp_path: Path) -> None:
    from gateway.testing.envoy import envoy_available

    if not envoy_available():
        pytest.skip("no envoy binary")
    done = subprocess.run(
        [*SMOKE_ENVOY, "--out", str(tmp_path)],
        cwd=REPO,
        env=dict(os.environ, GRPC_VERBOSITY="ERROR"),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == []
    rows = results["envoy"]["rows"]
    assert {"grpc-bare", "opsgate-proxy", "envoy-hop", "envoy-jwt-rbac"} <= rows.keys()
    assert {
        "envoy-authz-grpc",
        "envoy-authz-http",
        "envoy-opsgate",
        "envoy-opsgate-w2",
    } <= rows.keys()
    for key, row in rows.items():
        assert row["check_passed"], (key, row["check"])
    assert rows["envoy-opsgate"]["concurrency"]["4"]["authorizer_cpu_us"]["median"] > 0
    assert "## Envoy as the front end" in (tmp_path / "REPORT.md").read_text()
    assert {t["key"] for t in results["targets"]} >= {"envoy_cpu", "extauthz_protocol"}
