"""Tests of the eligibility/segment expression language."""

from __future__ import annotations

import copy
import itertools
import pickle
import re
from collections.abc import Iterator, Mapping

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit_platform.domain.errors import ExpressionError, InvalidInput
from bandit_platform.domain.expressions import (
    MAX_DEPTH,
    MAX_LENGTH,
    MAX_LIST_ITEMS,
    Expression,
    parse_expression,
)

CONTEXT: dict[str, object] = {
    "profile.income_band": "high",
    "profile.age": 42,
    "cash_flow.balance": 5400.0,
    "profile.products_held": ["checking", "credit_card"],
    "behavior.abandoned_application": True,
    "behavior.opted_out": False,
    "trigger.event": "paycheck_deposit",
    "score": -3,
    "nothing": None,
}


def _evaluate(source: str, context: Mapping[str, object] = CONTEXT) -> bool:
    return parse_expression(source).evaluate(context)


# --------------------------------------------------------------------------------------------
# Valid expressions
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        # constants
        ("true", True),
        ("false", False),
        ("(true)", True),
        # numbers, int and float compare freely
        ("cash_flow.balance >= 1000", True),
        ("cash_flow.balance >= 5400", True),
        ("cash_flow.balance > 5400", False),
        ("cash_flow.balance == 5400", True),
        ("cash_flow.balance != 5400", False),
        ("cash_flow.balance < 5400.5", True),
        ("cash_flow.balance <= 5.4e3", True),
        ("cash_flow.balance < 1E3", False),
        ("profile.age == 42.0", True),
        ("profile.age > .5", True),
        ("score == -3", True),
        ("score >= -3.5", True),
        ("score<-2", True),
        ("1 < 2", True),
        # strings, both quote styles and escapes
        ("profile.income_band == 'high'", True),
        ('profile.income_band == "high"', True),
        ("profile.income_band != 'low'", True),
        ("profile.income_band > 'abc'", True),
        ("profile.income_band < 'abc'", False),
        # booleans
        ("behavior.abandoned_application", True),
        ("behavior.opted_out", False),
        ("behavior.abandoned_application == true", True),
        ("behavior.opted_out == false", True),
        ("behavior.opted_out != true", True),
        ("not behavior.opted_out", True),
        # membership in a list literal
        ("profile.income_band in ['high', 'very_high']", True),
        ("profile.income_band in ['low']", False),
        ("profile.income_band not in ['low', 'mid']", True),
        ("profile.income_band not in ['high']", False),
        ("profile.income_band in []", False),
        ("profile.income_band not in []", True),
        ("profile.age in [18, 42, 65]", True),
        ("profile.age in [42.0]", True),
        ("behavior.abandoned_application in [true]", True),
        ("cash_flow.balance in [1, 'x', true, 5400]", True),
        # membership in a list-valued field
        ("'checking' in profile.products_held", True),
        ("'mortgage' in profile.products_held", False),
        ("'mortgage' not in profile.products_held", True),
        ("'checking' not in profile.products_held", False),
        ("profile.income_band in profile.products_held", False),
        # list equality
        ("profile.products_held == ['checking', 'credit_card']", True),
        ("profile.products_held == ['credit_card', 'checking']", False),
        ("profile.products_held != ['checking']", True),
        # field compared with field
        ("profile.age < cash_flow.balance", True),
        ("trigger.event == trigger.event", True),
        # boolean structure
        ("cash_flow.balance >= 1000 and profile.income_band in ['high']", True),
        ("cash_flow.balance >= 1e6 or 'checking' in profile.products_held", True),
        ("cash_flow.balance >= 1e6 or profile.age > 50", False),
        ("(profile.age > 50 or profile.age < 45) and trigger.event == 'paycheck_deposit'", True),
        ("not (profile.age > 50 or profile.age < 45)", False),
        ("not not behavior.abandoned_application", True),
        ("a or b or c or behavior.abandoned_application", True),
        ("true and true and true and false", False),
        # whitespace and plain identifiers
        ("  \n\tscore\t==\n-3  ", True),
        ("section.name_2.x3 == 1", False),
        ("features.30d_spend == 1", False),
    ],
)
def test_evaluates(source: str, expected: bool) -> None:
    assert _evaluate(source) is expected


