"""`opsgate envoy-compile`, run through the CLI's own main() in a scratch directory: what it
writes (and that Envoy takes it), and every refusal: exit 1, each problem printed with the file
(and line) it is at, and the files already written left exactly as they were."""

from __future__ import annotations

import json
import stat
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from gateway.cli import main
from gateway.envoy.bootstrap import GRPC_LISTENER
from gateway.policy.loader import load_policy
from gateway.profile import load_profile
from gateway.testing.envoy import envoy_available, validate
from tests.support.compiled_stack import static_bootstrap
from tests.support.stack import make_identity

needs_envoy = pytest.mark.skipif(not envoy_available(), reason="no envoy binary")

OUTPUTS = ("bootstrap.yaml", "lds.json", "cds.json")
POLICY = """\
allow:
  - resource: projects/acme
    bindings:
      - role: roles/contactcenterinsights.viewer
        members: [user:alice@example.com, group:eng@example.com]
      - role: roles/contactcenterinsights.editor
        members: [user:bob@example.com]
        condition:
          title: until 2030
          expression: request.time < timestamp("2030-01-01T00:00:00Z")
deny:
  - resource: projects/acme/locations/eu
    rules:
      - deniedPrincipals: [principal://goog/subject/mallory@example.com]
        deniedPermissions: [contactcenterinsights.googleapis.com/operations.get]
groups:
  eng@example.com: [user:carol@example.com]
"""


