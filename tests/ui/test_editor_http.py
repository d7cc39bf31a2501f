"""The experiment editor and the rule tester over HTTP (TestClient, demo platform, SQLite and
PostgreSQL): creating and editing through the form, errors next to their fields with the
input kept, CSRF and roles, the edit round trip, and the rule tester against the decision
path."""

from __future__ import annotations

import copy
import html
import json
import re
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import TestClient

from bandit_platform.api.ui.editor import field_id, form_from_config
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.config import config_from_builtins, config_to_builtins
from bandit_platform.domain.users import Role
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.users import UserService
from tests.api.test_http import DECISION
from tests.conftest import Demo
from tests.ui.test_ui_http import PASSWORD, sign_in

Client = TestClient[Litestar]
HTML = {"Accept": "text/html,application/xhtml+xml"}
RULES = f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/rules"
EDIT = f"/ui/experiments/{DEMO_EXPERIMENT_KEY}/edit"

#: The configuration the creation test types into the form.
INTENDED: dict[str, Any] = {
    "key": "card-upsell",
    "name": "Card upsell",
    "description": "Cards for travellers",
    "surfaces": ["home_feed", "banner"],
    "context_fields": [
        {"name": "cash_flow.balance", "type": "number"},
        {"name": "profile.segment", "type": "category", "values": ["mass", "affluent"]},
    ],
    "offers": [
        {
            "key": "travel_card",
            "product": "credit_card",
            "name": "Travel card",
            "description": "",
            "features": {"fee": 95.0},
            "variants": [{"key": "lounge", "tone": "warm", "headline": "Lounges"}],
            "eligibility": "cash_flow.balance >= 1000",
        },
        {
            "key": "cashback",
            "product": "credit_card",
            "name": "Cashback card",
            "description": "",
            "features": {},
            "variants": [{"key": "default"}],
            "eligibility": "profile.segment == 'mass'",
        },
    ],
    "traffic": {"holdout": 10.0, "ab": 30.0, "bandit": 60.0},
    "explorer": {"kind": "softmax", "lambda": 2.5},
    "probability_floor": 0.02,
    "reward": {
        "event_weights": {"click": 0.2, "apply": 1.0},
        "attribution_window_hours": 72.0,
        "reward_wait_hours": 96.0,
        "aggregation": "max",
    },
    "frequency_caps": [{"scope": "customer", "max_offers": 3, "window_hours": 24.0}],
    "consent_required": False,
    "protected_attributes": ["profile.gender"],
    "fallback_offer": "cashback",
}


@pytest.fixture
def users(demo: Demo) -> UserService:
    service = UserService(demo.platform)
    for role in Role:
        service.create(role.value, PASSWORD, role, actor="test")
    return service


@pytest.fixture
def ui(client: Client, users: UserService) -> Client:
    del client.headers["X-API-Key"]
    client.follow_redirects = False
    return client


def form_fields(page: str) -> dict[str, str]:
    """The submitted values of the editor form on `page`, as a browser would send them
    (without any `action` button)."""
    form = page[page.index('<form method="post" action="/ui/experiments/') :]
    form = form[: form.index("</form>")]
    fields: dict[str, str] = {}
    for tag in re.findall(r"<input[^>]*>", form):
        name = re.search(r'name="([^"]*)"', tag)
        if name is None:
            continue
        value = re.search(r'value="([^"]*)"', tag)
        if 'type="checkbox"' in tag and " checked" not in tag:
            continue
        fields[html.unescape(name.group(1))] = html.unescape(value.group(1) if value else "")
    for name, body in re.findall(r'<textarea[^>]*name="([^"]*)"[^>]*>(.*?)</textarea>', form, re.S):
        fields[html.unescape(name)] = html.unescape(body)
    for name, body in re.findall(r'<select[^>]*name="([^"]*)"[^>]*>(.*?)</select>', form, re.S):
        chosen = re.search(r'<option value="([^"]*)" selected>', body)
        first = re.search(r'<option value="([^"]*)"', body)
        fields[html.unescape(name)] = html.unescape((chosen or first).group(1))  # type: ignore[union-attr]
    return fields