@pytest.mark.parametrize(
    ("source", "value"),
    [
        ("x == 'it\\'s'", "it's"),
        ('x == "it\'s"', "it's"),
        ('x == "say \\"hi\\""', 'say "hi"'),
        ("x == 'say \"hi\"'", 'say "hi"'),
        ("x == 'a\\\\b'", "a\\b"),
        ("x == 'tab\\there'", "tab\there"),
        ("x == 'two\\nlines'", "two\nlines"),
        ("x == ''", ""),
        ("x == 'caf\u00e9 \u2603'", "caf\u00e9 \u2603"),
        ("x == 'and or not in true ( ] =='", "and or not in true ( ] =="),
    ],
)
def test_string_literals(source: str, value: str) -> None:
    assert _evaluate(source, {"x": value}) is True
    assert _evaluate(source, {"x": value + "!"}) is False


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"cash_flow.balance": 1500.0, "profile.income_band": "high"}, True),
        ({"cash_flow.balance": 1500, "profile.income_band": "very_high"}, True),
        ({"cash_flow.balance": 999.99, "profile.income_band": "high"}, False),
        ({"cash_flow.balance": 1500.0, "profile.income_band": "low"}, False),
        ({"cash_flow.balance": 1500.0}, False),
        ({"profile.income_band": "high"}, False),
        ({"cash_flow.balance": "1500", "profile.income_band": "high"}, False),
        ({}, False),
    ],
)
def test_same_rule_across_contexts(context: dict[str, object], expected: bool) -> None:
    rule = parse_expression(
        "cash_flow.balance >= 1000 and profile.income_band in ['high', 'very_high']"
    )
    assert rule.evaluate(context) is expected


# --------------------------------------------------------------------------------------------
# Precedence
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "equivalent"),
    [
        ("not a and b", "(not a) and b"),
        ("not a or b", "(not a) or b"),
        ("a or b and c", "a or (b and c)"),
        ("a and b or c", "(a and b) or c"),
        ("a and b or c and d", "(a and b) or (c and d)"),
        ("not a or not b and c", "(not a) or ((not b) and c)"),
        ("not n == 1 and b", "(not (n == 1)) and b"),
        ("not n in [1] or a", "(not (n in [1])) or a"),
        ("a or n == 1 and b", "a or ((n == 1) and b)"),
        ("not not a and b", "(not (not a)) and b"),
    ],
)
def test_precedence(source: str, equivalent: str) -> None:
    left, right = parse_expression(source), parse_expression(equivalent)
    for a, b, c, d, n in itertools.product(
        [True, False], [True, False], [True, False], [True, False], [1, 2]
    ):
        context = {"a": a, "b": b, "c": c, "d": d, "n": n}
        assert left.evaluate(context) is right.evaluate(context), context


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("a or b and c", True),  # a or (b and c); (a or b) and c would be false
        ("not b and c", False),  # (not b) and c; not (b and c) would be true
        ("not b or a", True),
        ("b and c or a", True),
    ],
)
def test_precedence_values(source: str, expected: bool) -> None:
    assert _evaluate(source, {"a": True, "b": True, "c": False}) is expected


# --------------------------------------------------------------------------------------------
# Missing fields
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("missing.x == 1", False),
        ("missing.x != 1", False),  # not the negation of ==: any comparison with missing is false
        ("missing.x < 1", False),
        ("missing.x >= 1", False),
        ("missing.x == 'a'", False),
        ("missing.x != 'a'", False),
        ("missing.x == true", False),
        ("missing.x != false", False),
        ("missing.x in [1, 2]", False),
        ("missing.x not in [1, 2]", False),
        ("'a' in missing.list", False),
        ("'a' not in missing.list", False),
        ("missing.x == missing.y", False),
        ("missing.x == profile.age", False),
        ("profile.age == missing.x", False),
        ("missing.flag", False),
        ("not missing.flag", True),
        ("not (missing.x == 1)", True),
        ("not missing.x == 1", True),
        ("not (missing.x != 1)", True),
        ("not (missing.x in [1])", True),
        ("missing.x == 1 or true", True),
        ("missing.x == 1 and true", False),
        # None is treated as missing
        ("nothing == 1", False),
        ("nothing != 1", False),
        ("nothing", False),
        ("nothing in [1]", False),
        ("nothing not in [1]", False),
    ],
)
def test_missing_fields(source: str, expected: bool) -> None:
    assert _evaluate(source) is expected


