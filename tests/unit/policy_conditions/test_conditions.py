"""IAM conditions: what compiles, what each compiled condition answers, and what is refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import cast

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.cel import (
    MAX_EXPRESSION_LENGTH,
    ConditionContext,
    ConditionError,
    ConditionEvaluationError,
    compile_condition,
)
from gateway.policy.cel.parser import Parser
from tests.support.cel_oracle import library_answer

NAME = "projects/acme-prod/locations/us-east1/operations/op-123"  # 55 characters
NOW = datetime(2026, 5, 1, 12, 30, 15, 250_000, tzinfo=UTC)  # a Friday; 08:30:15 in New York
OP = ConditionContext(NAME, NOW, "google.longrunning.Operation", "ops.example.com")


def at(when: datetime) -> ConditionContext:
    return dataclasses.replace(OP, request_time=when)


def named(name: str) -> ConditionContext:
    return dataclasses.replace(OP, resource_name=name)


def cel_string(text: str) -> str:
    """A CEL string literal for any text."""
    escaped = "".join(
        "\\" + ch if ch in '"\\' else ch if " " <= ch <= "~" else f"\\U{ord(ch):08x}" for ch in text
    )
    return f'"{escaped}"'


# Every row here is in the native subset; the CEL library must agree with each (differential test).
TRUTH = [
    # strings
    pytest.param('resource.name.startsWith("projects/acme-prod/")', OP, True, id="starts-with"),
    pytest.param('resource.name.startsWith("projects/acme-dev/")', OP, False, id="starts-with-no"),
    pytest.param("resource.name.startsWith('projects/acme-prod/')", OP, True, id="single-quotes"),
    pytest.param('resource.name.endsWith("/op-123")', OP, True, id="ends-with"),
    pytest.param('resource.name.endsWith("/op-12")', OP, False, id="ends-with-no"),
    pytest.param('resource.name.contains("/locations/us-east1/")', OP, True, id="contains"),
    pytest.param('resource.name.contains("europe")', OP, False, id="contains-no"),
    pytest.param(
        'resource.name.matches("^projects/[a-z-]+/locations/[a-z0-9-]+/operations/op-[0-9]+$")',
        OP,
        True,
        id="matches-anchored",
    ),
    pytest.param('resource.name.matches("us-east[0-9]")', OP, True, id="matches-is-a-search"),
    pytest.param('resource.name.matches("^operations/")', OP, False, id="matches-no"),
    pytest.param('resource.name.matches(r"op-\\d{3}$")', OP, True, id="matches-raw-string"),
    pytest.param('resource.name.matches("acme-(prod|dev)")', OP, True, id="matches-alternation"),
    pytest.param('resource.name.matches("(?i)ACME-PROD")', OP, True, id="matches-flags"),
    pytest.param(
        'resource.name.matches("^a\\\\++$")', named("a++"), True, id="matches-escaped-plus"
    ),
    pytest.param(f'resource.name == "{NAME}"', OP, True, id="equals"),
    pytest.param(f'resource.name != "{NAME}4"', OP, True, id="not-equals"),
    pytest.param('resource.type == "google.longrunning.Operation"', OP, True, id="type"),
    pytest.param(
        'resource.service == "ops.example.com" && resource.type != ""', OP, True, id="service"
    ),
    pytest.param(
        'resource.service == ""',
        dataclasses.replace(OP, resource_service=""),
        True,
        id="service-empty",
    ),
    pytest.param(
        'resource.type in ["google.longrunning.Operation", "other.Type"]', OP, True, id="in-list"
    ),
    pytest.param(
        "resource.service in ['a.example.com', \"b.example.com\"]", OP, False, id="in-list-no"
    ),
    pytest.param("resource.name in []", OP, False, id="in-empty-list"),
    pytest.param('resource.name < "q" && resource.name > "p"', OP, True, id="string-order"),
    pytest.param(
        'resource.service + "/" + resource.type == "ops.example.com/google.longrunning.Operation"',
        OP,
        True,
        id="concat",
    ),
    pytest.param("resource.name.size() == 55 && size(resource.type) > 3", OP, True, id="size"),
    pytest.param(
        '"a\\tb" == \'a\\u0009b\' && "\\x41" == "A" && "\\101" == "A"', OP, True, id="escapes"
    ),
    pytest.param('resource.name.startsWith("""projects/""")', OP, True, id="triple-quotes"),
    # request.time against timestamps
    pytest.param('request.time < timestamp("2026-06-01T00:00:00Z")', OP, True, id="before-expiry"),
    pytest.param('request.time < timestamp("2026-05-01T12:30:15Z")', OP, False, id="after-expiry"),
    pytest.param('request.time >= timestamp("2026-05-01T12:30:15.25Z")', OP, True, id="ge-exact"),
    pytest.param('request.time == timestamp("2026-05-01T12:30:15.250Z")', OP, True, id="eq-exact"),
    pytest.param('request.time != timestamp("2026-05-01T12:30:15.250001Z")', OP, True, id="ne"),
    pytest.param(
        'request.time > timestamp("2026-05-01T08:00:00-04:00")', OP, True, id="offset-literal"
    ),
    pytest.param(
        'request.time == timestamp("2026-05-01T14:30:15.25+02:00")',
        OP,
        True,
        id="offset-literal-eq",
    ),
    pytest.param(
        'request.time < timestamp("2026-05-01T12:30:15.2500001Z")', OP, True, id="nanos-lt"
    ),
    pytest.param(
        'request.time <= timestamp("2026-05-01T12:30:15.2499999Z")', OP, False, id="nanos-le"
    ),
    pytest.param(
        'request.time == timestamp("2026-05-01T12:30:15.2500001Z")', OP, False, id="nanos-eq"
    ),
    pytest.param(
        'request.time > timestamp("2026-05-01T12:30:15.2499999Z")', OP, True, id="nanos-gt"
    ),
    pytest.param('timestamp("2026-01-01T00:00:00Z") < request.time', OP, True, id="time-on-right"),
    pytest.param(
        'request.time < timestamp("2026-05-01T12:00:00Z") + duration("3600s")',
        OP,
        True,
        id="ts-plus-duration",
    ),
    pytest.param(
        'request.time > timestamp("2026-05-02T00:00:00Z") - duration("12h")',
        OP,
        True,
        id="ts-minus-duration",
    ),
    pytest.param(
        'request.time - timestamp("2026-05-01T12:00:00Z") < duration("30m")',
        OP,
        False,
        id="elapsed",
    ),
    pytest.param(
        'timestamp("2026-05-01T13:00:00Z") - request.time > duration("29m44s")',
        OP,
        True,
        id="remaining",
    ),
    pytest.param(
        'request.time + duration("-1h") < timestamp("2026-05-01T11:30:16Z")',
        OP,
        True,
        id="time-plus-negative",
    ),
    pytest.param(
        'request.time < timestamp("2026-05-01T12:30:00Z") + duration("15.3s")',
        OP,
        True,
        id="fractional-duration",
    ),
    pytest.param(
        'timestamp("2026-01-01T00:00:00Z") + duration("24h") == timestamp("2026-01-02T00:00:00Z")',
        OP,
        True,
        id="constant-time",
    ),
    # accessors, UTC and zones
    pytest.param("request.time.getHours() == 12", OP, True, id="hours-utc"),
    pytest.param(
        "request.time.getMinutes() == 30 && request.time.getSeconds() == 15 && request.time.getMilliseconds() == 250",
        OP,
        True,
        id="min-sec-ms",
    ),
    pytest.param(
        "request.time.getFullYear() == 2026 && request.time.getMonth() == 4",
        OP,
        True,
        id="year-month-from-0",
    ),
    pytest.param(
        "request.time.getDate() == 1 && request.time.getDayOfMonth() == 0",
        OP,
        True,
        id="date-from-1-day-of-month-from-0",
    ),
    pytest.param("request.time.getDayOfWeek() == 5", OP, True, id="friday-is-5"),
    pytest.param("request.time.getDayOfYear() == 120", OP, True, id="day-of-year-from-0"),
    pytest.param('request.time.getHours("America/New_York") == 8', OP, True, id="hours-new-york"),
    pytest.param(
        'request.time.getHours("Asia/Kolkata") == 18 && request.time.getMinutes("Asia/Kolkata") == 0',
        OP,
        True,
        id="half-hour-zone",
    ),
    pytest.param('request.time.getHours("+05:30") == 18', OP, True, id="fixed-offset"),
    pytest.param(
        'request.time.getHours("America/New_York") >= 9 && request.time.getHours("America/New_York") < 17',
        OP,
        False,
        id="business-hours-no",
    ),
    pytest.param('request.time.getDayOfWeek("Asia/Tokyo") == 5', OP, True, id="tokyo-still-friday"),
    pytest.param(
        'request.time.getDayOfWeek("America/Los_Angeles") == 4',
        at(datetime(2026, 5, 1, 2, tzinfo=UTC)),
        True,
        id="los-angeles-still-thursday",
    ),
    pytest.param(
        'request.time.getHours("America/New_York") == 7',
        at(datetime(2026, 1, 15, 12, tzinfo=UTC)),
        True,
        id="new-york-winter",
    ),
    pytest.param(
        'request.time.getFullYear("Asia/Tokyo") == 2027 && request.time.getMonth("Asia/Tokyo") == 0 && request.time.getDate("Asia/Tokyo") == 1',
        at(datetime(2026, 12, 31, 23, 30, tzinfo=UTC)),
        True,
        id="tokyo-new-year",
    ),
    pytest.param('request.time.getHours("UTC") == 12', OP, True, id="utc-by-name"),
    # logic
    pytest.param(
        'resource.name.startsWith("projects/") && request.time > timestamp("2027-01-01T00:00:00Z")',
        OP,
        False,
        id="and",
    ),
    pytest.param(
        'resource.name.startsWith("folders/") || resource.name.endsWith("op-123")',
        OP,
        True,
        id="or",
    ),
    pytest.param('!resource.name.startsWith("folders/")', OP, True, id="not"),
    pytest.param('!!(resource.type == "x")', OP, False, id="not-not"),
    pytest.param(
        '(resource.name.startsWith("a") || resource.name.startsWith("p")) && !(resource.type == "x")',
        OP,
        True,
        id="parentheses",
    ),
    pytest.param("true || false && false", OP, True, id="and-binds-tighter"),
    pytest.param("false", OP, False, id="false"),
    pytest.param("-1 < 0 && --1 == 1 && !(-1.5 > 0.0)", OP, True, id="signed-literals"),
    pytest.param(
        'resource.type == "x" ? false : resource.name.contains("acme")', OP, True, id="conditional"
    ),
    pytest.param("has(resource.name) && 1 < 2 && -1 < 0", OP, True, id="has-and-constants"),
    pytest.param(
        'resource.name.startsWith("projects/acme-prod/") // prod only\n  && request.time < timestamp("2030-01-01T00:00:00Z")',
        OP,
        True,
        id="multiline-with-comment",
    ),
    pytest.param(
        'request.time < timestamp("2030-01-01T00:00:00Z") && resource.name.startsWith("projects/acme-prod/")',
        OP,
        True,
        id="brief-example",
    ),
]

# Valid CEL outside what IAM conditions use: refused at load, so that no expression is ever
# decided by an evaluator whose semantics differ from CEL's (the library's size() counts bytes,
# its regexes are not RE2).
OUTSIDE_SUBSET = [
    pytest.param(
        '["folders/", "projects/acme-"].exists(p, resource.name.startsWith(p))',
        "exists()",
        id="exists",
    ),
    pytest.param("size(resource.name) % 2 == 1", "arithmetic", id="int-arithmetic"),
    pytest.param(
        "resource.name.matches(resource.service)",
        "matches() with a pattern that is not a literal",
        id="pattern-from-attribute",
    ),
    pytest.param(
        '(request.time + duration("1h")).getHours("America/New_York") == 9',
        "getHours() of computed timestamps",
        id="zone-on-computed-time",
    ),
    pytest.param('dyn(resource.type) == "google.longrunning.Operation"', "dyn()", id="dyn"),
    pytest.param(
        '{"google.longrunning.Operation": true}[resource.type]', "map literals", id="map-literal"
    ),
    pytest.param("size(resource.name) / 0 == 1", "arithmetic", id="division"),
    pytest.param('["a"].exists(p, request.time.getHours() > 1)', "exists()", id="exists-time"),
    pytest.param('duration("1h").getHours() == 1', "getHours() of durations", id="duration-hours"),
]

# Native semantics the library does not share: CEL's size() counts code points, the library's
# bytes; CEL defines duration + timestamp, the library does not; IAM's RE2 is ASCII-only for \w
# and \d, and its `$` does not match before a final newline.
NATIVE_ONLY = [
    pytest.param('size("é") == 1', OP, True, id="size-counts-code-points"),
    pytest.param(
        'duration("1h") + timestamp("2026-05-01T11:00:00Z") <= request.time',
        OP,
        True,
        id="duration-plus-ts",
    ),
    pytest.param('resource.name.matches("^\\\\w+$")', named("é"), False, id="re2-w-is-ascii"),
    pytest.param('resource.name.matches("^\\\\d$")', named("٣"), False, id="re2-d-is-ascii"),
    pytest.param(
        'resource.name.matches("a$")', named("a\n"), False, id="re2-dollar-is-end-of-text"
    ),
    pytest.param('resource.name.matches("a\\\\z")', named("a"), True, id="re2-z"),
    pytest.param('resource.name.matches("(?m)a$")', named("a\nb"), True, id="re2-multiline-dollar"),
]


@pytest.mark.parametrize(("expression", "context", "expected"), TRUTH + NATIVE_ONLY)
def test_native_answers(expression: str, context: ConditionContext, expected: bool) -> None:
    condition = compile_condition(expression, title="t")
    assert condition.evaluate(context) is expected
    assert condition.expression == expression and condition.title == "t"


@pytest.mark.parametrize(("expression", "context", "expected"), TRUTH)
def test_library_agrees_with_native(
    expression: str, context: ConditionContext, expected: bool
) -> None:
    assert library_answer(expression, context) is expected


@pytest.mark.parametrize(("expression", "fragment"), OUTSIDE_SUBSET)
def test_outside_the_subset_is_refused_at_load(expression: str, fragment: str) -> None:
    with pytest.raises(ConditionError, match="outside the IAM condition subset") as caught:
        compile_condition(expression)
    assert caught.value.problem.startswith(fragment)
    assert caught.value.column is not None


LOAD_ERRORS = [
    pytest.param("", "the condition expression is empty", None, id="empty"),
    pytest.param("  \n\t ", "the condition expression is empty", None, id="blank"),
    pytest.param("true || " * 130 + "true", "the limit is 1000", None, id="too-long"),
    pytest.param('resource.name.startsWith("x"', "Syntax error", 29, id="missing-paren"),
    pytest.param('resource.name = "x"', "Syntax error", 15, id="single-equals"),
    pytest.param("resource.name ==", "Syntax error", 17, id="missing-operand"),
    pytest.param(
        "resource.name < 3",
        "'<' cannot compare string (resource.name) with int (3)",
        15,
        id="string-lt-int",
    ),
    pytest.param(
        'request.time.startsWith("2026")',
        "startsWith() applies to strings, not to timestamp (request.time)",
        14,
        id="method-on-wrong-type",
    ),
    pytest.param(
        'resource.nmae == "x"',
        "unknown attribute 'resource.nmae' (did you mean 'resource.name'?)",
        10,
        id="attribute-typo",
    ),
    pytest.param(
        'request.host == "x"',
        "unknown attribute 'request.host'; conditions can read request.time, resource.name, resource.type, resource.service",
        9,
        id="unknown-attribute",
    ),
    pytest.param(
        'request.name == "x"', "(did you mean 'resource.name'?)", 9, id="attribute-of-other-root"
    ),
    pytest.param(
        'resourse.name == "x"',
        "unknown identifier 'resourse' (did you mean 'resource'?)",
        1,
        id="identifier-typo",
    ),
    pytest.param("foo(resource.name)", "unknown function 'foo'", 1, id="unknown-function"),
    pytest.param(
        'resource.name.endWith("x")',
        "unknown function 'endWith' (did you mean 'endsWith'?)",
        15,
        id="method-typo",
    ),
    pytest.param(
        'api.getAttribute("iam.googleapis.com/modifiedGrantsByRole", []) == []',
        "unknown function 'api.getAttribute': a Google Cloud IAM function this gateway does not provide",
        5,
        id="iam-only-function",
    ),
    pytest.param(
        'resource.name.startsWith("a", "b")',
        "startsWith() takes 1 argument, got 2",
        15,
        id="too-many-arguments",
    ),
    pytest.param(
        "resource.name.startsWith(1)",
        "the argument of startsWith() must be a string, not int (1)",
        26,
        id="argument-type",
    ),
    pytest.param(
        'matches(resource.name, "^p")',
        "matches() is a method; call it as value.matches(...)",
        1,
        id="global-matches",
    ),
    pytest.param(
        "getHours(request.time) == 1",
        "getHours() is a method; call it as value.getHours(...)",
        1,
        id="method-called-as-function",
    ),
    pytest.param(
        "resource.name",
        "a condition must evaluate to a bool, but this is string (resource.name)",
        1,
        id="not-bool-string",
    ),
    pytest.param(
        "request.time",
        "a condition must evaluate to a bool, but this is timestamp (request.time)",
        1,
        id="not-bool-time",
    ),
    pytest.param(
        'request.time < timestamp("2026-02-30T00:00:00Z")',
        "invalid timestamp '2026-02-30T00:00:00Z': day is out of range for month",
        26,
        id="timestamp-bad-date",
    ),
    pytest.param(
        'request.time < timestamp("2026-01-01")',
        "expected RFC 3339",
        26,
        id="timestamp-not-rfc3339",
    ),
    pytest.param(
        'request.time < timestamp("2026-01-01T00:00:00Z") + duration("1 hour")',
        "invalid duration '1 hour'",
        61,
        id="duration-bad",
    ),
    pytest.param(
        'timestamp("9999-12-31T23:59:59Z") + duration("1s") > request.time',
        "timestamp overflow",
        35,
        id="timestamp-overflow",
    ),
    pytest.param(
        'resource.name.matches("[a-")', "invalid regular expression", 23, id="regex-invalid"
    ),
    pytest.param(
        'resource.name.matches("a++")',
        "bad repetition operator: ++ (possessive quantifiers are not RE2)",
        23,
        id="regex-possessive",
    ),
    pytest.param(
        'resource.name.matches("(a)\\\\1")',
        "invalid escape sequence: \\1 (backreferences are not RE2)",
        23,
        id="regex-backreference",
    ),
    pytest.param(
        "destination.port == 443",
        "unknown identifier 'destination': a Google Cloud IAM attribute this gateway does not provide",
        1,
        id="iam-only-attribute",
    ),
    pytest.param(
        'resource.name.matches("(?<=x)y")',
        "invalid perl operator: (?<= (lookbehind assertions are not RE2)",
        23,
        id="regex-not-re2",
    ),
    pytest.param(
        'request.time.getHours("America/New_Yrok") >= 9',
        "unknown time zone 'America/New_Yrok' (did you mean 'America/New_York'?)",
        23,
        id="zone-typo",
    ),
    pytest.param(
        'request.time.getHours("+25:00") >= 9', "out of range", 23, id="zone-offset-out-of-range"
    ),
    pytest.param(
        "request.time.getHours(resource.type) >= 9",
        "the time zone of getHours() must be a string literal",
        23,
        id="zone-not-literal",
    ),
    pytest.param(
        'request.time.getHours("UTC", "x") >= 9',
        "takes an optional time zone, got 2 arguments",
        14,
        id="zone-too-many",
    ),
    pytest.param(
        'duration("3600s").getHours("UTC") == 1',
        "getHours() of a duration takes no arguments",
        19,
        id="duration-with-zone",
    ),
    pytest.param(
        'request.time < "2027-01-01T00:00:00Z"',
        'write timestamp("2026-01-01T00:00:00Z")',
        14,
        id="string-for-timestamp",
    ),
    pytest.param(
        "request.time.getHours() == 9.0",
        "CEL does not convert between int, uint and double",
        25,
        id="int-vs-double",
    ),
    pytest.param(
        "request.time.seconds > 0",
        "timestamp (request.time) has no field 'seconds'",
        14,
        id="no-such-field",
    ),
    pytest.param(
        '-duration("1h") < duration("1h")',
        "'-' applies to int and double, not to duration",
        1,
        id="negated-duration",
    ),
    pytest.param('resource == "x"', "'resource' is not a value by itself", 1, id="bare-root"),
    pytest.param("!resource.name", "'!' applies to bools", 1, id="not-of-string"),
    pytest.param("resource.name && true", "'&&' needs bools on both sides", 1, id="and-of-string"),
    pytest.param(
        'resource.name in "projects/"', "'in' needs a list or map on the right", 15, id="in-string"
    ),
    pytest.param(
        "resource.name in [1, 2]",
        "'in' looks for string (resource.name) in list(int)",
        15,
        id="in-wrong-list",
    ),
    pytest.param(
        'resource.type == "x" ? true : "yes"',
        "the branches of '?:' have different types",
        1,
        id="conditional-branches",
    ),
    pytest.param("(" * 40 + "true" + ")" * 40, "nested too deeply", None, id="too-deep"),
    pytest.param(
        "timestamp(1) < request.time",
        "timestamp() cannot convert int (1)",
        1,
        id="timestamp-of-int",
    ),
]


@pytest.mark.parametrize(("expression", "fragment", "column"), LOAD_ERRORS)
def test_load_errors(expression: str, fragment: str, column: int | None) -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition(expression)
    error = caught.value
    assert fragment in error.problem
    assert "Traceback" not in error.problem
    if column is not None:
        assert error.column == column
    assert isinstance(error, ValueError)
    assert str(error).startswith(error.problem)


OWN_SYNTAX_ERRORS = [
    pytest.param(
        'resource.name = "x"',
        "unexpected character '=' (did you mean '=='?)",
        15,
        id="single-equals",
    ),
    pytest.param(
        'resource.name.startsWith("x"',
        "expected ')' but found end of expression",
        29,
        id="missing-paren",
    ),
    pytest.param(
        "resource.name ==", "expected a value but found end of expression", 17, id="missing-operand"
    ),
    pytest.param(
        'resource.name == "abc', "unterminated string literal", 18, id="unterminated-string"
    ),
    pytest.param('resource.name == "a\\qb"', "invalid escape sequence '\\q'", 20, id="bad-escape"),
    pytest.param("resource.name & true", "(did you mean '&&'?)", 15, id="single-ampersand"),
    pytest.param(
        'resource.name.startsWith("x") resource',
        "unexpected 'resource' after a complete expression",
        31,
        id="trailing",
    ),
    pytest.param(
        "9223372036854775808 > 0",
        "integer literal 9223372036854775808 is out of range",
        1,
        id="int-range",
    ),
    pytest.param("if == 1", "'if' is a reserved word", 1, id="reserved-word"),
    pytest.param("-!true", "'!' cannot follow '-'; add parentheses", 2, id="mixed-unary"),
]


@pytest.mark.parametrize(("expression", "fragment", "column"), OWN_SYNTAX_ERRORS)
def test_our_own_syntax_errors(expression: str, fragment: str, column: int) -> None:
    with pytest.raises(ConditionError) as caught:
        Parser(expression).parse()
    assert caught.value.problem.startswith("Syntax error: ")
    assert fragment in caught.value.problem
    assert caught.value.column == column


def test_syntax_errors_carry_the_library_message() -> None:
    with pytest.raises(ConditionError) as caught:
        compile_condition('resource.name.startsWith("x"')
    assert caught.value.problem == "Syntax error: missing ')' at '<EOF>'"
    with pytest.raises(ConditionError) as caught:
        compile_condition('resource.name == "x" &&\n  )')
    assert caught.value.column == len('resource.name == "x" &&\n  )')  # line 2, column 3


def test_length_limit_is_inclusive() -> None:
    prefix, suffix = 'resource.name == "', '"'
    fits = prefix + "a" * (MAX_EXPRESSION_LENGTH - len(prefix) - len(suffix)) + suffix
    assert len(fits) == MAX_EXPRESSION_LENGTH
    assert compile_condition(fits).evaluate(named("a" * 981)) is True
    with pytest.raises(ConditionError, match="1001 characters long"):
        compile_condition(fits + " ")


def test_expression_must_be_a_string() -> None:
    with pytest.raises(ConditionError, match="must be a string, not int"):
        compile_condition(cast(str, 42))


# -- evaluation errors -------------------------------------------------------------------------

OVERFLOWS = '(request.time + duration("315000000000s") > timestamp("2026-01-01T00:00:00Z"))'


@pytest.mark.parametrize(
    ("expression", "context"),
    [
        pytest.param(
            'request.time < timestamp("2030-01-01T00:00:00Z")',
            at(datetime(2026, 1, 1)),
            id="naive-time-compare",
        ),
        pytest.param(
            'request.time.getHours("Europe/Paris") > 3',
            at(datetime(2026, 1, 1)),
            id="naive-time-hours",
        ),
        pytest.param(
            'resource.name.startsWith("p")', named(cast(str, None)), id="name-not-a-string"
        ),
        pytest.param(OVERFLOWS, OP, id="timestamp-overflow"),
        pytest.param(
            f'{OVERFLOWS} && resource.name.startsWith("projects/")', OP, id="error-and-true"
        ),
        pytest.param(
            f'resource.name.startsWith("projects/") && {OVERFLOWS}', OP, id="true-and-error"
        ),
        pytest.param(
            f'{OVERFLOWS} || resource.name.startsWith("folders/")', OP, id="error-or-false"
        ),
        pytest.param(
            'request.time - timestamp("0001-01-01T00:00:00Z") + duration("315576000000s") > duration("1s")',
            OP,
            id="duration-overflow",
        ),
    ],
)
def test_evaluation_errors(expression: str, context: ConditionContext) -> None:
    condition = compile_condition(expression, title="expires")
    with pytest.raises(ConditionEvaluationError, match="condition 'expires'"):
        condition.evaluate(context)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        pytest.param(
            f'{OVERFLOWS} || resource.name.startsWith("projects/")', True, id="error-or-true"
        ),
        pytest.param(
            f'resource.name.startsWith("projects/") || {OVERFLOWS}', True, id="true-or-error"
        ),
        pytest.param(
            f'{OVERFLOWS} && resource.name.startsWith("folders/")', False, id="error-and-false"
        ),
        pytest.param(
            f'resource.name.startsWith("folders/") && {OVERFLOWS}', False, id="false-and-error"
        ),
    ],
)
def test_errors_are_absorbed_like_cel(expression: str, expected: bool) -> None:
    assert compile_condition(expression).evaluate(OP) is expected


def test_overflow_depends_on_the_request_time() -> None:
    condition = compile_condition(OVERFLOWS)
    assert condition.evaluate(at(datetime(10, 1, 1, tzinfo=UTC))) is True


# -- uses_time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "uses_time"),
    [
        pytest.param('resource.name.startsWith("projects/")', False, id="name-only"),
        pytest.param(
            'resource.type == "x" || resource.service != "y"', False, id="type-and-service"
        ),
        pytest.param('request.time < timestamp("2030-01-01T00:00:00Z")', True, id="expiry"),
        pytest.param('request.time.getHours("Europe/Paris") >= 9', True, id="hours"),
        pytest.param(
            'resource.name == "x" || request.time > timestamp("2030-01-01T00:00:00Z")',
            True,
            id="either",
        ),
        pytest.param(
            'timestamp("2026-01-01T00:00:00Z") < timestamp("2027-01-01T00:00:00Z")',
            False,
            id="constant-times",
        ),
        pytest.param("true", False, id="constant"),
    ],
)
def test_uses_time(expression: str, uses_time: bool) -> None:
    assert compile_condition(expression).uses_time is uses_time


# -- time zones --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function", "zone", "when", "expected"),
    [
        pytest.param(
            "getHours",
            "America/New_York",
            datetime(2026, 7, 1, 13, tzinfo=UTC),
            9,
            id="new-york-summer",
        ),
        pytest.param(
            "getHours",
            "America/New_York",
            datetime(2026, 12, 1, 13, tzinfo=UTC),
            8,
            id="new-york-winter",
        ),
        pytest.param(
            "getHours",
            "Europe/Berlin",
            datetime(2026, 3, 29, 0, 59, tzinfo=UTC),
            1,
            id="berlin-before-dst",
        ),
        pytest.param(
            "getHours",
            "Europe/Berlin",
            datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
            3,
            id="berlin-after-dst",
        ),
        pytest.param(
            "getHours",
            "-08:00",
            datetime(2026, 7, 1, 13, tzinfo=UTC),
            5,
            id="fixed-negative-offset",
        ),
        pytest.param("getHours", None, datetime(2026, 7, 1, 13, tzinfo=UTC), 13, id="default-utc"),
        pytest.param(
            "getDayOfWeek",
            "Pacific/Auckland",
            datetime(2026, 7, 4, 13, tzinfo=UTC),
            0,
            id="sunday-is-0",
        ),
        pytest.param(
            "getDayOfWeek",
            "Pacific/Honolulu",
            datetime(2026, 7, 5, 5, tzinfo=UTC),
            6,
            id="saturday-is-6",
        ),
        pytest.param(
            "getMonth", "Asia/Tokyo", datetime(2026, 12, 31, 15, tzinfo=UTC), 0, id="january-is-0"
        ),
        pytest.param(
            "getMonth", "UTC", datetime(2026, 12, 31, 15, tzinfo=UTC), 11, id="december-is-11"
        ),
        pytest.param(
            "getDate", "Asia/Tokyo", datetime(2026, 12, 31, 15, tzinfo=UTC), 1, id="date-in-tokyo"
        ),
        pytest.param(
            "getFullYear",
            "America/Los_Angeles",
            datetime(2027, 1, 1, 3, tzinfo=UTC),
            2026,
            id="year-in-los-angeles",
        ),
        pytest.param(
            "getDayOfYear", "UTC", datetime(2028, 12, 31, tzinfo=UTC), 365, id="leap-year-last-day"
        ),
    ],
)
def test_time_zone_functions(
    function: str, zone: str | None, when: datetime, expected: int
) -> None:
    argument = "" if zone is None else cel_string(zone)
    context = at(when)
    equal = compile_condition(f"request.time.{function}({argument}) == {expected}")
    other = compile_condition(f"request.time.{function}({argument}) == {expected + 1}")
    assert equal.evaluate(context) is True and other.evaluate(context) is False
    assert library_answer(equal.expression, context) is True


def test_time_given_in_another_zone_is_the_same_instant() -> None:
    paris = NOW.astimezone(timezone(timedelta(hours=2)))
    condition = compile_condition(
        'request.time == timestamp("2026-05-01T12:30:15.25Z") && request.time.getHours() == 12'
    )
    assert condition.evaluate(at(paris)) is True


# -- the compiled object -----------------------------------------------------------------------


def test_compiled_condition_is_frozen_and_reusable() -> None:
    condition = compile_condition('resource.name.startsWith("projects/a/")', title="only a")
    with pytest.raises(dataclasses.FrozenInstanceError):
        condition.title = "changed"  # type: ignore[misc]
    assert [condition.evaluate(named(f"projects/{p}/x")) for p in "abab"] == [
        True,
        False,
        True,
        False,
    ]
    assert "only a" in repr(condition) and "_fn" not in repr(condition)


# -- properties --------------------------------------------------------------------------------

names = st.text(alphabet='ab/-é"\\\n', max_size=12)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from([("startsWith", str.startswith), ("endsWith", str.endswith)]),
    prefix=names,
    resource_names=st.lists(names, min_size=1, max_size=5),
)
def test_string_predicates_match_python(
    method: tuple[str, object], prefix: str, resource_names: list[str]
) -> None:
    cel_name, python = method
    condition = compile_condition(f"resource.name.{cel_name}({cel_string(prefix)})")
    for name in resource_names:
        assert condition.evaluate(named(name)) is cast(
            "bool",
            python(name, prefix),  # type: ignore[operator]
        )


def _atoms() -> st.SearchStrategy[str]:
    attribute = st.sampled_from(["resource.name", "resource.type", "resource.service"])
    text = st.text(alphabet="ab/-", max_size=4).map(cel_string)
    when = st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1)).map(
        lambda d: f'timestamp("{d.isoformat(timespec="microseconds")}Z")'
    )
    compare = st.sampled_from(["<", "<=", ">", ">=", "==", "!="])
    zone = st.sampled_from(['"America/New_York"', '"Asia/Kolkata"', '"UTC"', ""])
    return st.one_of(
        st.builds(
            "{}.{}({})".format,
            attribute,
            st.sampled_from(["startsWith", "endsWith", "contains"]),
            text,
        ),
        st.builds("{} {} {}".format, attribute, st.sampled_from(["==", "!="]), text),
        st.builds("{} in [{}]".format, attribute, st.lists(text, max_size=3).map(", ".join)),
        st.builds("request.time {} {}".format, compare, when),
        st.builds("request.time.getHours({}) {} {}".format, zone, compare, st.integers(0, 23)),
        st.sampled_from(["true", "false"]),
    )


expressions = st.recursive(
    _atoms(),
    lambda inner: st.one_of(
        st.builds("({} && {})".format, inner, inner),
        st.builds("({} || {})".format, inner, inner),
        st.builds("!({})".format, inner),
    ),
    max_leaves=6,
)
contexts = st.builds(
    ConditionContext,
    resource_name=st.text(alphabet="ab/-", max_size=6),
    request_time=st.datetimes(datetime(2020, 1, 1), datetime(2030, 1, 1), timezones=st.just(UTC)),
    resource_type=st.text(alphabet="ab/-", max_size=3),
    resource_service=st.text(alphabet="ab/-", max_size=3),
)


@settings(max_examples=150, deadline=None)
@given(expression=expressions, context=contexts)
def test_negation_and_library_agreement(expression: str, context: ConditionContext) -> None:
    condition = compile_condition(expression)
    answer = condition.evaluate(context)
    assert compile_condition(f"!({expression})").evaluate(context) is (not answer)
    assert library_answer(expression, context) is answer
