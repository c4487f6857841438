"""IAM's tag functions on `resource`: matchTag, matchTagId, hasTagKey, hasTagKeyId."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Final

from gateway.policy.cel.context import ConditionContext

# The argument each function takes, by position: what it must look like, and an example.
_KEY_NAME: Final = (re.compile(r"[^/\s]+/[^/\s]+"), "a namespaced tag key such as 123456789012/env")
_VALUE: Final = (re.compile(r"[^/\s]+"), "a tag value's short name such as prod")
_KEY_ID: Final = (re.compile(r"tagKeys/[0-9]+"), "a tag key id such as tagKeys/281484271805522")
_VALUE_ID: Final = (
    re.compile(r"tagValues/[0-9]+"),
    "a tag value id such as tagValues/281479612761930",
)

TAG_FUNCTIONS: Final = {
    "matchTag": (_KEY_NAME, _VALUE),
    "matchTagId": (_KEY_ID, _VALUE_ID),
    "hasTagKey": (_KEY_NAME,),
    "hasTagKeyId": (_KEY_ID,),
}


def argument_problem(name: str, position: int, value: str) -> str | None:
    """Why `value` cannot be argument `position` of resource.`name`(), or None."""
    syntax, example = TAG_FUNCTIONS[name][position]
    if syntax.fullmatch(value):
        return None
    return f"argument {position + 1} of resource.{name}() must be {example}, not {value!r}"


def tag_test(name: str, args: tuple[str, ...]) -> Callable[[ConditionContext], bool]:
    """The compiled test: reads the request's effective tags (see hierarchy.EffectiveTags)."""
    if name == "matchTag":
        key, value = args
        return lambda c: c.tags.match(key, value)
    if name == "matchTagId":
        key_id, value_id = args
        return lambda c: c.tags.match_id(key_id, value_id)
    if name == "hasTagKey":
        (key,) = args
        return lambda c: c.tags.has_key(key)
    (key_id,) = args
    return lambda c: c.tags.has_key_id(key_id)
