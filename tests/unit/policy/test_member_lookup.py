"""Binding.member_for finds the member as written, in short and in long member lists alike."""

from __future__ import annotations

import pytest

from gateway.policy.loader import load_policy_text
from gateway.policy.model import SCAN_MEMBERS


@pytest.mark.parametrize("count", [1, SCAN_MEMBERS, SCAN_MEMBERS + 1, 500])
def test_member_for_answers_the_first_member_with_the_key(count: int) -> None:
    members = [f"user:u{i}@acme.example" for i in range(count)]
    members.append("user:U0@ACME.example")  # the same key as u0, written otherwise: not chosen
    listed = ", ".join(members)
    policy = load_policy_text(
        "allow:\n  - resource: projects/p\n    bindings:\n"
        f"      - role: roles/contactcenterinsights.viewer\n        members: [{listed}]\n",
        "policy.yaml",
    )
    (binding,) = policy.bindings
    for index in (0, count - 1):
        member = binding.member_for(f"user:u{index}@acme.example")
        assert member is not None and member.written == members[index]
    assert binding.member_for("user:nobody@acme.example") is None
    assert binding.member_for("group:u0@acme.example") is None