# --------------------------------------------------------------------------------------------
# Type mismatches
# --------------------------------------------------------------------------------------------


class _Opaque:
    pass


@pytest.mark.parametrize(
    ("source", "context", "expected"),
    [
        ("x < 3", {"x": "abc"}, False),
        ("x >= 'abc'", {"x": 5}, False),
        ("x == '5'", {"x": 5}, False),
        ("x != '5'", {"x": 5}, False),  # mismatched types: false for every operator
        ("x == 1", {"x": True}, False),  # a boolean is not a number
        ("x != 1", {"x": True}, False),
        ("x == 0", {"x": False}, False),
        ("x == true", {"x": 1}, False),
        ("x == true", {"x": "true"}, False),
        ("x in [1]", {"x": True}, False),
        ("x in [true]", {"x": 1}, False),
        ("x not in [1, 2]", {"x": True}, True),  # items of another type do not match
        ("x == 1", {"x": 1.0}, True),
        ("x == 1.5", {"x": 1.5}, True),
        ("x < 1", {"x": [0]}, False),
        ("x < y", {"x": True, "y": False}, False),  # booleans are not ordered
        ("x < y", {"x": [1], "y": [2]}, False),  # lists are not ordered
        ("x == 1", {"x": [1]}, False),
        ("x in [1]", {"x": [1]}, False),  # the left of `in` must be a single value
        ("x not in [1]", {"x": [1]}, False),
        ("'a' in x", {"x": "abc"}, False),  # no substring matching
        ("'a' not in x", {"x": "abc"}, False),
        ("1 in x", {"x": [True]}, False),
        ("true in x", {"x": [1]}, False),
        ("1 in x", {"x": [1.0, "a"]}, True),
        ("x == [1]", {"x": [True]}, False),
        ("x == [1, 'a']", {"x": (1.0, "a")}, True),
        ("x", {"x": 1}, False),  # a bare field is true only for the boolean true
        ("x", {"x": "true"}, False),
        ("x", {"x": [True]}, False),
        ("x == 1", {"x": _Opaque()}, False),
        ("x != 1", {"x": _Opaque()}, False),
        ("x in [1]", {"x": _Opaque()}, False),
        ("x", {"x": _Opaque()}, False),
        ("x == x", {"x": {"a": 1}}, False),
    ],
)
def test_type_mismatches_are_false(source: str, context: dict[str, object], expected: bool) -> None:
    assert _evaluate(source, context) is expected


