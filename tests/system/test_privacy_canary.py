"""A canary sweep: unique strings planted wherever a careless system could leak them, then
every row and column of every table, and the server's log, searched for each.

The real server process, over real HTTP, on SQLite and PostgreSQL. Canaries: the raw customer
id (of decisions and of a consent withdrawal), a protected attribute's value, an email
address, a phone number, an IBAN and a card number in a free-text context field (refused),
an unknown context field's value (refused), the API key's secret and a UI password (right and
wrong). None may appear; the key and the password only as their hashes.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import ContextField
from bandit_platform.domain.users import Role
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.platform import Platform
from bandit_platform.service.users import UserService
from bandit_platform.settings import Settings
from bandit_platform.storage.database import create_engine
from bandit_platform.storage.tables import SQLModel
from tests.conftest import PSEUDONYM_KEY, REPO, start_server, stop_server
from tests.service.learning_support import DEMO, demo_variant, start

pytestmark = pytest.mark.system

EXPERIMENT = "canary-offers"
DECISION: dict[str, Any] = json.loads((REPO / "examples/requests/decision.json").read_text())


def _luhn_complete(digits: str) -> str:
    for check in "0123456789":
        number = digits + check
        total = 0
        for position, char in enumerate(reversed(number)):
            digit = int(char) * (2 if position % 2 else 1)
            total += digit - 9 if digit > 9 else digit
        if total % 10 == 0:
            return number
    raise AssertionError("unreachable")


def _iban(country: str, bban: str) -> str:
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    return f"{country}{98 - int(numeric) % 97:02d}{bban}"


class Canaries:
    """Unique strings for one run (random, so that a previous run cannot satisfy a search)."""

    def __init__(self) -> None:
        tag = uuid.uuid4().hex[:10]
        rng = random.Random()
        digits = "".join(rng.choice("0123456789") for _ in range(14))
        self.customer = f"cust-canary-{tag}"
        self.withdrawn_customer = f"cust-withdrawn-{tag}"
        self.protected = f"protected-canary-{tag}"
        self.email = f"canary.{tag}@example.com"
        self.phone = f"+44 7700 9{digits[:5]}"
        self.iban = _iban("GB", "WEST" + digits)
        self.card = _luhn_complete("4" + digits)
        self.unknown_field = f"unknown-field-canary-{tag}"
        self.password = f"password-canary-{tag}"
        self.wrong_password = f"wrong-password-canary-{tag}"
        self.secret = ""  # the API key's, once created

    def searched(self) -> dict[str, str]:
        """Every canary by what it is, with digit-only forms of the numbers."""
        found = {
            "customer id": self.customer,
            "withdrawn customer id": self.withdrawn_customer,
            "protected attribute": self.protected,
            "email address": self.email,
            "phone number": self.phone,
            "phone digits": re.sub(r"\D", "", self.phone),
            "iban": self.iban,
            "card number": self.card,
            "unknown field value": self.unknown_field,
            "password": self.password,
            "wrong password": self.wrong_password,
            "api key secret": self.secret,
            "api key secret's random part": self.secret.rsplit("_", 1)[-1],
        }
        assert all(found.values())
        return found


def _setup(db_url: str, canaries: Canaries) -> tuple[str, str]:
    """An experiment with free-text fields, an API key and a UI user; returns the key's
    secret and the username."""
    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    try:
        start(
            platform,
            demo_variant(
                EXPERIMENT,
                context_fields=[
                    *DEMO.context_fields,
                    ContextField(name="trigger.merchant", type="category"),
                    ContextField(name="behavior.search_terms", type="categories"),
                ],
            ),
        )
        secret = (
            ApiKeyService(platform)
            .create("canary-app", {Scope.DECIDE, Scope.OUTCOME, Scope.READ})
            .secret
        )
        username = "canary-viewer"
        UserService(platform).create(username, canaries.password, Role.VIEWER, actor="test")
    finally:
        platform.close()
    return secret, username


def _decision(customer: str, **context: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(json.dumps(DECISION))
    body["experiment"] = EXPERIMENT
    body["customer_id"] = customer
    body.pop("request_id")
    for section, fields in context.items():
        body["context"].setdefault(section, {}).update(fields)
    return body


def _sign_in(client: httpx.Client, username: str, password: str) -> httpx.Response:
    page = client.get("/ui/login")
    assert page.status_code == 200
    match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert match is not None
    return client.post(
        "/ui/login",
        data={"username": username, "password": password, "csrf_token": match.group(1)},
    )


def _drive(client: httpx.Client, ui: httpx.Client, canaries: Canaries, username: str) -> None:
    """Every request a careless system could leak a canary from."""
    accepted = client.post(
        "/v1/decisions",
        json=_decision(canaries.customer, profile={"gender": canaries.protected}),
    )
    assert accepted.status_code == 200, accepted.text
    answer = accepted.json()
    assert answer["dropped_fields"] == ["profile.gender"]
    outcome = client.post(
        "/v1/outcomes",
        json={
            "decision_id": answer["decision_id"],
            "event": "click",
            "value": 1.0,
            "occurred_at": datetime.now(UTC).isoformat(),
            "idempotency_key": f"outcome-{uuid.uuid4().hex}",
        },
    )
    assert outcome.status_code == 201, outcome.text
    # The withdrawn customer has a decision (erased below), the other none.
    erased = client.post("/v1/decisions", json=_decision(canaries.withdrawn_customer))
    assert erased.status_code == 200, erased.text

    refused = {
        "trigger.merchant": _decision(canaries.customer, trigger={"merchant": canaries.email}),
        "trigger.merchant (phone)": _decision(
            canaries.customer, trigger={"merchant": f"call {canaries.phone}"}
        ),
        "behavior.search_terms": _decision(
            canaries.customer, behavior={"search_terms": ["loans", canaries.iban]}
        ),
        "trigger.merchant (card)": _decision(
            canaries.customer, trigger={"merchant": canaries.card}
        ),
        "profile.nickname": _decision(
            canaries.customer, profile={"nickname": canaries.unknown_field}
        ),
    }
    for where, body in refused.items():
        response = client.post("/v1/decisions", json=body)
        assert response.status_code == 422, (where, response.text)
        assert response.json()["field"] == f"context.{where.split(' ')[0]}"
        for name, canary in canaries.searched().items():
            assert canary not in response.text, (where, name)

    for customer, count in ((canaries.withdrawn_customer, 1), (canaries.customer, 1)):
        withdrawal = client.post(
            "/v1/customers/consent-withdrawals", json={"customer_id": customer}
        )
        assert withdrawal.status_code == 200, withdrawal.text
        assert withdrawal.json()["decisions_erased"] == count

    wrong = _sign_in(ui, username, canaries.wrong_password)
    assert wrong.status_code in (200, 401), wrong.text
    right = _sign_in(ui, username, canaries.password)
    assert right.status_code == 303, right.text
    assert ui.get("/ui/experiments").status_code == 200


def _table_hits(db_url: str, canaries: dict[str, str]) -> tuple[list[str], dict[str, str]]:
    """Every (table, canary) found, and every table's rows as text (for the controls)."""
    engine = create_engine(db_url, pool_size=1)
    hits: list[str] = []
    texts: dict[str, str] = {}
    try:
        with engine.connect() as connection:
            for table in SQLModel.metadata.sorted_tables:
                parts: list[str] = []
                for row in connection.execute(sa.select(table)):
                    for value in row:
                        if isinstance(value, bytes | bytearray | memoryview):
                            parts.append(bytes(value).decode("latin-1"))
                        elif isinstance(value, dict | list):
                            parts.append(json.dumps(value, ensure_ascii=False))
                        else:
                            parts.append(str(value))
                text = "\n".join(parts)
                texts[table.name] = text
                hits += [f"{table.name}: {name}" for name, c in canaries.items() if c in text]
            # Every table of the schema is swept, not only those the models know.
            names = set(sa.inspect(connection).get_table_names())
    finally:
        engine.dispose()
    assert names - {"alembic_version"} <= set(texts), names - set(texts)
    return hits, texts