def intended_form(csrf: str, **changes: str) -> dict[str, str]:
    fields = form_from_config(INTENDED).values
    return {**fields, "offer_count": "2", "csrf_token": csrf, "action": "save", **changes}


def field_error(page: str, path: str) -> str | None:
    """The error message shown right after the input for `path`, if any."""
    match = re.search(
        rf'<p class="field-error" id="{re.escape(field_id(path))}-error">([^<]*)</p>', page
    )
    return html.unescape(match.group(1)) if match else None


def test_create_through_the_form(ui: Client, demo: Demo) -> None:
    csrf = sign_in(ui, "editor")
    page = ui.get("/ui/experiments/new", headers=HTML)
    assert page.status_code == 200
    assert f'name="csrf_token" value="{csrf}"' in page.text
    # Each explorer's plain-language explanation is next to the choice.
    assert "Show offers in proportion to how good they look" in page.text

    response = ui.post("/ui/experiments/new", data=intended_form(csrf), headers=HTML)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/ui/experiments/card-upsell?flash=created"
    view = ExperimentService(demo.platform).get("card-upsell")
    assert view.status.value == "draft"
    assert view.config == config_to_builtins(config_from_builtins(INTENDED))
    shown = ui.get(response.headers["location"], headers=HTML)
    assert "Experiment created as a draft" in shown.text


def test_add_and_remove_offer_rows_keep_the_input(ui: Client) -> None:
    csrf = sign_in(ui, "editor")
    added = ui.post(
        "/ui/experiments/new", data=intended_form(csrf, action="add_offer"), headers=HTML
    )
    assert added.status_code == 200
    fields = form_fields(added.text)
    assert fields["offer_count"] == "3"
    assert fields["offers[1].eligibility"] == "profile.segment == 'mass'"
    assert fields["offers[2].eligibility"] == "true"
    removed = ui.post(
        "/ui/experiments/new", data={**fields, "action": "remove_offer:0"}, headers=HTML
    )
    fields = form_fields(removed.text)
    assert fields["offer_count"] == "2"
    assert fields["offers[0].key"] == "cashback"


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        (
            {"offers[1].eligibility": "profile.segment == "},
            "offers[1].eligibility",
            "expected a value",
        ),
        (
            {"offers[0].eligibility": "profile.income > 3"},
            "offers[0].eligibility",
            "not in context_fields",
        ),
        ({"traffic.bandit": "50"}, "traffic", "must add up to 100"),
        ({"fallback_offer": "gold_card"}, "fallback_offer", "unknown offer 'gold_card'"),
        ({"traffic.ab": "lots"}, "traffic.ab", "is not a number"),
        ({"frequency_caps": "[{"}, "frequency_caps", "not valid JSON"),
        ({"offers[0].variants": "[]"}, "offers[0].variants", "length >= 1"),
        ({"explorer.softmax.lambda": "-1"}, "explorer.softmax.lambda", ">= 0.0"),
        ({"key": "Bad Key"}, "key", "matching regex"),
    ],
)
def test_errors_come_back_next_to_their_field(
    ui: Client, changes: dict[str, str], path: str, message: str
) -> None:
    csrf = sign_in(ui, "editor")
    response = ui.post("/ui/experiments/new", data=intended_form(csrf, **changes), headers=HTML)
    assert response.status_code == 422
    shown = field_error(response.text, path)
    assert shown is not None, response.text
    assert message in shown
    # The summary links to the field.
    assert f'href="#{field_id(path)}"' in response.text
    # Every input is kept as typed.
    fields = form_fields(response.text)
    for name, value in intended_form(csrf, **changes).items():
        if name != "action":
            assert fields.get(name, "") == value, name


def test_unknown_error_paths_go_to_the_summary(ui: Client) -> None:
    csrf = sign_in(ui, "editor")
    # A duplicate key is reported by the service at `key` (create's Conflict).
    response = ui.post(
        "/ui/experiments/new",
        data=intended_form(csrf, key=DEMO_EXPERIMENT_KEY),
        headers=HTML,
    )
    assert response.status_code == 409
    assert "already exists" in (field_error(response.text, "key") or "")
    assert 'class="error-summary"' in response.text