def test_number_subclasses_are_numbers() -> None:
    from fractions import Fraction

    import numpy as np

    assert _evaluate("x > 0.4 and x < 0.6", {"x": Fraction(1, 2)})
    assert _evaluate("x == 3", {"x": np.int64(3)})
    assert _evaluate("x >= 2.5", {"x": np.float64(2.5)})
    assert _evaluate("x in [3]", {"x": np.int64(3)})


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "position", "message"),
    [
        ("", 0, "empty expression"),
        ("   ", 0, "empty expression"),
        # tokenizer
        ("x = 1", 2, "unknown operator '=' (did you mean '=='?)"),
        ("x => 1", 2, "unknown operator '=>' (did you mean '>='?)"),
        ("x =< 1", 2, "unknown operator '=<' (did you mean '<='?)"),
        ("x <> 1", 2, "unknown operator '<>' (did you mean '!='?)"),
        ("x === 1", 4, "unknown operator '='"),
        ("!x", 0, "unknown operator '!'"),
        ("a && b", 2, "did you mean 'and'?"),
        ("a & b", 2, "did you mean 'and'?"),
        ("a || b", 2, "did you mean 'or'?"),
        ("a | b", 2, "did you mean 'or'?"),
        ("x == 'abc", 5, "unterminated string"),
        ('x == "abc', 5, "unterminated string"),
        ("x == 'abc\"", 5, "unterminated string"),
        ("x == 'abc\\'", 5, "unterminated string"),
        ("x == 'abc\\", 5, "unterminated string"),
        ("x == 'a\\qb'", 7, "unknown escape '\\q'"),
        ("x + 1 > 2", 2, "unexpected character '+' (arithmetic is not supported)"),
        ("x * 2 > 2", 2, "arithmetic is not supported"),
        ("x - 1 > 2", 2, "expected a number after '-'"),
        ("x == -", 5, "expected a number after '-'"),
        ("x == --1", 5, "expected a number after '-'"),
        ("x == 1.2.3", 5, "malformed number '1.2.3'"),
        ("x == 3abc", 5, "malformed number"),
        ("x == 1e", 5, "malformed number"),
        ("x == 1.", 5, "malformed number"),
        ("x == 1e999", 5, "out of range"),
        ("profile. == 1", 8, "expected a name after '.'"),
        ("profile..x == 1", 8, "expected a name after '.'"),
        (".x == 1", 0, "unexpected character '.'"),
        ("x == .\u0663", 5, "unexpected character '.'"),
        ("x == \u0663", 5, "unexpected character '\u0663'"),
        ("x == \u2018a\u2019", 5, "use straight quotes"),
        ("caf\u00e9 == 1", 3, "unexpected character '\u00e9'"),
        ("x == 1; y", 6, "unexpected character ';'"),
        ("x == @", 5, "unexpected character '@'"),
        ("x == \x00", 5, "unexpected character '\\x00'"),
        ("x == True", 5, "did you mean 'true'?"),
        ("x == FALSE", 5, "did you mean 'false'?"),
        ("a AND b", 2, "did you mean 'and'?"),
        ("Not a", 0, "did you mean 'not'?"),
        ("x == None", 5, "'None' is not supported"),
        ("x == null", 5, "'null' is not supported"),
        # parser
        ("x ==", 4, "expected a value after '==', got end of expression"),
        ("x == and", 5, "expected a value after '=='"),
        ("x in", 4, "expected a value after 'in'"),
        ("x not in", 8, "expected a value after 'not in'"),
        ("and x", 0, "expected a condition, got 'and'"),
        ("x and", 5, "expected a condition, got end of expression"),
        ("x or or y", 5, "expected a condition, got 'or'"),
        ("not", 3, "expected a condition"),
        ("()", 1, "expected a condition, got ')'"),
        ("== 1", 0, "expected a condition, got '=='"),
        ("x y", 2, "expected 'and', 'or' or end of expression, got field 'y'"),
        ("x == 1 2", 7, "expected 'and', 'or' or end of expression, got number 2"),
        ("x is true", 2, "'is' is not supported; use '=='"),
        ("x contains 'a'", 2, "in field"),
        ("(x", 2, "expected ')'"),
        ("((x == 1)", 9, "expected ')'"),
        ("(x y)", 3, "expected 'and', 'or' or ')', got field 'y'"),
        ("x)", 1, "unexpected ')'"),
        ("(x) == 1", 4, "parenthesised condition"),
        ("(x) in [1]", 4, "parenthesised condition"),
        ("(x) not in [1]", 4, "parenthesised condition"),
        ("1 < x < 3", 6, "comparisons cannot be chained"),
        ("x == y == z", 7, "comparisons cannot be chained"),
        ("x in [1] in y", 9, "comparisons cannot be chained"),
        ("x not y", 6, "expected 'in' after 'not'"),
        ("x not", 5, "expected 'in' after 'not'"),
        ("x in [1, 2", 10, "expected ']' or ','"),
        ("x in [1 2]", 8, "expected ']' or ','"),
        ("x in [1,]", 8, "expected a list item"),
        ("x in [,]", 6, "expected a list item"),
        ("x in [high]", 6, "list items must be literals, got field 'high'"),
        ("x in [[1]]", 6, "lists cannot be nested"),
        ("x in 'abc'", 5, "the right side of 'in' must be a list or a field"),
        ("x in 3", 5, "the right side of 'in' must be a list or a field"),
        ("[1] in x", 0, "the left side of 'in' must be a single value"),
        ("x < true", 4, "'<' compares numbers or strings, not a boolean"),
        ("false >= x", 0, "not a boolean"),
        ("x > [1]", 4, "not a list"),
        ("3", 0, "number 3 is not a condition"),
        ("'high'", 0, "string 'high' is not a condition"),
        ("[1, 2]", 0, "list [1, 2] is not a condition"),
        ("x and 'yes'", 6, "is not a condition"),
        ("f(x)", 1, "function calls are not supported"),
        ("x == len(y)", 8, "function calls are not supported"),
        ("x[0] == 1", 1, "expected 'and', 'or' or end of expression, got '['"),
    ],
)
def test_errors(source: str, position: int, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)) as caught:
        parse_expression(source)
    assert caught.value.position == position
    assert caught.value.message.endswith(f"(at character {position})")


