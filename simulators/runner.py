"""Run a platform policy against the simulated world, in-process or over HTTP.

The runner plays the bank: for every visit of the world, in time order, it asks the
platform for a decision, draws the customer's response from the ground-truth model, reports
each event as an outcome when simulated time reaches it, and lets the learner close rewards
and learn every `learn_every_hours` of simulated time. The platform runs on its own SQLite
file with a simulated clock and seeded decision ids, so a run reproduces bit-for-bit from its
seed.

The loop talks to the platform through a `PlatformPort` (set the time, decide, record an
outcome, learn), with two transports (`SimulationConfig.transport`):

- `in_process` (default): `DecisionService`, `OutcomeService` and `Learner` called directly,
  the clock injected into the `Platform`. Research baselines (a `bandit_policy` of the
  decision service) run only here.
- `http`: the run's database is prepared in-process as above (migrated, experiment created
  with the seeded salt and started, an API key with the decide, outcome and manage scopes),
  then `bandit-platform serve` starts as a subprocess on a free local port in simulation mode
  (`BANDIT_SIMULATION_SEED`, `BANDIT_SIMULATION_START`, `BANDIT_LEARNER=off`, the same
  pseudonym key and model refresh as in-process), and the loop goes through the public API:
  `PUT /v1/simulation/clock` whenever simulated time moves, `POST /v1/decisions`,
  `POST /v1/outcomes` and `POST /v1/simulation/learn`. The server is stopped when the loop
  ends (or fails; its log is `server.log`), then the export and truth are written from the
  database file exactly as in-process. For the same config and seed both transports log the
  same decisions (ids, arms, propensities, model versions) and the same truth.

Beside the platform's own decision log (exported as Parquet and dsjson), it records the truth
for every decision: the exact expected reward of the arm shown, of the policy's whole
probability vector, and of the best eligible arm (the oracle), hence the regret; and, for
true lifts, what the holdout (no offer: `holdout_expected_reward`) and the uniform A-B arm
(`ab_expected_reward`) would have had in the same situation.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import socket
import subprocess
import sys
import time
import tomllib
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import IO, Annotated, Any, Literal, Protocol

import httpx
import msgspec
import numpy as np
import polars as pl

from bandit_platform.api.schemas import DecisionResponseBody
from bandit_platform.demo import demo_config
from bandit_platform.domain.access import AppIdentity, Scope
from bandit_platform.domain.config import (
    NO_OFFER,
    CompiledExperiment,
    ExperimentConfig,
    RewardHorizon,
    TrafficSplit,
    config_from_builtins,
    validate_config,
)
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.decisions import DecisionRequest, DecisionService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.export import export_log
from bandit_platform.service.learner import Learner
from bandit_platform.service.outcomes import OutcomeRequest, OutcomeService
from bandit_platform.service.platform import Platform
from bandit_platform.service.simulation import seeded_ids
from bandit_platform.settings import Settings
from bandit_platform.storage.database import upgrade
from simulators.baselines import (
    DEFAULT_ALPHA,
    DEFAULT_DRAWS,
    DEFAULT_RIDGE,
    DEFAULT_V,
    Baseline,
    LinearThompson,
    LinUCB,
    Oracle,
)
from simulators.response import Situation, expected_reward, sample_outcomes
from simulators.truth import ab_uniform_distribution, eligible_arm_keys
from simulators.world import World

PolicyKind = Literal["bandit", "uniform", "incumbent", "linucb", "thompson", "oracle"]
Transport = Literal["in_process", "http"]
#: The policies a server runs by itself; other kinds (research baselines) run only in-process.
HTTP_POLICIES: frozenset[str] = frozenset({"bandit", "uniform", "incumbent"})


class PolicySpec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Which platform policy serves the simulated customers.

    `bandit`: the VW bandit with `explorer` (any explorer of the experiment schema);
    `uniform`: the A-B arm, uniform over eligible offers; `incumbent`: the A-B arm with the
    demo's incumbent rules. Research baselines (`simulators.baselines`, in-process only) serve
    the whole bandit group through the platform's decision path: `linucb` (disjoint LinUCB,
    `alpha`, `ridge`), `thompson` (linear Thompson sampling, `v`, `ridge`, `draws`, seeded
    from the run's seed) and `oracle` (the ground truth's best arm). A parameter left out
    takes the baseline's default; one given for a kind that does not use it is an error.
    """

    kind: PolicyKind = "bandit"
    explorer: dict[str, Any] = msgspec.field(
        default_factory=lambda: {"kind": "epsilon_greedy", "epsilon": 0.1}
    )
    #: LinUCB's exploration weight (>= 0).
    alpha: Annotated[float, msgspec.Meta(ge=0.0)] | None = None
    #: Thompson sampling's posterior scale (> 0): theta ~ N(theta_hat, v^2 A^-1).
    v: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    #: Ridge penalty of LinUCB and Thompson sampling (> 0).
    ridge: Annotated[float, msgspec.Meta(gt=0.0)] | None = None
    #: Posterior draws behind Thompson sampling's propensities (>= 1).
    draws: Annotated[int, msgspec.Meta(ge=1)] | None = None

    def __post_init__(self) -> None:
        # Decoding checks the bounds above with the field's path; this also checks direct
        # construction, finiteness, and parameters given to a kind that ignores them.
        uses = _PARAMETERS[self.kind]
        for name, low, strict in (
            ("alpha", 0.0, False),
            ("v", 0.0, True),
            ("ridge", 0.0, True),
            ("draws", 1, False),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if name not in uses:
                kinds = sorted(k for k, names in _PARAMETERS.items() if name in names)
                raise ValueError(
                    f"`{name}` applies only to kind {' or '.join(map(repr, kinds))}, "
                    f"not {self.kind!r}"
                )
            if not math.isfinite(value) or value < low or (strict and value == low):
                bound = f"> {low}" if strict else f">= {low}"
                raise ValueError(f"`{name}` must be a finite number {bound} (got {value!r})")

    def parameters(self) -> dict[str, float]:
        """The parameters the kind uses, with the baseline's defaults for those left out."""
        defaults: dict[str, float] = {
            "alpha": DEFAULT_ALPHA,
            "v": DEFAULT_V,
            "ridge": DEFAULT_RIDGE,
            "draws": DEFAULT_DRAWS,
        }
        return {
            name: defaults[name] if getattr(self, name) is None else getattr(self, name)
            for name in sorted(_PARAMETERS[self.kind])
        }

    def described(self) -> dict[str, Any]:
        """The specification as run (JSON-ready): parameters the kind does not use left out,
        defaults filled in."""
        document: dict[str, Any] = {"kind": self.kind, "explorer": dict(self.explorer)}
        return document | self.parameters()


#: The parameters of `PolicySpec` each kind uses.
_PARAMETERS: dict[str, frozenset[str]] = {
    "bandit": frozenset(),
    "uniform": frozenset(),
    "incumbent": frozenset(),
    "linucb": frozenset({"alpha", "ridge"}),
    "thompson": frozenset({"v", "ridge", "draws"}),
    "oracle": frozenset(),
}


def baseline_for(config: SimulationConfig, horizon: RewardHorizon) -> Baseline | None:
    """The research baseline of the run's policy (None for the platform's own policies)."""
    policy = config.policy
    parameters = policy.parameters()
    if policy.kind == "linucb":
        return LinUCB(alpha=parameters["alpha"], ridge=parameters["ridge"])
    if policy.kind == "thompson":
        return LinearThompson(
            v=parameters["v"],
            ridge=parameters["ridge"],
            draws=int(parameters["draws"]),
            seed=config.seed,
        )
    if policy.kind == "oracle":
        return Oracle(horizon)
    return None


class SimulationConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One simulation run (a TOML file in `experiments/`)."""

    name: str
    seed: int = 1
    customers: int = 5000
    days: int = 30
    max_decisions: int | None = None
    learn_every_hours: float = 1.0
    publish_every_examples: int = 200
    policy: PolicySpec = msgspec.field(default_factory=PolicySpec)
    transport: Transport = "in_process"
    #: Holdout / A-B / bandit percentages; None puts everyone in the policy's group. With a
    #: split, the A-B group is uniform (`simulators.truth.ab_uniform_distribution`) unless
    #: the policy is `incumbent`.
    traffic: TrafficSplit | None = None
    #: Multiplies the world's drift of customer needs (0: no drift; see `World`).
    drift_scale: Annotated[float, msgspec.Meta(ge=0.0)] = 1.0

    @classmethod
    def from_toml(cls, path: Path) -> SimulationConfig:
        """Read and validate a TOML run file."""
        return msgspec.convert(tomllib.loads(path.read_text()), cls)


@dataclass
class SimulationResult:
    """What a run produced."""

    config: SimulationConfig
    directory: Path
    decisions: int
    outcomes: int
    policy_value: float
    oracle_value: float
    realised_reward: float
    truth: pl.DataFrame = field(repr=False)

    @property
    def regret(self) -> float:
        """Cumulative expected regret against the oracle."""
        return float(self.truth["regret"].sum())

    def summary(self) -> dict[str, Any]:
        """The run's headline numbers (JSON-ready)."""
        return {
            "name": self.config.name,
            "seed": self.config.seed,
            "policy": self.config.policy.described(),
            "transport": self.config.transport,
            "decisions": self.decisions,
            "outcomes": self.outcomes,
            "true_policy_value_per_decision": self.policy_value,
            "oracle_value_per_decision": self.oracle_value,
            "realised_reward_per_decision": self.realised_reward,
            "cumulative_regret": self.regret,
        }


class SimulatedClock:
    """The platform's clock during a run: set by the runner, never by the wall."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> datetime:
        """The time `seconds` after the start of day 0."""
        return self.start + timedelta(seconds=seconds)


def experiment_for(config: SimulationConfig) -> ExperimentConfig:
    """The demo experiment, with every customer in the group that runs the chosen policy."""
    document = msgspec.to_builtins(demo_config())
    document["key"] = f"sim-{config.name}"[:63]
    document["name"] = f"Simulation {config.name}"[:120]
    split = {"uniform": (0, 100, 0), "incumbent": (0, 100, 0)}  # the others: all bandit
    holdout, ab, bandit = split.get(config.policy.kind, (0, 0, 100))
    traffic = config.traffic or TrafficSplit(holdout=holdout, ab=ab, bandit=bandit)
    document["traffic"] = msgspec.to_builtins(traffic)
    if config.policy.kind == "uniform" or (
        config.traffic is not None and config.policy.kind != "incumbent"
    ):
        document["ab_arm"] = {"kind": "uniform"}
    document["explorer"] = dict(config.policy.explorer)
    document.setdefault("learning", {})
    document["learning"]["publish_every_examples"] = config.publish_every_examples
    # The deadline is measured on the wall clock: a busy machine must not turn a prediction
    # into a fallback, or the run would not reproduce.
    document["learning"]["model_deadline_ms"] = 10_000.0
    return config_from_builtins(document)


@dataclass(frozen=True)
class Answer:
    """A decision as the runner sees it, whatever the transport.

    `probabilities` are per arm (`offer/variant` or `no_offer`) over the eligible arms, in
    the logged order; `eligible` lists those arms.
    """

    decision_id: str
    offer: str | None
    variant: str | None
    group: str
    reason: str
    propensity: float
    probabilities: dict[str, float]
    eligible: list[str]
    model_version: int | None


class PlatformPort(Protocol):
    """How the runner reaches the platform: in-process or over HTTP."""

    def set_time(self, now: datetime) -> None:
        """Move the platform's clock to `now` (never backwards)."""
        ...

    def decide(self, request: DecisionRequest) -> Answer:
        """Ask for a decision."""
        ...

    def record(self, outcome: OutcomeRequest) -> None:
        """Report an outcome."""
        ...

    def learn(self) -> None:
        """Run one learner pass (close rewards, learn, publish when due)."""
        ...


class InProcessPort:
    """The platform's services called directly, on the run's simulated clock."""

    def __init__(
        self,
        platform: Platform,
        clock: SimulatedClock,
        app: AppIdentity,
        decisions: DecisionService | None = None,
    ) -> None:
        self.clock = clock
        self.app = app
        self.decisions = decisions or DecisionService(platform)
        self.outcomes = OutcomeService(platform)
        self.learner = Learner(platform)

    def set_time(self, now: datetime) -> None:
        self.clock.now = now

    def decide(self, request: DecisionRequest) -> Answer:
        decision = self.decisions.decide(request, self.app)
        return Answer(
            decision_id=decision.decision_id,
            offer=decision.offer,
            variant=decision.variant,
            group=decision.group.value,
            reason=decision.reason.value,
            propensity=decision.propensity,
            probabilities=decision.probabilities,
            eligible=decision.eligible,
            model_version=decision.model_version,
        )

    def record(self, outcome: OutcomeRequest) -> None:
        self.outcomes.record(outcome, self.app)

    def learn(self) -> None:
        self.learner.run_once()


class BaselinePort(InProcessPort):
    """In-process, with a research baseline serving the bandit group: after each learner
    pass (which closes the rewards) the baseline learns the newly closed ones."""

    def __init__(
        self,
        platform: Platform,
        clock: SimulatedClock,
        app: AppIdentity,
        baseline: Baseline,
        experiment_key: str,
    ) -> None:
        super().__init__(platform, clock, app, DecisionService(platform, bandit_policy=baseline))
        self.platform = platform
        self.baseline = baseline
        self.experiment_key = experiment_key

    def learn(self) -> None:
        super().learn()
        self.baseline.learn(self.platform, self.experiment_key)


class TransportError(RuntimeError):
    """The server refused a request of the HTTP transport, or could not be run."""


class HttpPort:
    """The platform behind its JSON API: a server in simulation mode (`/v1/simulation`).

    The clock endpoint is called only when the simulated time changes.
    """

    def __init__(self, base_url: str, api_key: str, *, timeout: float = 60.0) -> None:
        self.client = httpx.Client(
            base_url=base_url,
            headers={"X-API-Key": api_key, "Content-Type": "application/json"},
            timeout=timeout,
        )
        self._now: datetime | None = None

    def __enter__(self) -> HttpPort:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.client.close()

    def _call(self, method: str, path: str, body: object = None) -> bytes:
        content = None if body is None else msgspec.json.encode(body)
        response = self.client.request(method, path, content=content)
        if response.is_error:
            raise TransportError(
                f"{method} {path} answered {response.status_code}: {response.text[:500]}"
            )
        return response.content

    def set_time(self, now: datetime) -> None:
        if now != self._now:
            self._call("PUT", "/v1/simulation/clock", {"now": now})
            self._now = now

    def decide(self, request: DecisionRequest) -> Answer:
        body: dict[str, Any] = {
            "experiment": request.experiment,
            "customer_id": request.customer_id,
            "context": {section: dict(fields) for section, fields in request.context.items()},
            "surface": request.surface,
            "consent": request.consent,
        }
        if request.request_id is not None:
            body["request_id"] = request.request_id
        if request.requested_at is not None:
            body["requested_at"] = request.requested_at
        answer = msgspec.json.decode(
            self._call("POST", "/v1/decisions", body), type=DecisionResponseBody
        )
        return Answer(
            decision_id=answer.decision_id,
            offer=answer.offer,
            variant=answer.variant,
            group=answer.group,
            reason=answer.reason,
            propensity=answer.propensity,
            probabilities=answer.arm_probabilities,
            # The logged eligible arms are exactly the keys of the arm probabilities.
            eligible=list(answer.arm_probabilities),
            model_version=answer.model_version,
        )

    def record(self, outcome: OutcomeRequest) -> None:
        self._call(
            "POST",
            "/v1/outcomes",
            {
                "decision_id": outcome.decision_id,
                "event": outcome.event,
                "value": outcome.value,
                "occurred_at": outcome.occurred_at,
                "idempotency_key": outcome.idempotency_key,
            },
        )

    def learn(self) -> None:
        self._call("POST", "/v1/simulation/learn")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _refresh_variable(seconds: float | None) -> str:
    return "none" if seconds is None else repr(seconds)


class SimulationServer:
    """`bandit-platform serve` in simulation mode on a free local port, for one run.

    Use it as a context manager: it is ready on entry and stopped on exit, also on errors.
    """

    def __init__(
        self,
        settings: Settings,
        seed: int,
        start: datetime,
        log: Path,
        *,
        ready_timeout: float = 60.0,
    ) -> None:
        self.settings = settings
        self.seed = seed
        self.start = start
        self.log = log
        self.ready_timeout = ready_timeout
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._handle: IO[bytes] | None = None

    def environment(self) -> dict[str, str]:
        """The server's environment: this one without `BANDIT_*` settings, plus the run's."""
        env = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("BANDIT_") and name != "DATABASE_URL"
        }
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        env.update(
            {
                "DATABASE_URL": self.settings.database_url,
                "BANDIT_PSEUDONYM_KEY": self.settings.pseudonym_key.decode(),
                "BANDIT_SIMULATION_SEED": str(self.seed),
                "BANDIT_SIMULATION_START": self.start.isoformat(),
                "BANDIT_LEARNER": "off",
                "BANDIT_MODEL_REFRESH_SECONDS": _refresh_variable(
                    self.settings.model_refresh_seconds
                ),
            }
        )
        return env

    def __enter__(self) -> SimulationServer:
        self._handle = self.log.open("wb")
        try:
            for _ in range(3):
                port = _free_port()
                self.url = f"http://127.0.0.1:{port}"
                command = [
                    sys.executable,
                    "-m",
                    "bandit_platform.cli",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--no-migrate",
                ]
                # The command is fixed; only the port number varies.
                self._process = subprocess.Popen(  # noqa: S603
                    command, env=self.environment(), stdout=self._handle, stderr=subprocess.STDOUT
                )
                if self._wait_ready(self._process):
                    return self
                self._process = None
                if "address already in use" not in self._log_tail().lower():
                    break
            raise TransportError(f"the simulation server did not start:\n{self._log_tail()}")
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def _wait_ready(self, process: subprocess.Popen[bytes]) -> bool:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return False
            try:
                if httpx.get(f"{self.url}/health/ready", timeout=1.0).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise TransportError(
            f"the simulation server was not ready within {self.ready_timeout:g} s:\n"
            f"{self._log_tail()}"
        )

    def _log_tail(self) -> str:
        if self._handle is not None:
            self._handle.flush()
        return self.log.read_text(errors="replace")[-4000:]

    def __exit__(
        self,
        kind: type[BaseException] | None = None,
        error: BaseException | None = None,
        traceback: TracebackType | None = None,
    ) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._handle is not None:
            self._handle.close()
            self._handle = None