def test_csrf_and_roles(ui: Client) -> None:
    csrf = sign_in(ui, "editor")
    missing = ui.post(
        "/ui/experiments/new", data={**intended_form(csrf), "csrf_token": ""}, headers=HTML
    )
    assert missing.status_code == 403
    wrong = ui.post(EDIT, data={**intended_form(csrf), "csrf_token": "x" * 40}, headers=HTML)
    assert wrong.status_code == 403
    for role in ("viewer", "approver"):
        ui.cookies.clear()
        token = sign_in(ui, role)
        assert ui.get("/ui/experiments/new", headers=HTML).status_code == 403
        assert ui.get(EDIT, headers=HTML).status_code == 403
        assert ui.post("/ui/experiments/new", data=intended_form(token)).status_code == 403
        assert ui.post(EDIT, data=intended_form(token)).status_code == 403
        # The rule tester is read-only and open to every role.
        assert ui.get(RULES, headers=HTML).status_code == 200
    ui.cookies.clear()
    assert ui.get("/ui/experiments/new").status_code in (303, 401)


def test_edit_round_trip_keeps_every_field(ui: Client, demo: Demo) -> None:
    service = ExperimentService(demo.platform)
    before = service.get(DEMO_EXPERIMENT_KEY)
    csrf = sign_in(ui, "editor")
    page = ui.get(EDIT, headers=HTML)
    assert page.status_code == 200
    fields = form_fields(page.text)
    assert fields["csrf_token"] == csrf
    response = ui.post(EDIT, data={**fields, "action": "save"}, headers=HTML)
    assert response.status_code == 303, response.text
    assert response.headers["location"].endswith("flash=unchanged")
    after = service.get(DEMO_EXPERIMENT_KEY)
    assert after.version == before.version
    assert after.config == before.config

    # A real change to a draft makes a new version with exactly that change.
    changed = {**fields, "action": "save", "traffic.holdout": "20", "traffic.bandit": "60"}
    response = ui.post(EDIT, data=changed, headers=HTML)
    assert response.status_code == 303, response.text
    updated = service.get(DEMO_EXPERIMENT_KEY)
    expected = copy.deepcopy(before.config)
    expected["traffic"] = {"holdout": 20.0, "ab": 20.0, "bandit": 60.0}
    if updated.version > before.version:
        assert updated.config == expected
    else:  # a live experiment: the change waits for approval
        assert "/ui/changes/" in response.headers["location"]
        change = service.changes(DEMO_EXPERIMENT_KEY)[0]
        assert change.config == expected


def test_an_invalid_edit_keeps_the_input(ui: Client) -> None:
    csrf = sign_in(ui, "editor")
    fields = form_fields(ui.get(EDIT, headers=HTML).text)
    assert fields["csrf_token"] == csrf
    broken = {**fields, "action": "save", "offers[2].eligibility": "cash_flow.balance >>= 3"}
    response = ui.post(EDIT, data=broken, headers=HTML)
    assert response.status_code == 422
    assert field_error(response.text, "offers[2].eligibility") is not None
    assert form_fields(response.text)["offers[2].eligibility"] == "cash_flow.balance >>= 3"


SAMPLES: list[dict[str, Any]] = [
    DECISION["context"],
    {
        **DECISION["context"],
        "cash_flow": {
            **DECISION["context"]["cash_flow"],
            "balance": 20.0,
            "revolving_balance": 9000,
        },
        "profile": {**DECISION["context"]["profile"], "products_held": ["checking", "savings"]},
    },
    {
        **DECISION["context"],
        "cash_flow": {**DECISION["context"]["cash_flow"], "days_overdrawn_90d": 5},
        "behavior": {**DECISION["context"]["behavior"], "pages_viewed_7d": ["mortgage_calculator"]},
    },
]


def verdicts(page: str) -> dict[str, bool]:
    rows = re.findall(r'<tr data-offer="([^"]+)">(.*?)</tr>', page, re.S)
    return {key: "badge-good" in body for key, body in rows}