def test_expression_error_is_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_expression("x = 1")


@pytest.mark.parametrize(
    "source",
    [
        "__import__('os')",
        "__import__('os').system('ls')",
        "os.system('rm -rf /')",
        "eval('1')",
        "exec('import os')",
        "open('/etc/passwd')",
        "().__class__.__bases__[0].__subclasses__()",
        "lambda: 1",
        "[x for x in y]",
        "a if b else c",
        "x[0]",
        "{'a': 1}",
        "x.y()",
        "import os",
        "1 + 1 == 2",
        "'a' * 1000000",
        "x == 1; import os",
        "`ls`",
        "$(ls)",
        "x == 1 -- comment",
        "x == 1 # comment",
    ],
)
def test_code_injection_is_rejected(source: str) -> None:
    with pytest.raises(ExpressionError):
        parse_expression(source)


def test_dunder_names_are_plain_context_lookups() -> None:
    rule = parse_expression("x.__class__")
    assert rule.fields() == frozenset({"x.__class__"})
    assert rule.evaluate({"x": 1}) is False
    assert rule.evaluate({"x.__class__": True}) is True


# --------------------------------------------------------------------------------------------
# fields()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "fields"),
    [
        ("true", set()),
        ("1 < 2", set()),
        ("x", {"x"}),
        ("profile.age > 1", {"profile.age"}),
        ("'checking' in profile.products_held", {"profile.products_held"}),
        ("a.b == c.d", {"a.b", "c.d"}),
        ("a and (b or not c) and a", {"a", "b", "c"}),
        ("x in ['y', 'z']", {"x"}),
        ("x == 'not.a.field'", {"x"}),
        (
            "cash_flow.balance >= 1000 and profile.income_band in ['high']",
            {"cash_flow.balance", "profile.income_band"},
        ),
    ],
)
def test_fields(source: str, fields: set[str]) -> None:
    assert parse_expression(source).fields() == frozenset(fields)


# --------------------------------------------------------------------------------------------
# Limits
# --------------------------------------------------------------------------------------------


def test_length_limit() -> None:
    at_limit = "x == '" + "a" * (MAX_LENGTH - 7) + "'"
    assert len(at_limit) == MAX_LENGTH
    assert parse_expression(at_limit).evaluate({"x": "a" * (MAX_LENGTH - 7)})
    with pytest.raises(ExpressionError, match="too long") as caught:
        parse_expression(at_limit + " ")
    assert caught.value.position == MAX_LENGTH


def test_length_limit_applies_before_parsing() -> None:
    with pytest.raises(ExpressionError, match="too long"):
        parse_expression("(" * 100_000)


def test_parenthesis_depth_limit() -> None:
    assert parse_expression("(" * MAX_DEPTH + "x" + ")" * MAX_DEPTH).evaluate({"x": True})
    with pytest.raises(ExpressionError, match="nested too deeply") as caught:
        parse_expression("(" * (MAX_DEPTH + 1) + "x" + ")" * (MAX_DEPTH + 1))
    assert caught.value.position == MAX_DEPTH


def test_not_depth_limit() -> None:
    assert MAX_DEPTH % 2 == 0
    assert parse_expression("not " * MAX_DEPTH + "x").evaluate({"x": True})
    with pytest.raises(ExpressionError, match="nested too deeply") as caught:
        parse_expression("not " * (MAX_DEPTH + 1) + "x")
    assert caught.value.position == 4 * MAX_DEPTH


def test_depth_counts_parentheses_and_not_together() -> None:
    half = MAX_DEPTH // 2
    parse_expression("(not " * half + "x" + ")" * half)
    with pytest.raises(ExpressionError, match="nested too deeply"):
        parse_expression("(not " * half + "(x)" + ")" * half)