def run_simulation(
    config: SimulationConfig,
    directory: Path,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Run `config` and write its logs and truth into `directory` (replacing a previous run).

    Writes `simulation.db` (the platform's database), `<experiment>.parquet` and `.dsjson`
    (the platform's export), `truth.parquet` (per decision: expected reward of the arm shown,
    of the policy, of the oracle; regret) and `summary.json`; with the HTTP transport also
    `server.log`.

    Raises:
        ValueError: the HTTP transport with a policy that runs only in-process.
        TransportError: the HTTP transport's server did not start or refused a request.
    """
    if config.transport == "http" and config.policy.kind not in HTTP_POLICIES:
        raise ValueError(
            f"policy {config.policy.kind!r} runs only in-process (a server serves only "
            f'{sorted(HTTP_POLICIES)}); use transport = "in_process"'
        )
    directory.mkdir(parents=True, exist_ok=True)
    # Absolute: the HTTP transport's server process opens the same file.
    database = (directory / "simulation.db").resolve()
    for stale in directory.glob("simulation.db*"):
        stale.unlink()
    url = f"sqlite:///{database}"
    upgrade(url)

    world = World(config.customers, config.seed, config.days, drift_scale=config.drift_scale)
    start = datetime(world.start.year, world.start.month, world.start.day, tzinfo=UTC)
    clock = SimulatedClock(start)
    settings = Settings(
        database_url=url,
        pseudonym_key=f"simulation-{config.seed:016d}".encode(),
        durable=False,
        model_refresh_seconds=None,
    )
    platform = Platform(settings, clock=clock, new_id=seeded_ids(config.seed))
    try:
        return _run(config, directory, world, clock, platform, progress)
    finally:
        platform.close()


def _run(
    config: SimulationConfig,
    directory: Path,
    world: World,
    clock: SimulatedClock,
    platform: Platform,
    progress: Callable[[int, int], None] | None,
) -> SimulationResult:
    experiment = experiment_for(config)
    experiments = ExperimentService(platform)
    experiments.create(experiment, "simulator", salt=f"{config.seed:032x}")
    # A simulation approves its own synthetic experiment (audited as `simulator`).
    experiments.approve(experiment.key, "simulator", "simulation run")
    experiments.change_status(experiment.key, ExperimentStatus.RUNNING, "simulator")
    # The same key for both transports; the HTTP one needs `manage` for /v1/simulation.
    key = ApiKeyService(platform).create("simulator", {Scope.DECIDE, Scope.OUTCOME, Scope.MANAGE})
    if config.transport == "http":
        # The run's own connections let go of the file while the server writes it.
        platform.engine.dispose()
        log = directory / "server.log"
        with (
            SimulationServer(platform.settings, config.seed, clock.now, log) as server,
            HttpPort(server.url, key.secret) as http,
        ):
            rows, outcomes_posted = play(config, experiment, world, clock, http, progress)
    else:
        baseline = baseline_for(config, experiment.reward.learning_horizon())
        port = (
            InProcessPort(platform, clock, key.identity, DecisionService(platform))
            if baseline is None
            else BaselinePort(platform, clock, key.identity, baseline, experiment.key)
        )
        oracle = baseline if isinstance(baseline, Oracle) else None
        rows, outcomes_posted = play(config, experiment, world, clock, port, progress, oracle)
    return _finish(config, directory, experiment, platform, rows, outcomes_posted)


def play(
    config: SimulationConfig,
    experiment: ExperimentConfig,
    world: World,
    clock: SimulatedClock,
    port: PlatformPort,
    progress: Callable[[int, int], None] | None,
    oracle: Oracle | None = None,
    *,
    until_seconds: float | None = None,
) -> tuple[list[dict[str, Any]], int]:
    """The bank's side of the run: visits, decisions, outcomes and learner passes in time
    order through `port`; returns the truth rows and the number of outcomes posted. An
    `oracle` baseline is shown each visit's situation before the decision.

    After the last visit the remaining events are posted and one more learner pass runs once
    every reward window has closed; with `until_seconds`, the run stops there instead: later
    events are never posted and the last pass runs at that time (the demo's traffic, which
    must not reach past the present)."""
    horizon: RewardHorizon = experiment.reward.learning_horizon()
    compiled = validate_config(experiment)
    rng = np.random.default_rng(config.seed + 1)

    visits = list(world.visits())
    if config.max_decisions is not None:
        visits = visits[: config.max_decisions]
    total = len(visits)
    customers_by_day: dict[int, set[int]] = defaultdict(set)
    for visit in visits:
        customers_by_day[visit.day].add(visit.customer_id)
    pending: list[tuple[float, int, str, str, float]] = []
    sequence = 0
    outcomes_posted = 0
    exposures: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    learn_every = config.learn_every_hours * 3600.0
    next_learn = learn_every
    states: dict[int, Any] = {}
    state_day = -1
    rows: list[dict[str, Any]] = []

    def post_until(seconds: float) -> None:
        nonlocal outcomes_posted
        while pending and pending[0][0] <= seconds:
            at, _, decision_id, event, value = heapq.heappop(pending)
            now = clock.at(at)
            port.set_time(now)
            port.record(
                OutcomeRequest(
                    decision_id=decision_id,
                    event=event,
                    value=value,
                    occurred_at=now,
                    idempotency_key=f"{decision_id}-{outcomes_posted}",
                )
            )
            outcomes_posted += 1

    for index, visit in enumerate(visits):
        seconds = float(visit.time_seconds)
        while next_learn <= seconds:
            post_until(next_learn)
            port.set_time(clock.at(next_learn))
            port.learn()
            next_learn += learn_every
        post_until(seconds)
        port.set_time(clock.at(seconds))
        if visit.day != state_day:
            ids = sorted(customers_by_day[visit.day])
            states = {s.customer_id: s for s in world.customer_states(visit.day, ids)}
            state_day = visit.day
        customer = states[visit.customer_id]
        ages = {
            offer: [(seconds - shown) / 3600.0 for shown in times]
            for offer, times in exposures[visit.customer_id].items()
        }
        situation = world.situation(visit, exposures=ages, customer=customer)
        if oracle is not None:
            oracle.situation = situation
        decision = port.decide(
            DecisionRequest(
                experiment=experiment.key,
                customer_id=f"sim-customer-{visit.customer_id}",
                context=customer.context(visit.trigger),
                surface=visit.surface,
                consent=True,
            )
        )
        chosen = "no_offer" if decision.offer is None else f"{decision.offer}/{decision.variant}"
        values = {arm: expected_reward(situation, arm, horizon) for arm in decision.eligible}
        policy_value = sum(p * values[arm] for arm, p in decision.probabilities.items())
        holdout_value, ab_value = _counterfactual_values(
            situation, decision, values, horizon, compiled
        )
        oracle_value = max(
            _arm_value(values, situation, arm, horizon)
            for arm in _oracle_arms(situation, decision, compiled)
        )
        for event in sample_outcomes(rng, situation, chosen):
            sequence += 1
            heapq.heappush(
                pending,
                (event.time_seconds, sequence, decision.decision_id, event.event, event.value),
            )
        if decision.offer is not None:
            exposures[visit.customer_id][decision.offer].append(seconds)
        rows.append(
            {
                "decision_id": decision.decision_id,
                "time_seconds": seconds,
                "customer_id": visit.customer_id,
                "segment": customer.latent.segment,
                "group": decision.group,
                "reason": decision.reason,
                "arm": chosen,
                "propensity": decision.propensity,
                "expected_reward": values[chosen],
                "policy_expected_reward": policy_value,
                "oracle_expected_reward": oracle_value,
                "regret": oracle_value - policy_value,
                "model_version": decision.model_version,
                "holdout_expected_reward": holdout_value,
                "ab_expected_reward": ab_value,
            }
        )
        if progress is not None:
            progress(index + 1, total)

    # Let every window close: post the remaining events, then close and learn once more.
    end = max((p[0] for p in pending), default=float(visits[-1].time_seconds) if visits else 0.0)
    wait = (horizon.reward_wait_hours or horizon.attribution_window_hours) * 3600.0
    last = end + wait + 3600.0 if until_seconds is None else until_seconds
    post_until(min(end, last))
    port.set_time(clock.at(last))
    port.learn()
    return rows, outcomes_posted


def _arm_value(
    values: dict[str, float], situation: Situation, arm: str, horizon: RewardHorizon
) -> float:
    """The exact expected reward of `arm`, computed once per decision (memoised in `values`)."""
    if arm not in values:
        values[arm] = expected_reward(situation, arm, horizon)
    return values[arm]


#: Reasons whose logged arms are every arm the platform could show (after caps).
_WHOLE_CHOICE_REASONS = frozenset({"bandit", "ab_uniform", "apprentice"})
#: Reasons where nothing but the logged arm could be shown (consent, the customer's cap).
_NO_CHOICE_REASONS = frozenset({"no_consent", "customer_cap", "no_eligible_offer"})


def _oracle_arms(situation: Situation, decision: Answer, compiled: CompiledExperiment) -> list[str]:
    """The arms the oracle picks from: those the platform could have shown in this decision.

    A bandit, uniform A-B or apprentice decision logs every such arm; a single-choice one
    (holdout, an incumbent rule or default, the model fallback) logs only the arm shown, so
    its alternatives come from the eligibility rules: its regret is what the rule or the
    holdout gave up. Consent and caps leave no choice."""
    if decision.reason in _WHOLE_CHOICE_REASONS or decision.reason in _NO_CHOICE_REASONS:
        return list(decision.eligible)
    return sorted({*decision.eligible, *eligible_arm_keys(situation, compiled)})


def _counterfactual_values(
    situation: Situation,
    decision: Answer,
    values: dict[str, float],
    horizon: RewardHorizon,
    compiled: CompiledExperiment,
) -> tuple[float, float]:
    """Exact expected reward the holdout (no offer) and the uniform A-B arm would have had
    in this decision's situation. The A-B arm sees the arms the platform found eligible (after
    caps); a holdout decision lists none, so its arms come from the eligibility rules (a
    holdout customer is never shown anything, hence never capped). `values` is filled in."""

    eligible = (
        eligible_arm_keys(situation, compiled) if decision.group == "holdout" else decision.eligible
    )
    ab = ab_uniform_distribution(eligible) if eligible else {NO_OFFER: 1.0}
    return _arm_value(values, situation, NO_OFFER, horizon), sum(
        p * _arm_value(values, situation, arm, horizon) for arm, p in ab.items()
    )


def _finish(
    config: SimulationConfig,
    directory: Path,
    experiment: ExperimentConfig,
    platform: Platform,
    rows: list[dict[str, Any]],
    outcomes_posted: int,
) -> SimulationResult:
    """Export the platform's log, write the truth and the summary."""
    horizon = experiment.reward.learning_horizon()
    truth = pl.DataFrame(rows)
    export_log(platform, experiment.key, directory)
    ledger = pl.read_parquet(directory / f"{experiment.key}.parquet")
    realised_column = f"reward_{horizon.name}"
    realised_mean = (
        float(ledger.select(pl.col(realised_column).mean()).item() or 0.0) if ledger.height else 0.0
    )
    truth = truth.with_columns(
        pl.col("policy_expected_reward").cum_sum().alias("cumulative_policy_reward"),
        pl.col("oracle_expected_reward").cum_sum().alias("cumulative_oracle_reward"),
        pl.col("regret").cum_sum().alias("cumulative_regret"),
    )
    truth.write_parquet(directory / "truth.parquet")
    n = max(truth.height, 1)
    result = SimulationResult(
        config=config,
        directory=directory,
        decisions=truth.height,
        outcomes=outcomes_posted,
        policy_value=float(truth["policy_expected_reward"].sum()) / n,
        oracle_value=float(truth["oracle_expected_reward"].sum()) / n,
        realised_reward=realised_mean,
        truth=truth,
    )
    (directory / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    return result