def test_rule_tester_agrees_with_the_decision_path(ui: Client, client: Client, demo: Demo) -> None:
    csrf = sign_in(ui, "viewer")
    for number, sample in enumerate(SAMPLES):
        response = ui.post(
            RULES, data={"csrf_token": csrf, "context": json.dumps(sample)}, headers=HTML
        )
        assert response.status_code == 200, response.text
        shown = verdicts(response.text)
        assert len(shown) == 6
        # The decision path: a bandit-group decision's probabilities cover exactly the
        # eligible offers (and no offer).
        for attempt in range(40):
            body = client.post(
                "/v1/decisions",
                headers={"X-API-Key": demo.api_key},
                json={
                    **DECISION,
                    "context": sample,
                    "customer_id": f"tester-{number}-{attempt}",
                    "request_id": f"tester-{number}-{attempt}",
                },
            ).json()
            if body["group"] == "bandit":
                break
        else:
            pytest.fail("no bandit-group customer found")
        decided = set(body["probabilities"]) - {"no_offer"}
        assert decided == {key for key, eligible in shown.items() if eligible}


def test_rule_tester_explains_and_drops(ui: Client) -> None:
    csrf = sign_in(ui, "viewer")
    sample = copy.deepcopy(DECISION["context"])
    sample["profile"]["gender"] = "female"
    sample["profile"]["favourite_colour"] = "blue"
    response = ui.post(
        RULES, data={"csrf_token": csrf, "context": json.dumps(sample)}, headers=HTML
    )
    assert response.status_code == 200
    text = html.unescape(response.text)
    assert "<code>profile.gender</code>: protected attribute" in text
    assert "<code>profile.favourite_colour</code>: not in the context allow-list" in text
    # The rule, each clause's value and the fields read.
    assert "<code>cash_flow.balance</code> = 8650.5" in text
    assert "✓ true" in text
    # The sample is echoed in the form only: the segments it falls in are listed.
    assert "<strong>in</strong> <code>young_professional</code>" in text

    bad = ui.post(RULES, data={"csrf_token": csrf, "context": "{not json"}, headers=HTML)
    assert bad.status_code == 422
    assert "not valid JSON" in bad.text
    assert "{not json" in html.unescape(bad.text)
    assert ui.post(RULES, data={"context": "{}"}, headers=HTML).status_code == 403


def test_edit_as_json(ui: Client, demo: Demo) -> None:
    csrf = sign_in(ui, "editor")
    page = ui.get("/ui/experiments/new", headers=HTML)
    assert 'name="document"' in page.text
    broken = {**INTENDED, "fallback_offer": "gold_card"}
    response = ui.post(
        "/ui/experiments/new",
        data={"csrf_token": csrf, "action": "save_json", "document": json.dumps(broken)},
        headers=HTML,
    )
    assert response.status_code == 422
    assert field_error(response.text, "document") == "fallback_offer: unknown offer 'gold_card'"
    assert f'href="#{field_id("document")}"><code>fallback_offer</code>' in response.text
    # The typed document is kept, and the inputs show it too.
    fields = form_fields(response.text)
    assert fields["offers[1].key"] == "cashback"
    assert (
        json.loads(
            html.unescape(
                re.findall(
                    r'<textarea[^>]*name="document"[^>]*>(.*?)</textarea>', response.text, re.S
                )[0]
            )
        )
        == broken
    )

    structural = ui.post(
        "/ui/experiments/new",
        data={"csrf_token": csrf, "action": "save_json", "document": '{"key": 3}'},
        headers=HTML,
    )
    assert structural.status_code == 422
    assert (field_error(structural.text, "document") or "").startswith("key: Expected `str`")

    created = ui.post(
        "/ui/experiments/new",
        data={"csrf_token": csrf, "action": "save_json", "document": json.dumps(INTENDED)},
        headers=HTML,
    )
    assert created.status_code == 303, created.text
    stored = ExperimentService(demo.platform).get("card-upsell").config
    assert stored == config_to_builtins(config_from_builtins(INTENDED))
