"""Privacy over the JSON API (in process, real database): consent withdrawals, identifiers
refused in a decision's context (counted, never echoed) and in a configuration's context
fields."""

from __future__ import annotations

import json
from typing import Any

import pytest
import sqlalchemy as sa

from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import ContextField
from bandit_platform.features.context import IDENTIFIER_COUNTER
from bandit_platform.service.apikeys import ApiKeyService
from tests.api.test_http import (
    DECISION,
    Client,
    assert_problem,
    check_table,
    count,
    decide,
    new_experiment,
)
from tests.conftest import Demo
from tests.service.learning_support import DEMO, counter, demo_variant, start

WITHDRAWALS = "/v1/customers/consent-withdrawals"
CUSTOMER = "cust-http-erase-91c2"
FREE = "free-text-demo"


def _free_text_experiment(demo: Demo) -> None:
    """The demo with two free-text fields (a category and a list without `values`)."""
    start(
        demo.platform,
        demo_variant(
            FREE,
            context_fields=[
                *DEMO.context_fields,
                ContextField(name="trigger.merchant", type="category"),
                ContextField(name="behavior.search_terms", type="categories"),
            ],
        ),
    )


def _with(section: str, name: str, value: Any) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(DECISION))
    body["experiment"] = FREE
    body.pop("request_id")
    body["context"].setdefault(section, {})[name] = value
    return body


def test_consent_withdrawal_erases_and_is_idempotent(client: Client, demo: Demo) -> None:
    for _ in range(3):
        decide(client, customer_id=CUSTOMER, request_id=None)
    decide(client, customer_id="somebody-else", request_id=None)

    first = client.post(WITHDRAWALS, json={"customer_id": CUSTOMER})
    assert first.status_code == 200, first.text
    assert first.json()["decisions_erased"] == 3
    assert isinstance(first.json()["withdrawal_id"], int)
    assert first.json()["withdrawn_at"]
    second = client.post(WITHDRAWALS, json={"customer_id": CUSTOMER})
    assert second.status_code == 200
    assert second.json()["decisions_erased"] == 0
    unknown = client.post(WITHDRAWALS, json={"customer_id": "never-seen"})
    assert unknown.status_code == 200
    assert unknown.json()["decisions_erased"] == 0
    assert count(demo.platform, "consent_withdrawals") == 3

    # consent given again: a new decision keeps its context
    decide(client, customer_id=CUSTOMER, request_id=None, consent=True)
    with demo.platform.engine.connect() as connection:
        kept = connection.execute(
            sa.text(
                "SELECT count(*) FROM decisions WHERE customer_key = :k "
                "AND context_erased_at IS NULL"
            ),
            {"k": demo.platform.pseudonym(CUSTOMER)},
        ).scalar_one()
    assert kept == 1


def test_bad_consent_withdrawals_name_the_field(client: Client, demo: Demo) -> None:
    cases: dict[str, tuple[int, str]] = {
        "missing": (422, "customer_id"),
        "empty": (422, "customer_id"),
        "too long": (422, "customer_id"),
        "not a string": (422, "customer_id"),
        "unknown field": (422, "email"),
        "not an object": (422, "body"),
        "no body": (400, "body"),
    }
    bodies: dict[str, Any] = {
        "missing": {},
        "empty": {"customer_id": ""},
        "too long": {"customer_id": "c" * 129},
        "not a string": {"customer_id": 123},
        "unknown field": {"customer_id": "c-1", "email": "jane@example.com"},
        "not an object": ["c-1"],
    }

    def send(name: str) -> Any:
        if name == "no body":
            return client.post(WITHDRAWALS)
        return client.post(WITHDRAWALS, json=bodies[name])

    check_table(cases, send, lambda: count(demo.platform, "consent_withdrawals"))
    # the refused values are not echoed
    response = client.post(WITHDRAWALS, json=bodies["unknown field"])
    assert "jane@example.com" not in response.text


def test_consent_withdrawal_needs_the_decide_scope(client: Client, demo: Demo) -> None:
    reader = ApiKeyService(demo.platform).create("dashboard", {Scope.READ}).secret
    outcomes = ApiKeyService(demo.platform).create("core-banking", {Scope.OUTCOME}).secret
    body = {"customer_id": CUSTOMER}
    assert client.post(WITHDRAWALS, json=body, headers={"X-API-Key": ""}).status_code == 401
    assert client.post(WITHDRAWALS, json=body, headers={"X-API-Key": reader}).status_code == 403
    assert client.post(WITHDRAWALS, json=body, headers={"X-API-Key": outcomes}).status_code == 403
    assert count(demo.platform, "consent_withdrawals") == 0


IDENTIFIERS = {
    "email": ("trigger", "merchant", "jane.doe.7a1f@example.com"),
    "phone": ("trigger", "merchant", "+44 7700 900 417"),
    "iban": ("trigger", "merchant", "GB82 WEST 1234 5698 7654 32"),
    "card_number": ("behavior", "search_terms", ["loans", "4111 1111 1111 1111"]),
}


@pytest.mark.parametrize("kind", list(IDENTIFIERS))
def test_an_identifier_in_the_context_is_refused_counted_and_not_echoed(
    client: Client, demo: Demo, kind: str
) -> None:
    _free_text_experiment(demo)
    section, name, value = IDENTIFIERS[kind]
    before = count(demo.platform, "decisions")

    response = client.post("/v1/decisions", json=_with(section, name, value))

    assert_problem(response, 422, f"context.{section}.{name}")
    planted = value if isinstance(value, str) else value[-1]
    assert planted not in response.text
    assert planted.replace(" ", "") not in response.text.replace(" ", "")
    assert count(demo.platform, "decisions") == before
    assert counter(demo.platform, IDENTIFIER_COUNTER) == 1
    assert counter(demo.platform, f"{IDENTIFIER_COUNTER}.{kind}") == 1


def test_ordinary_free_text_is_accepted_and_not_counted(client: Client, demo: Demo) -> None:
    _free_text_experiment(demo)
    response = client.post("/v1/decisions", json=_with("trigger", "merchant", "Corner Coffee 42"))
    assert response.status_code == 200, response.text
    assert counter(demo.platform, IDENTIFIER_COUNTER) == 0


def test_a_protected_attribute_holding_an_email_is_dropped_not_refused(
    client: Client, demo: Demo
) -> None:
    body = json.loads(json.dumps(DECISION))
    body.pop("request_id")
    body["context"]["profile"]["gender"] = "jane.doe@example.com"
    response = client.post("/v1/decisions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["dropped_fields"] == ["profile.gender"]
    assert counter(demo.platform, IDENTIFIER_COUNTER) == 0


def test_an_identifier_field_in_a_configuration_is_refused(client: Client, demo: Demo) -> None:
    config = new_experiment("with-email")
    config["context_fields"].append({"name": "profile.e_mail", "type": "category"})
    before = count(demo.platform, "experiments")

    response = client.post("/v1/experiments", json=config)

    assert_problem(response, 422, f"context_fields[{len(config['context_fields']) - 1}].name")
    assert "email address" in response.json()["detail"]
    assert count(demo.platform, "experiments") == before