def test_long_flat_chains_are_not_depth() -> None:
    source = " and ".join(f"f{i} == {i}" for i in range(100))
    rule = parse_expression(source)
    assert rule.evaluate({f"f{i}": i for i in range(100)})
    assert len(rule.fields()) == 100


def test_list_limit() -> None:
    items = ", ".join(str(i) for i in range(MAX_LIST_ITEMS))
    assert parse_expression(f"x in [{items}]").evaluate({"x": MAX_LIST_ITEMS - 1})
    source = f"x in [{items}, 9]"
    with pytest.raises(ExpressionError, match="too many items") as caught:
        parse_expression(source)
    assert caught.value.position == len(source) - 2


# --------------------------------------------------------------------------------------------
# explain()
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "context", "explanation"),
    [
        (
            "cash_flow.balance >= 1000 and profile.income_band in ['high']",
            {"cash_flow.balance": 5400.0, "profile.income_band": "low"},
            "cash_flow.balance >= 1000: 5400.0 >= 1000 -> true; "
            "profile.income_band in ['high']: 'low' -> false; result -> false",
        ),
        ("true", {}, "true -> true"),
        ("x", {"x": True}, "x: true -> true"),
        ("x", {}, "x: x is missing -> false"),
        ("x", {"x": "yes"}, "x: 'yes' (not a boolean) -> false"),
        ("x != 1", {}, "x != 1: x is missing -> false"),
        ("x == y", {}, "x == y: x is missing, y is missing -> false"),
        ("not x == 1", {}, "x == 1: x is missing -> false; result -> true"),
        ("x < 3", {"x": "abc"}, "x < 3: 'abc' < 3 (type mismatch: string vs number) -> false"),
        ("x == y", {"x": True, "y": True}, "x == y: true == true -> true"),
        ("x < y", {"x": True, "y": True}, "x < y: true < true (booleans are not ordered) -> false"),
        (
            "'checking' in p.held",
            {"p.held": ["checking", "savings"]},
            "'checking' in p.held: 'checking' in ['checking', 'savings'] -> true",
        ),
        ("'a' in p.held", {"p.held": "abc"}, "'a' in p.held: 'a' in 'abc' (not a list) -> false"),
        ("x in [1]", {"x": [1]}, "x in [1]: [1] (not a single value) -> false"),
        ("x not in ['a']", {"x": "b"}, "x not in ['a']: 'b' -> true"),
        (
            "a or b",
            {"a": False, "b": True},
            "a: false -> false; b: true -> true; result -> true",
        ),
    ],
)
def test_explain(source: str, context: dict[str, object], explanation: str) -> None:
    assert parse_expression(source).explain(context) == explanation


def test_explain_shortens_long_values() -> None:
    explanation = parse_expression("x == 'a'").explain({"x": "b" * 500})
    assert len(explanation) < 120
    assert "..." in explanation


# --------------------------------------------------------------------------------------------
# The Expression object
# --------------------------------------------------------------------------------------------


def test_expression_is_immutable_and_compares_by_source() -> None:
    rule = parse_expression("x == 1")
    assert rule.source == "x == 1"
    assert str(rule) == "x == 1"
    assert rule == parse_expression("x == 1")
    assert rule == Expression("x == 1")
    assert rule != parse_expression("x == 2")
    assert hash(rule) == hash(parse_expression("x == 1"))
    with pytest.raises(AttributeError):
        rule.source = "true"  # type: ignore[misc]


def test_expression_survives_pickle_and_copy() -> None:
    rule = parse_expression("x in ['a'] and not y")
    for clone in (pickle.loads(pickle.dumps(rule)), copy.deepcopy(rule), copy.copy(rule)):
        assert clone == rule
        assert clone.evaluate({"x": "a", "y": False}) is True
        assert clone.fields() == rule.fields()


def test_evaluation_does_not_mutate_or_need_a_dict() -> None:
    class Context(Mapping[str, object]):
        def __init__(self, data: dict[str, object]) -> None:
            self._data = data

        def __getitem__(self, key: str) -> object:
            return self._data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self._data)

        def __len__(self) -> int:
            return len(self._data)

    context = dict(CONTEXT)
    rule = parse_expression("'checking' in profile.products_held and cash_flow.balance > 1")
    assert rule.evaluate(Context(context)) is True
    assert context == CONTEXT


