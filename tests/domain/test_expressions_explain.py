"""`explain_rule`: the rule tester's account of a rule (fields read, top-level clauses)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bandit_platform.domain.expressions import Clause, explain_rule, parse_expression

CONTEXT = {"cash_flow.balance": 600.0, "profile.products_held": ["checking"], "flag": True}


def test_conjunction_reports_each_clause_and_the_fields_read() -> None:
    rule = parse_expression(
        "not ('savings' in profile.products_held) and cash_flow.balance >= 1000"
    )
    explanation = explain_rule(rule, CONTEXT)
    assert explanation.result is False
    assert explanation.connective == "and"
    assert explanation.clauses == (
        Clause("not ('savings' in profile.products_held)", True),
        Clause("cash_flow.balance >= 1000", False),
    )
    assert explanation.fields == (
        ("cash_flow.balance", "600.0"),
        ("profile.products_held", "['checking']"),
    )
    assert explanation.detail.endswith("result -> false")


def test_disjunction_with_nested_parts_and_missing_fields() -> None:
    rule = parse_expression("x == 1 or (flag and not y) or z in ['a', 'b']")
    explanation = explain_rule(rule, CONTEXT)
    assert explanation.result is True
    assert explanation.connective == "or"
    assert [c.text for c in explanation.clauses] == [
        "x == 1",
        "(flag and not y)",
        "z in ['a', 'b']",
    ]
    assert [c.value for c in explanation.clauses] == [False, True, False]
    assert dict(explanation.fields) == {
        "flag": "true",
        "x": "missing",
        "y": "missing",
        "z": "missing",
    }


@pytest.mark.parametrize("source", ["true", "flag", "cash_flow.balance > 5", "not flag"])
def test_a_single_clause_is_the_whole_rule(source: str) -> None:
    explanation = explain_rule(parse_expression(source), CONTEXT)
    assert explanation.connective is None
    assert len(explanation.clauses) == 1
    assert explanation.clauses[0].value == explanation.result


RULES = [
    "a >= 1 and b == 'x' or not c",
    "(a < 3 or b in ['x', 'y']) and c",
    "a != 2 and not (b == 'y' or c)",
]


@given(
    st.sampled_from(RULES),
    st.dictionaries(
        st.sampled_from(["a", "b", "c"]),
        st.one_of(st.integers(-5, 5), st.sampled_from(["x", "y"]), st.booleans()),
    ),
)
def test_the_explanation_agrees_with_evaluate(source: str, context: dict[str, object]) -> None:
    rule = parse_expression(source)
    explanation = explain_rule(rule, context)
    assert explanation.result == rule.evaluate(context)
    values = [clause.value for clause in explanation.clauses]
    if explanation.connective == "and":
        assert explanation.result == all(values)
    elif explanation.connective == "or":
        assert explanation.result == any(values)
    # Each clause's text parses to a rule with the same value.
    for clause in explanation.clauses:
        assert parse_expression(clause.text).evaluate(context) == clause.value