@dataclass
class Project:
    """An operator's directory: a config, its policy and key set, and the output directory."""

    directory: Path
    jwks_file: Path

    @property
    def config(self) -> Path:
        return self.directory / "opsgate.yaml"

    @property
    def policy(self) -> Path:
        return self.directory / "policy.yaml"

    @property
    def out(self) -> Path:
        return self.directory / "out"

    def write_config(self, authentication: str = "", top: str = "", upstream: bool = True) -> None:
        issuer = (
            "  issuers:\n"
            "    - issuer: https://idp.opsgate.test\n"
            "      audiences: [opsgate-tests]\n"
            f"      jwks_file: {self.jwks_file}\n"
            "      groups_claim: groups\n"
        )
        self.config.write_text(
            ("upstream:\n  target: 127.0.0.1:50051\n" if upstream else "")
            + f"authentication:\n{issuer}{authentication}"
            + f"authorization:\n  policy_file: {self.policy}\n"
            + top
        )

    def compile(self, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
        argv = ["envoy-compile", "--config", str(self.config), "--out", str(self.out)]
        argv += ["--listen", "127.0.0.1:0", "--admin", "127.0.0.1:0", *extra]
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    def snapshot(self) -> dict[str, bytes]:
        """Every file in the output directory, by name (temporary files included)."""
        return {p.name: p.read_bytes() for p in sorted(self.out.iterdir())}

    def json(self, name: str) -> dict[str, Any]:
        document: dict[str, Any] = json.loads((self.out / name).read_text(encoding="utf-8"))
        return document


@pytest.fixture
def project(tmp_path: Path) -> Project:
    identity = make_identity(tmp_path)
    found = Project(tmp_path, identity.jwks_file)
    found.policy.write_text(POLICY)
    found.write_config()
    return found


def policy_etag(project: Project) -> str:
    return load_policy(project.policy, load_profile().permissions).etag


# --- what it writes -------------------------------------------------------------------------


def test_writes_the_bootstrap_and_the_two_resource_files(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = project.compile(capsys)
    assert code == 0, err
    assert sorted(p.name for p in project.out.iterdir()) == sorted(OUTPUTS)
    for name in OUTPUTS:
        mode = stat.S_IMODE((project.out / name).stat().st_mode)
        assert mode == 0o644, f"{name}: {oct(mode)} (Envoy may run as another user)"
    etag = policy_etag(project)
    lds, cds = project.json("lds.json"), project.json("cds.json")
    assert lds["version_info"] == cds["version_info"] == etag
    assert etag in out
    (listener,) = lds["resources"]
    assert listener["@type"] == "type.googleapis.com/envoy.config.listener.v3.Listener"
    assert listener["name"] == GRPC_LISTENER
    assert {c["name"] for c in cds["resources"]} >= {"upstream"}
    boot = yaml.safe_load((project.out / "bootstrap.yaml").read_text(encoding="utf-8"))
    sources = boot["dynamic_resources"]
    assert sources["lds_config"]["path_config_source"]["path"] == str(project.out / "lds.json")
    assert sources["cds_config"]["path_config_source"]["path"] == str(project.out / "cds.json")
    assert sources["lds_config"]["path_config_source"]["watched_directory"]["path"] == str(
        project.out
    )


def test_a_policy_edit_gives_a_new_version(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert project.compile(capsys)[0] == 0
    first = project.json("lds.json")["version_info"]
    project.policy.write_text(POLICY.replace("user:bob@example.com", "user:dave@example.com"))
    assert project.compile(capsys)[0] == 0
    second = project.json("lds.json")["version_info"]
    assert second == policy_etag(project) != first


def test_check_writes_nothing(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = project.compile(capsys, "--check")
    assert code == 0, err
    assert "compiles" in out
    assert not project.out.exists() or not any(project.out.iterdir())


@needs_envoy
def test_envoy_validates_the_bootstrap(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert project.compile(capsys)[0] == 0
    validate(project.out / "bootstrap.yaml")


@needs_envoy
def test_envoy_takes_the_compiled_listener_and_clusters(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same resources as static ones: validation then builds the listener itself, so
    every filter, matcher, regex and CEL expression in it is checked by Envoy."""
    assert project.compile(capsys)[0] == 0
    validate(static_bootstrap(project.out))


@needs_envoy
def test_envoy_refuses_a_listener_with_a_broken_regex(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """The witness that validation above does look inside the listener."""
    from gateway.testing.processes import ProcessError

    assert project.compile(capsys)[0] == 0
    text = (project.out / "lds.json").read_text(encoding="utf-8")
    broken = json.loads(text.replace('"regex":"', '"regex":"(', 1))
    boot = yaml.safe_load((project.out / "bootstrap.yaml").read_text(encoding="utf-8"))
    del boot["dynamic_resources"]
    listeners = [{k: v for k, v in r.items() if k != "@type"} for r in broken["resources"]]
    boot["static_resources"] = {"listeners": listeners}
    with pytest.raises(ProcessError):
        validate(boot)


# --- refusals -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Refusal:
    """An edit that makes the compiler refuse, and what each printed problem must say."""

    authentication: str = ""
    top: str = ""
    policy: str | None = None
    # (where, text): where is "config", "config:KEY" or "policy:LINE-MARKER" (the line of the
    # policy file holding the marker).
    expected: tuple[tuple[str, str], ...] = ()


CONDITION = 'resource.name.matches("^projects/acme/")'
REFUSALS = {
    "introspection-issuer": Refusal(
        authentication=(
            "    - issuer: https://opaque.test\n"
            "      audiences: [opaque]\n"
            "      introspection: {endpoint: 'http://127.0.0.1:1/introspect', client_id: c,"
            " client_secret_env: HOME}\n"
        ),
        expected=(("config", "authentication.issuers[1].introspection: "),),
    ),
    "google-access-tokens": Refusal(
        authentication="  google_access_tokens: {}\n",
        expected=(("config", "authentication.google_access_tokens: "),),
    ),
    "rate-limits": Refusal(
        top="rate_limits: [{name: per-caller, rate_per_s: 1, burst: 1}]\n",
        expected=(("config", "rate_limits: "),),
    ),
    "client-certificates": Refusal(
        authentication=(
            "  client_certificates:\n"
            "    identities: [{principal: 'user:kim@example.com', san_uri: 'spiffe://acme/kim'}]\n"
        ),
        top="envoy: {}\n",
        expected=(("config", "authentication.client_certificates: "),),
    ),
    "service-accounts-without-allowed": Refusal(
        authentication="  service_account_jwts: {audiences: [opsgate-tests]}\n",
        expected=(("config", "authentication.service_account_jwts.allowed: "),),
    ),
    "condition-outside-the-subset": Refusal(
        policy=POLICY.replace('request.time < timestamp("2030-01-01T00:00:00Z")', f"'{CONDITION}'"),
        expected=(("policy:expression:", f"condition {CONDITION!r}: "),),
    ),
    "group-with-a-domain-member": Refusal(
        policy=POLICY.replace(
            "[user:carol@example.com]", "[user:carol@example.com, domain:example.com]"
        ),
        expected=(
            ("policy:eng@example.com:", "'domain:example.com' cannot be a member of a group"),
        ),
    ),
    "group-with-a-deleted-member": Refusal(
        policy=POLICY.replace(
            "[user:carol@example.com]",
            "[user:carol@example.com, 'deleted:user:eve@example.com?uid=1']",
        ),
        expected=(
            (
                "policy:eng@example.com:",
                "group 'eng@example.com' has member 'deleted:user:eve@example.com?uid=1'",
            ),
        ),
    ),
    "several-at-once": Refusal(
        authentication="  google_access_tokens: {}\n",
        top="rate_limits: [{name: per-caller, rate_per_s: 1, burst: 1}]\n",
        policy=POLICY.replace('request.time < timestamp("2030-01-01T00:00:00Z")', f"'{CONDITION}'"),
        expected=(
            ("config", "authentication.google_access_tokens: "),
            ("config", "rate_limits: "),
            ("policy:expression:", f"condition {CONDITION!r}: "),
        ),
    ),
}


def where(project: Project, spec: str, policy_text: str) -> str:
    """The place a problem must name: the config file, or the policy file and the line."""
    if spec == "config":
        return str(project.config)
    marker = spec.removeprefix("policy:")
    lines = [i for i, line in enumerate(policy_text.splitlines(), 1) if marker in line]
    return f"{project.policy}:{lines[0]}"


def apply(project: Project, refusal: Refusal) -> str:
    project.write_config(refusal.authentication, refusal.top)
    text = refusal.policy if refusal.policy is not None else POLICY
    project.policy.write_text(text)
    return text


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refusal_exits_1_names_every_problem_and_writes_nothing(
    project: Project, refusal: Refusal, capsys: pytest.CaptureFixture[str]
) -> None:
    assert project.compile(capsys)[0] == 0
    before = project.snapshot()
    text = apply(project, refusal)
    code, _, err = project.compile(capsys)
    assert code == 1
    assert project.snapshot() == before, "a refused compile changed what was written"
    assert "does not compile" in err
    problems = err.splitlines()[1:]
    for spec, said in refusal.expected:
        expected = f"{where(project, spec, text)}: "
        assert any(line.startswith(expected) and said in line for line in problems), (
            f"no problem {expected}...{said}... in:\n{err}"
        )
    assert len(problems) >= len(refusal.expected)


@pytest.mark.parametrize("refusal", REFUSALS.values(), ids=REFUSALS.keys())
def test_a_refusal_on_a_first_run_writes_no_file(
    project: Project, refusal: Refusal, capsys: pytest.CaptureFixture[str]
) -> None:
    apply(project, refusal)
    code, _, err = project.compile(capsys)
    assert code == 1, err
    assert not project.out.exists() or not any(project.out.iterdir())


def test_each_problem_is_said_once(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    """The viewer role grants four routes' permissions: its condition is one problem."""
    apply(project, REFUSALS["condition-outside-the-subset"])
    code, _, err = project.compile(capsys)
    assert code == 1
    problems = err.splitlines()[1:]
    assert len(problems) == len(set(problems)), err


def test_a_refused_run_with_other_flags_leaves_the_bootstrap_alone(
    project: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    assert project.compile(capsys)[0] == 0
    before = project.snapshot()
    apply(project, REFUSALS["rate-limits"])
    code, _, _ = project.compile(capsys, "--listen", "127.0.0.1:10001", "--admin", "127.0.0.1:9902")
    assert code == 1
    assert project.snapshot() == before


def test_no_upstream_writes_no_file(project: Project, capsys: pytest.CaptureFixture[str]) -> None:
    project.write_config(upstream=False)
    code, _, err = project.compile(capsys)
    assert code != 0
    assert "upstream" in err
    assert not project.out.exists() or not any(project.out.iterdir())


def test_watch_compiles_an_edit_made_while_the_first_compile_was_written(
    project: Project, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An operator's edit can land between the first compile's read of the policy and the
    watch's first look at the file: the watch must not take that edit as already compiled."""
    from gateway.envoy.compiled import command

    edited = POLICY.replace("user:bob@example.com", "user:dave@example.com")
    write = command._write
    writes: list[str] = []

    def write_then_edit(compiler: command.Compiler, compiled: Any, files: Any) -> None:
        write(compiler, compiled, files)
        writes.append(compiled.policy_etag)
        if len(writes) == 1:
            project.policy.write_text(edited)  # the edit lands now

    ticks: list[float] = []

    def sleep(seconds: float) -> None:
        ticks.append(seconds)
        if len(ticks) > 3:
            raise KeyboardInterrupt  # what stops a watch

    monkeypatch.setattr(command, "_write", write_then_edit)
    monkeypatch.setattr(command, "time", SimpleNamespace(sleep=sleep))
    code, _, err = project.compile(capsys, "--watch", "--interval", "0")
    assert code == 130, err
    assert project.json("lds.json")["version_info"] == policy_etag(project), (
        f"the edited policy was never compiled (compiled: {writes})"
    )