# --------------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------------

_TOKENS = [
    "x",
    "a.b",
    "profile.age",
    "flag",
    "1",
    "-2.5",
    "1e3",
    "'s'",
    '"t"',
    "true",
    "false",
    "[",
    "]",
    "(",
    ")",
    ",",
    "and",
    "or",
    "not",
    "in",
    "==",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "=",
    "'",
    "\\",
    ".",
    "-",
]

_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["s", "t", "", "x"]),
    st.lists(st.sampled_from(["s", "t", 1, True]), max_size=3),
)
_CONTEXTS = st.dictionaries(st.sampled_from(["x", "a.b", "profile.age", "flag"]), _VALUES)


def _parse_or_error(source: str) -> Expression | ExpressionError:
    """The compiled rule, or the ExpressionError; any other exception propagates."""
    try:
        return parse_expression(source)
    except ExpressionError as error:
        return error


def _check_parse(source: str, context: Mapping[str, object]) -> None:
    rule = _parse_or_error(source)
    if isinstance(rule, ExpressionError):
        assert 0 <= rule.position <= len(source)
        return
    result = rule.evaluate(context)
    assert isinstance(result, bool)
    # explain() runs the reference evaluator; its final verdict must agree with evaluate().
    assert rule.explain(context).endswith("-> true" if result else "-> false")
    assert all(name in source for name in rule.fields())


@settings(max_examples=300)
@given(source=st.text(max_size=60), context=_CONTEXTS)
def test_arbitrary_text_parses_or_raises_expression_error(
    source: str, context: dict[str, object]
) -> None:
    _check_parse(source, context)


@settings(max_examples=300)
@given(
    source=st.text(alphabet=st.characters(codec="ascii", exclude_categories=["Cc"]), max_size=60),
    context=_CONTEXTS,
)
def test_printable_ascii_parses_or_raises_expression_error(
    source: str, context: dict[str, object]
) -> None:
    _check_parse(source, context)


@settings(max_examples=500)
@given(tokens=st.lists(st.sampled_from(_TOKENS), max_size=14), context=_CONTEXTS)
def test_token_soup_parses_or_raises_expression_error(
    tokens: list[str], context: dict[str, object]
) -> None:
    _check_parse(" ".join(tokens), context)


_OPERANDS = st.sampled_from(["x", "a.b", "profile.age", "1", "2.5", "'s'", "true", "false"])
_CONDITIONS = st.one_of(
    st.sampled_from(["x", "flag", "true", "false"]),
    st.builds(
        "{} {} {}".format,
        _OPERANDS,
        st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
        _OPERANDS,
    ),
    st.builds("{} in ['s', 1, true]".format, st.sampled_from(["x", "a.b", "1", "'s'"])),
    st.builds("{} not in [2.5, 't']".format, st.sampled_from(["x", "a.b", "1", "'s'"])),
    st.builds("'s' in {}".format, st.sampled_from(["x", "a.b"])),
)
_EXPRESSIONS = st.recursive(
    _CONDITIONS,
    lambda inner: st.one_of(
        st.builds("not ({})".format, inner),
        st.builds("({}) and ({})".format, inner, inner),
        st.builds("({}) or ({})".format, inner, inner),
    ),
    max_leaves=8,
)


@settings(max_examples=300)
@given(source=_EXPRESSIONS, context=_CONTEXTS)
def test_generated_rules_evaluate_consistently(source: str, context: dict[str, object]) -> None:
    rule = _parse_or_error(source)
    if isinstance(rule, ExpressionError):
        # only the static checks may reject a grammatical rule
        assert any(
            text in rule.message for text in ("compares numbers or strings", "nested too deeply")
        ), rule.message
        return
    result = rule.evaluate(context)
    assert rule.explain(context).endswith("-> true" if result else "-> false")
    assert rule.evaluate(context) is result  # deterministic
    if source.count("(") < MAX_DEPTH - 1:
        assert parse_expression(f"not ({source})").evaluate(context) is (not result)