def test_no_canary_reaches_the_database_or_the_log(db_url: str, tmp_path: Path) -> None:
    canaries = Canaries()
    canaries.secret, username = _setup(db_url, canaries)
    log = tmp_path / "server.log"
    server = start_server(db_url, log)
    try:
        with (
            server.client(canaries.secret) as client,
            httpx.Client(base_url=server.url, timeout=30, follow_redirects=False) as ui,
        ):
            _drive(client, ui, canaries, username)
    finally:
        stop_server(server)

    searched = canaries.searched()
    hits, texts = _table_hits(db_url, searched)
    assert hits == []
    log_text = log.read_text(errors="replace")
    assert [name for name, canary in searched.items() if canary in log_text] == []

    # Controls: the sweep does see what was stored, as pseudonyms and hashes.
    key_hash = hashlib.sha256(canaries.secret.encode()).hexdigest()
    assert key_hash in texts["api_keys"]
    assert username in texts["users"]
    assert "scrypt" in texts["users"] or "$" in texts["users"]
    platform = Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))
    try:
        for customer in (canaries.customer, canaries.withdrawn_customer):
            assert platform.pseudonym(customer) in texts["consent_withdrawals"]
            assert platform.pseudonym(customer) in texts["decisions"]
    finally:
        platform.close()
    assert "decisions.identifier_refused.email" in texts["counters"]
    assert "decisions.identifier_refused.card_number" in texts["counters"]
    assert "consent.withdrawn" in texts["audit_log"]
    assert "consent withdrawal" in log_text  # the log searched is the server's
