"""Schemathesis against the real server process: the published OpenAPI schema is the contract.

1. Every operation of `/schema/openapi.json` (without the web UI and the simulation routes)
   gets generated valid (positive) and invalid (negative) requests, half of those with a path
   `key` aimed at the running demo experiment so that the success paths are reached too, plus
   hand-made requests for the statuses generation never produces (no key, an unknown key, a
   key without the route's scope, a body over the size limit). Each answer must pass
   `not_a_server_error`, `status_code_conformance`, `content_type_conformance` and
   `response_schema_conformance`.
2. The decide -> outcome link (the schema has no OpenAPI links): decisions from generated
   request bodies, then generated outcome bodies that carry the decision id of a real answer,
   with replays, reused idempotency keys, times out of bounds and another app's key, checked
   by the same Schemathesis checks and against a model of the outcome rules.

Error answers are RFC 9457 problem+json, and the schema documents them for every operation
(`bandit_platform.api.openapi`): an answer whose status, content type or body the schema does
not document fails like any other nonconformance.

Generation is derandomised with a fixed number of examples, so a run sends the same requests
each time; the number of requests is printed and recorded as a test property.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import CheckFunction, not_a_server_error
from schemathesis.core.transport import Response
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from bandit_platform.cli import setup_demo
from bandit_platform.domain.access import Scope
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from tests.conftest import PSEUDONYM_KEY, REPO, Server, start_server, stop_server

pytestmark = [pytest.mark.system, pytest.mark.slow]

DEMO_EXPERIMENT = "banking-offers-demo"
DEMO_SURFACES = ("home_feed", "post_login_banner", "transaction_detail")
#: The web UI is not part of the JSON API; the simulation routes exist in simulation mode only.
EXCLUDED_PATHS = r"^/(ui|v1/simulation)(/|$)"
#: Generated requests per operation and mode (each also aimed at the demo experiment when the
#: path has a `key`).
MAX_EXAMPLES = 12
#: Generated decide -> outcome sequences.
LINK_EXAMPLES = 80
#: Larger than the server's default body limit (64 KiB).
OVERSIZED = 80 * 1024
#: The server's clock-skew tolerance (default 300 s) and a margin against slow requests.
SKEW = timedelta(seconds=300)
MARGIN = timedelta(seconds=90)

CHECKS: tuple[CheckFunction, ...] = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)

FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    # Failures are collected and reported together, never shrunk against a live server.
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)


@dataclass
class Target:
    """The server under test and the keys it knows."""

    server: Server
    schema: Any
    #: Every scope, the demo experiment's owner.
    key: str
    #: Only the `read` scope.
    read_key: str
    #: Every scope, another app.
    other_key: str


@dataclass
class Tally:
    """What the fuzzing sent and what it found."""

    requests: int = 0
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    failures: dict[tuple[str, str, int], str] = field(default_factory=dict)

    def fail(self, label: str, check: str, status: int, message: str) -> None:
        self.failures.setdefault((label, check, status), message)

    def summary(self, title: str) -> str:
        lines = [f"{title}: {self.requests} requests"]
        by_status = Counter(status for (_, status) in self.statuses.elements())
        lines.append("  statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(by_status.items())))
        return "\n".join(lines)

    def report(self) -> str:
        return "\n\n".join(
            f"{label} [{check}] answered {status}:\n{message}"
            for (label, check, status), message in sorted(self.failures.items())
        )


def _platform(db_url: str) -> Platform:
    return Platform(Settings(database_url=db_url, pseudonym_key=PSEUDONYM_KEY))


def _start(db_url: str, log: Path) -> Server:
    # Per-key rate limits would answer 429 to a fuzzer: they are off here.
    env = {"BANDIT_RATE_LIMIT_PER_SECOND": "0"}
    try:
        return start_server(db_url, log, env=env)
    except RuntimeError as exc:
        if "did not become ready" not in str(exc):
            raise
        # A loaded machine can take longer than the readiness deadline to import the app once.
        return start_server(db_url, log.with_suffix(".retry.log"), env=env)


@pytest.fixture(scope="module")
def target(sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    """One server on a fresh SQLite database for the module: the decide -> outcome test runs
    first, on the running demo experiment; the test of every operation may change it."""
    directory = tmp_path_factory.mktemp("fuzz")
    shutil.copy(sqlite_template, directory / "bandit.db")
    db_url = f"sqlite:///{directory / 'bandit.db'}"
    platform = _platform(db_url)
    try:
        key, _ = setup_demo(platform)
        keys = ApiKeyService(platform)
        read_key = keys.create("fuzz-read-only", scopes={Scope.READ}).secret
        other_key = keys.create("fuzz-other-app", scopes=set(Scope)).secret
    finally:
        platform.close()
    server = _start(db_url, directory / "server.log")
    try:
        schema = schemathesis.openapi.from_url(f"{server.url}/schema/openapi.json")
        yield Target(server, schema.exclude(path_regex=EXCLUDED_PATHS), key, read_key, other_key)
    finally:
        stop_server(server)
        _no_tracebacks(server.log)


def _no_tracebacks(log: Path) -> None:
    text = log.read_text(errors="replace")
    assert "Traceback" not in text, text[-4000:]


def _operations(target: Target) -> list[APIOperation]:
    return [result.ok() for result in target.schema.get_all_operations()]


def _problem_body(response: Response) -> dict[str, Any] | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _send(
    case: Case,
    target: Target,
    tally: Tally,
    *,
    checks: tuple[CheckFunction, ...] = CHECKS,
    headers: dict[str, str] | None = None,
) -> Response:
    """Send one case and run each check on the answer, recording what fails."""
    response = case.call(base_url=target.server.url, headers=headers, timeout=30)
    label = case.operation.label
    tally.requests += 1
    tally.statuses[(label, response.status_code)] += 1
    for check in checks:
        name = check.__name__
        try:
            case.validate_response(response, checks=[check], headers=headers)
        except BaseException as exc:  # schemathesis raises a BaseExceptionGroup of failures
            if isinstance(exc, KeyboardInterrupt):
                raise
            tally.fail(label, name, response.status_code, str(exc))
    return response


def _has_key(operation: APIOperation) -> bool:
    return "{key}" in operation.path


def _negatable(operation: APIOperation) -> bool:
    """Something of the request has a schema that can be violated (body or query)."""
    raw = operation.definition.raw
    return "requestBody" in raw or any(p.get("in") == "query" for p in raw.get("parameters", []))


def _aimed(case: Case, aim: bool) -> Case:
    """Point a generated case at the running demo experiment (a valid surface too)."""
    if not aim:
        return case
    if _has_key(case.operation):
        case.path_parameters = {**(case.path_parameters or {}), "key": DEMO_EXPERIMENT}
    if case.operation.path == "/v1/decisions" and isinstance(case.body, dict):
        case.body = {**case.body, "experiment": DEMO_EXPERIMENT, "surface": DEMO_SURFACES[0]}
    return case


def _fuzz_operation(
    operation: APIOperation, mode: GenerationMode, target: Target, tally: Tally
) -> None:
    strategy = operation.as_strategy(generation_mode=mode)

    @FUZZ_SETTINGS
    @given(case=strategy, aim=st.booleans())
    def run(case: Case, aim: bool) -> None:
        _send(_aimed(case, aim), target, tally, headers={"X-API-Key": target.key})

    run()


def _edge_requests(operation: APIOperation, target: Target) -> Iterator[tuple[str, Case, str]]:
    """Hand-made requests for the statuses generation does not reach: (name, case, key)."""
    path = {"key": DEMO_EXPERIMENT} if _has_key(operation) else {}
    if operation.path.startswith("/v1/"):
        yield "no key", operation.Case(path_parameters=path), ""
        yield "unknown key", operation.Case(path_parameters=path), "bpk_00000000_unknown"
        if operation.method.upper() != "GET" and not operation.path.endswith("/fairness"):
            yield "read-only key", operation.Case(path_parameters=path), target.read_key
    # The fairness audit takes bodies up to 16 MiB: its limit is not the default one.
    if "requestBody" in operation.definition.raw and not operation.path.endswith("/fairness"):
        padding = {"padding": "x" * OVERSIZED}
        yield "oversized body", operation.Case(path_parameters=path, body=padding), target.key


EDGE_STATUSES = {"no key": 401, "unknown key": 401, "read-only key": 403, "oversized body": 413}


# --- decide -> outcome ---------------------------------------------------------------------

EXAMPLE_CONTEXT: dict[str, Any] = json.loads(
    (REPO / "examples" / "requests" / "decision.json").read_text()
)["context"]
DECISION_FIELDS = {"experiment", "customer_id", "context", "surface", "consent"}
OUTCOME_FIELDS = {"decision_id", "event", "occurred_at", "idempotency_key", "value"}
#: Outcome bodies: mostly valid ones steered onto the decision, some invalid ones.
MODES = [GenerationMode.POSITIVE] * 3 + [GenerationMode.NEGATIVE]
EVENTS = ("click", "apply", "convert", "impression", "dismiss")
#: Events the demo experiment accepts: weighted ones, always-accepted ones, guardrail metrics.
ACCEPTED_EVENTS = frozenset({*EVENTS, "complaint", "opt_out"})


@dataclass
class Stored:
    """An outcome the server stored, by its idempotency key."""

    outcome_id: int
    fingerprint: tuple[str, str, float, datetime]


@dataclass
class LinkModel:
    """What the server must have stored, to predict replays and reused keys."""

    by_key: dict[str, Stored] = field(default_factory=dict)
    #: Per decision: the bodies stored, to send again as they were.
    sent: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    decisions: int = 0
    outcomes_created: int = 0
    replays: int = 0
    reused_keys: int = 0
    foreign: int = 0
    out_of_bounds: int = 0


def _at(offset: timedelta) -> str:
    return (datetime.now(UTC) + offset).isoformat()


@st.composite
def _outcome_plan(draw: st.DrawFn, decision_index: int) -> dict[str, Any]:
    """How a generated outcome body is steered: which decision, event, time and key."""
    return {
        "aim": draw(st.sampled_from(["own", "own", "own", "foreign", "generated"])),
        "event": draw(st.sampled_from([*EVENTS, None])),
        "time": draw(st.sampled_from(["now", "now", "before", "future", "generated"])),
        # A small pool of keys per decision, so that replays and reused keys happen.
        "key": f"link-{decision_index}-{draw(st.integers(0, 1))}",
        "value": draw(st.sampled_from([None, 1.0, 2.5, -1.0])),
        # Send a stored body of this decision again, byte for byte.
        "repeat": draw(st.sampled_from([False, True, True])),
    }


def _time(plan: str, decided_at: datetime) -> str | None:
    now = datetime.now(UTC)
    if plan == "now":
        return (max(now, decided_at) - timedelta(seconds=1)).isoformat()
    if plan == "before":
        return (decided_at - SKEW - MARGIN).isoformat()
    if plan == "future":
        return (now + SKEW + MARGIN).isoformat()
    return None


def _fingerprint(body: dict[str, Any]) -> tuple[str, str, float, datetime]:
    return (
        body["decision_id"],
        body["event"],
        float(body.get("value", 1.0)),
        datetime.fromisoformat(body["occurred_at"]),
    )


def test_decide_then_outcome_sequences(
    target: Target, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    model = LinkModel()
    decide = target.schema["/v1/decisions"]["POST"]
    record = target.schema["/v1/outcomes"]["POST"]
    problems: list[str] = []

    def expect(condition: bool, message: str) -> None:
        if not condition:
            problems.append(message)

    @settings(FUZZ_SETTINGS, max_examples=LINK_EXAMPLES)
    @given(
        decision=decide.as_strategy(),
        context=st.sampled_from(["example", "empty", "generated"]),
        surface=st.sampled_from(DEMO_SURFACES),
        data=st.data(),
    )
    def run(decision: Case, context: str, surface: str, data: st.DataObject) -> None:
        # The schema does not say that unknown fields are refused: generated bodies carry some.
        body = {k: v for k, v in decision.body.items() if k in DECISION_FIELDS}
        body.update(experiment=DEMO_EXPERIMENT, surface=surface)
        body["customer_id"] = f"link-{uuid.uuid4().hex[:12]}"
        body.pop("request_id", None)
        body.pop("requested_at", None)
        if context != "generated":
            body["context"] = EXAMPLE_CONTEXT if context == "example" else {}
        decision.body = body
        answer = _send(decision, target, tally, headers={"X-API-Key": target.key})
        if context != "generated":
            expect(answer.status_code == 200, f"valid decision answered {answer.status_code}")
        if answer.status_code != 200:
            return
        decided = json.loads(answer.content)
        model.decisions += 1
        decided_at = datetime.fromisoformat(decided["created_at"])
        index = model.decisions
        for _ in range(data.draw(st.integers(2, 5), label="outcomes")):
            mode = data.draw(st.sampled_from(MODES), label="mode")
            outcome = data.draw(record.as_strategy(generation_mode=mode), label="outcome")
            plan = data.draw(_outcome_plan(index), label="plan")
            _outcome(outcome, mode, plan, decided, decided_at)

    def _outcome(
        outcome: Case,
        mode: GenerationMode,
        plan: dict[str, Any],
        decided: dict[str, Any],
        decided_at: datetime,
    ) -> None:
        key = target.key
        steered = mode is GenerationMode.POSITIVE and isinstance(outcome.body, dict)
        if steered:
            body = {k: v for k, v in outcome.body.items() if k in OUTCOME_FIELDS}
            if plan["aim"] != "generated":
                body["decision_id"] = decided["decision_id"]
            if plan["aim"] == "foreign":
                key = target.other_key
            if plan["event"] is not None:
                body["event"] = plan["event"]
            occurred = _time(plan["time"], decided_at)
            if occurred is not None:
                body["occurred_at"] = occurred
            if plan["value"] is not None:
                body["value"] = plan["value"]
            body["idempotency_key"] = plan["key"]
            earlier = model.sent[decided["decision_id"]]
            if plan["repeat"] and earlier and plan["aim"] == "own":
                body = dict(earlier[-1])
            outcome.body = body
        else:
            plan = {**plan, "aim": "generated"}
        response = _send(outcome, target, tally, headers={"X-API-Key": key})
        if steered and plan["aim"] != "generated":
            _judge(outcome.body, plan, response, key == target.key)

    def _judge(body: dict[str, Any], plan: dict[str, Any], response: Response, own: bool) -> None:
        status = response.status_code
        answer = _problem_body(response) or {}
        label = f"{plan} -> {status} {answer}"
        try:
            fingerprint = _fingerprint(body)
        except (ValueError, TypeError):
            return  # a generated time Python reads differently from msgspec: no prediction
        if fingerprint[3].tzinfo is None:
            expect(status == 422 and answer.get("field") == "occurred_at", label)
            return
        stored = model.by_key.get(body["idempotency_key"]) if own else None
        if stored is not None:
            if stored.fingerprint == fingerprint:
                model.replays += 1
                expect(status == 200 and answer.get("replayed") is True, label)
                expect(answer.get("outcome_id") == stored.outcome_id, label)
            else:
                model.reused_keys += 1
                expect(status == 422 and answer.get("field") == "idempotency_key", label)
            return
        if not own:
            model.foreign += 1
            expect(status == 404 and answer.get("field") == "decision_id", label)
            return
        if body["event"] not in ACCEPTED_EVENTS:
            expect(status == 422 and answer.get("field") == "event", label)
            return
        if plan["time"] in ("before", "future"):
            model.out_of_bounds += 1
            expect(status == 422 and answer.get("field") == "occurred_at", label)
            return
        if plan["time"] != "generated":  # a generated time may fall on either side
            expect(status == 201, label)
        if status == 201:
            model.outcomes_created += 1
            model.by_key[body["idempotency_key"]] = Stored(answer["outcome_id"], fingerprint)
            model.sent[body["decision_id"]].append(body)
            expect(answer["decision_id"] == body["decision_id"], label)
            expect(answer["late"] is False and answer["replayed"] is False, label)
            expect(answer["value"] == fingerprint[2], label)

    run()

    print(tally.summary("decide -> outcome requests"))
    print(
        f"  decisions {model.decisions}, outcomes stored {model.outcomes_created}, replays "
        f"{model.replays}, reused keys {model.reused_keys}, another app's {model.foreign}, "
        f"out of bounds {model.out_of_bounds}"
    )
    record_property("fuzz_requests", tally.requests)
    # Every branch of the outcome rules was reached.
    assert model.decisions >= LINK_EXAMPLES // 2
    assert min(model.outcomes_created, model.replays, model.reused_keys) > 0, model
    assert min(model.foreign, model.out_of_bounds) > 0, model
    assert not problems, "\n".join(problems[:20])
    assert not tally.failures, tally.report()


# --- every operation (last: it may pause or stop the demo experiment) -----------------


def test_every_operation_with_generated_requests(
    target: Target, record_property: Callable[[str, object], None]
) -> None:
    tally = Tally()
    operations = _operations(target)
    labels = {operation.label for operation in operations}
    assert "POST /v1/decisions" in labels
    assert not any(label.split(" ")[1].startswith(("/ui", "/v1/simulation")) for label in labels)

    for operation in operations:
        _fuzz_operation(operation, GenerationMode.POSITIVE, target, tally)
        if _negatable(operation):
            _fuzz_operation(operation, GenerationMode.NEGATIVE, target, tally)

    wrong_status: list[str] = []
    for operation in operations:
        for name, case, key in _edge_requests(operation, target):
            headers = {"X-API-Key": key} if key else None
            response = _send(case, target, tally, headers=headers)
            if response.status_code != EDGE_STATUSES[name]:
                wrong_status.append(f"{operation.label} with {name}: {response.status_code}")

    print(tally.summary("generated and hand-made requests"))
    record_property("fuzz_requests", tally.requests)
    record_property("fuzz_statuses", dict(Counter(s for (_, s) in tally.statuses.elements())))
    assert tally.requests >= len(operations) * MAX_EXAMPLES
    ok = sum(n for (_, status), n in tally.statuses.items() if 200 <= status < 300)
    assert ok >= len(operations), "too few requests reached a success path"
    assert not wrong_status, wrong_status
    assert not tally.failures, tally.report()
