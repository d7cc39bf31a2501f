"""Limits over HTTP: per-key rate limits shared by workers (429 with Retry-After), and the
size and range limits of every JSON body (422 naming the field, 413 over the body limit)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import msgspec
import msgspec.inspect as mi
import pytest
from litestar import Litestar
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.testing import TestClient

from bandit_platform.api import schemas
from bandit_platform.api.app import create_app
from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.config import MAX_CONTEXT_FIELDS
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from tests.api.test_http import DECISION, assert_problem, check_table, count
from tests.conftest import Demo, FakeClock

Client = TestClient[Litestar]
DEFAULT_LIMIT = 6
EXPERIMENT = f"/v1/experiments/{DEMO_EXPERIMENT_KEY}"


# --- rate limits -------------------------------------------------------------------------------


@dataclasses.dataclass
class Workers:
    """Two apps (as two worker processes) on one database and one clock."""

    clients: list[Client]
    keys: ApiKeyService


@pytest.fixture
def workers(settings: Settings, clock: FakeClock) -> Iterator[Workers]:
    limited = dataclasses.replace(settings, rate_limit_per_second=DEFAULT_LIMIT)
    platforms = [Platform(limited, clock=clock) for _ in range(2)]
    apps = [create_app(limited, platform) for platform in platforms]
    try:
        with (
            TestClient(app=apps[0], raise_server_exceptions=False) as first,
            TestClient(app=apps[1], raise_server_exceptions=False) as second,
        ):
            yield Workers([first, second], ApiKeyService(platforms[0]))
    finally:
        for platform in platforms:
            platform.close()


def _statuses(workers: Workers, secret: str | None, n: int) -> list[int]:
    headers = {"X-API-Key": secret} if secret else {}
    return [
        workers.clients[i % 2].get("/v1/experiments", headers=headers).status_code for i in range(n)
    ]


def test_the_limit_holds_across_two_workers_and_the_next_window_works_again(
    workers: Workers, clock: FakeClock
) -> None:
    secret = workers.keys.create("app").secret

    statuses = _statuses(workers, secret, 4 * DEFAULT_LIMIT)

    assert statuses.count(200) == DEFAULT_LIMIT
    assert statuses.count(429) == 3 * DEFAULT_LIMIT
    refused = workers.clients[0].get("/v1/experiments", headers={"X-API-Key": secret})
    assert_problem(refused, 429, "X-API-Key")
    assert refused.headers["retry-after"] == "1"
    assert str(DEFAULT_LIMIT) in refused.json()["detail"]

    clock.advance(seconds=1)
    assert _statuses(workers, secret, 2 * DEFAULT_LIMIT).count(200) == DEFAULT_LIMIT


def test_a_keys_own_limit_overrides_the_default_and_zero_turns_it_off(
    workers: Workers,
) -> None:
    generous = workers.keys.create("generous", rate_limit_per_second=2 * DEFAULT_LIMIT).secret
    stingy = workers.keys.create("stingy", rate_limit_per_second=1).secret
    unlimited = workers.keys.create("unlimited", rate_limit_per_second=0).secret

    assert _statuses(workers, generous, 5 * DEFAULT_LIMIT).count(200) == 2 * DEFAULT_LIMIT
    assert _statuses(workers, stingy, 5).count(200) == 1
    assert set(_statuses(workers, unlimited, 10 * DEFAULT_LIMIT)) == {200}


def test_the_server_default_of_zero_turns_limits_off(settings: Settings, demo: Demo) -> None:
    off = dataclasses.replace(settings, rate_limit_per_second=0)
    windows = count(demo.platform, "rate_limit_windows")
    with TestClient(app=create_app(off, demo.platform)) as client:
        client.headers["X-API-Key"] = demo.api_key
        assert {client.get("/v1/experiments").status_code for _ in range(50)} == {200}
    assert count(demo.platform, "rate_limit_windows") == windows  # not even a claim


def test_unauthenticated_requests_do_not_count_against_a_key(workers: Workers) -> None:
    secret = workers.keys.create("app").secret
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    for presented in (None, forged, "bpk_000000000000_unknown", "x" * 5000):
        assert set(_statuses(workers, presented, 3 * DEFAULT_LIMIT)) == {401}
    # Another app's traffic does not spend this key's budget either.
    other = workers.keys.create("other").secret
    assert _statuses(workers, other, 3 * DEFAULT_LIMIT).count(200) == DEFAULT_LIMIT

    assert _statuses(workers, secret, 2 * DEFAULT_LIMIT).count(200) == DEFAULT_LIMIT


def test_requests_refused_for_their_scope_count_against_the_key(workers: Workers) -> None:
    secret = workers.keys.create("reader-only").secret  # decide, outcome, read: no manage
    statuses = [
        workers.clients[i % 2]
        .post(f"{EXPERIMENT}/status", json={"status": "paused"}, headers={"X-API-Key": secret})
        .status_code
        for i in range(2 * DEFAULT_LIMIT)
    ]
    assert statuses.count(403) == DEFAULT_LIMIT
    assert statuses.count(429) == DEFAULT_LIMIT


# --- body limits -------------------------------------------------------------------------------

Send = Callable[[Client], Any]


def _post(path: str, body: Any) -> Send:
    return lambda client: client.post(path, json=body)


def _decision(**changes: Any) -> dict[str, Any]:
    return {**DECISION, **changes}


def _sections(per_section: int) -> dict[str, Any]:
    return {
        section: {f"f{i}": 1 for i in range(per_section)}
        for section in ("profile", "cash_flow", "behavior", "trigger")
    }


#: Every limit of every JSON body: the request and the field its 422 must name.
BAD_BODIES: dict[str, tuple[Send, int, str]] = {
    "experiment key too long": (
        _post("/v1/decisions", _decision(experiment="e" * 64)),
        422,
        "experiment",
    ),
    "customer_id too long": (
        _post("/v1/decisions", _decision(customer_id="c" * 129)),
        422,
        "customer_id",
    ),
    "surface too long": (_post("/v1/decisions", _decision(surface="s" * 64)), 422, "surface"),
    "request_id empty": (_post("/v1/decisions", _decision(request_id="")), 422, "request_id"),
    "context field name too long": (
        _post("/v1/decisions", _decision(context={"profile": {"n" * 64: 1}})),
        422,
        "context.profile",
    ),
    "a context section over 100 fields": (
        _post("/v1/decisions", _decision(context={"trigger": {f"f{i}": 1 for i in range(101)}})),
        422,
        "context.trigger",
    ),
    "context over the field count in all": (
        _post("/v1/decisions", _decision(context=_sections(MAX_CONTEXT_FIELDS // 4 + 1))),
        422,
        "context",
    ),
    "outcome event too long": (
        _post(
            "/v1/outcomes",
            {
                "decision_id": "d",
                "event": "e" * 64,
                "occurred_at": "2026-11-02T09:00:00Z",
                "idempotency_key": "k",
            },
        ),
        422,
        "event",
    ),
    "outcome value too small": (
        _post(
            "/v1/outcomes",
            {
                "decision_id": "d",
                "event": "click",
                "occurred_at": "2026-11-02T09:00:00Z",
                "idempotency_key": "k",
                "value": -1e13,
            },
        ),
        422,
        "value",
    ),
    "unknown status": (_post(f"{EXPERIMENT}/status", {"status": "approved"}), 422, "status"),
    "rollback to version 0": (
        _post(f"{EXPERIMENT}/models/rollback", {"version": 0}),
        422,
        "version",
    ),
    "rollback beyond 32 bits": (
        _post(f"{EXPERIMENT}/models/rollback", {"version": 2**31}),
        422,
        "version",
    ),
    "empty guardrail comment": (
        _post(f"{EXPERIMENT}/guardrails/clear", {"comment": ""}),
        422,
        "comment",
    ),
    "guardrail comment too long": (
        _post(f"{EXPERIMENT}/guardrails/clear", {"comment": "c" * 501}),
        422,
        "comment",
    ),
    "no fairness rows": (_post(f"{EXPERIMENT}/report/fairness", {"rows": []}), 422, "rows"),
    "fairness row with too many columns": (
        _post(f"{EXPERIMENT}/report/fairness", {"rows": [{f"a{i}": "x" for i in range(22)}]}),
        422,
        "rows[0]",
    ),
    "fairness attribute name too long": (
        _post(f"{EXPERIMENT}/report/fairness", {"rows": [{"a" * 64: "x"}]}),
        422,
        "rows[0]",
    ),
    "fairness horizon too long": (
        _post(
            f"{EXPERIMENT}/report/fairness", {"rows": [{"customer_id": "c"}], "horizon": "h" * 64}
        ),
        422,
        "horizon",
    ),
    "candidate epsilon above 1": (
        _post(f"{EXPERIMENT}/candidates", {"epsilon": 1.5}),
        422,
        "epsilon",
    ),
    "candidate holdout of all": (
        _post(f"{EXPERIMENT}/candidates", {"holdout_fraction": 1.0}),
        422,
        "holdout_fraction",
    ),
    "candidate confidence too low": (
        _post(f"{EXPERIMENT}/candidates", {"confidence": 0.4}),
        422,
        "confidence",
    ),
    "candidate explorer out of range": (
        _post(f"{EXPERIMENT}/candidates", {"explorer": {"kind": "epsilon_greedy", "epsilon": 5}}),
        422,
        "explorer.epsilon",
    ),
}


def test_every_body_limit_is_a_422_naming_the_field(client: Client, demo: Demo) -> None:
    check_table(
        {name: (status, field) for name, (_, status, field) in BAD_BODIES.items()},
        lambda name: BAD_BODIES[name][0](client),
        lambda: (count(demo.platform, "decisions"), count(demo.platform, "audit_log")),
    )


def _json_bodies(app: Litestar) -> list[tuple[str, str, HTTPRouteHandler]]:
    found = []
    for route in app.routes:
        if not isinstance(route, HTTPRoute) or not route.path.startswith("/v1"):
            continue
        for handler in route.route_handlers:
            for method in handler.http_methods & {"POST", "PUT", "PATCH"}:
                if "data" in handler.parsed_fn_signature.parameters:
                    found.append((method, route.path, handler))
    return found


def test_bodies_over_their_limit_are_refused_with_413(client: Client, settings: Settings) -> None:
    routes = _json_bodies(client.app)
    assert len(routes) >= 8
    failures = []
    for method, path, handler in routes:
        limit = handler.resolve_request_max_body_size()
        assert limit is not None, path
        assert limit <= 16 * 1024 * 1024, path  # the fairness audit's file, the largest
        oversized = b'{"padding": "' + b"x" * limit + b'"}'
        concrete = path.replace("{key:str}", DEMO_EXPERIMENT_KEY)
        response = client.request(
            method, concrete, content=oversized, headers={"Content-Type": "application/json"}
        )
        if response.status_code != 413 or response.json().get("field") != "body":
            failures.append(f"{method} {path}: {response.status_code}")
    assert not failures, "\n".join(failures)


#: Values the decision service checks instead, so that the error names the field (msgspec
#: would report a value inside a dict as `[...]`): context texts and lists by length, numbers
#: against the allow-list's ranges.
CHECKED_BY_THE_SERVICE = ("DecisionRequestBody.context.", "DecisionContext.")


def _unbounded(t: mi.Type, path: str, seen: set[type], out: list[str]) -> None:
    if isinstance(t, mi.StructType):
        if t.cls in seen:
            return
        seen.add(t.cls)
        for field in t.fields:
            _unbounded(field.type, f"{path}.{field.name}", seen, out)
    elif isinstance(t, mi.UnionType):
        for member in t.types:
            _unbounded(member, path, seen, out)
    elif isinstance(t, mi.ListType | mi.SetType | mi.FrozenSetType | mi.VarTupleType):
        if t.max_length is None:
            out.append(f"{path}: a list without max_length")
        _unbounded(t.item_type, f"{path}[]", seen, out)
    elif isinstance(t, mi.DictType):
        if t.max_length is None:
            out.append(f"{path}: an object without a field count limit")
        _unbounded(t.key_type, f"{path}{{key}}", seen, out)
        _unbounded(t.value_type, f"{path}{{}}", seen, out)
    elif isinstance(t, mi.StrType) and t.max_length is None:
        out.append(f"{path}: a string without max_length")
    elif isinstance(t, mi.IntType | mi.FloatType) and (
        (t.le is None and t.lt is None) or (t.ge is None and t.gt is None)
    ):
        out.append(f"{path}: a number without bounds")


def test_every_request_body_schema_bounds_its_strings_lists_objects_and_numbers() -> None:
    bodies = [
        cls
        for cls in vars(schemas).values()
        if isinstance(cls, type) and issubclass(cls, schemas._Body) and cls is not schemas._Body
    ]
    assert len(bodies) >= 8
    unbounded: list[str] = []
    for cls in bodies:
        _unbounded(mi.type_info(cls), cls.__name__, set(), unbounded)
    unbounded = [u for u in unbounded if not u.startswith(CHECKED_BY_THE_SERVICE)]
    assert unbounded == []
    # The context's own limits: per section and in all.
    section = mi.type_info(schemas.Section)
    assert isinstance(section, mi.DictType)
    assert section.max_length == schemas.MAX_SECTION_FIELDS
    with pytest.raises(msgspec.ValidationError, match=r"\$\.context"):
        msgspec.json.decode(
            msgspec.json.encode(_decision(context=_sections(MAX_CONTEXT_FIELDS // 4 + 1))),
            type=schemas.DecisionRequestBody,
        )
