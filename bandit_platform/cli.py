"""`bandit-platform`: serve the API and UI, run the demo, migrate, manage API keys, UI users
and experiments."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa

from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config
from bandit_platform.domain.access import Scope
from bandit_platform.domain.config import decode_config
from bandit_platform.domain.decisions import ExperimentStatus
from bandit_platform.domain.errors import DomainError, NotFound
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.experiments import ExperimentService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from bandit_platform.storage.database import upgrade

FACTORY = "bandit_platform.api.app:app_from_environment"
WORKER_HEALTHCHECK_SECONDS = 60


def _settings() -> Settings:
    return Settings.from_environment()


def _serve(host: str, port: int, workers: int, server: str, *, access_log: bool) -> None:
    if server == "granian":
        from granian import Granian
        from granian.constants import Interfaces

        Granian(
            FACTORY,
            address=host,
            port=port,
            workers=workers,
            interface=Interfaces.ASGI,
            factory=True,
            log_access=access_log,
        ).serve()
        return
    import uvicorn

    from bandit_platform.api.uvicorn_protocol import PROTOCOL

    uvicorn.run(
        FACTORY,
        http=PROTOCOL,
        host=host,
        port=port,
        workers=workers,
        factory=True,
        log_level="info",
        access_log=access_log,
        server_header=False,
        # A worker answers the supervisor's health check only once its interpreter has
        # started; on a busy machine that takes longer than uvicorn's 5 s default, and a
        # worker killed for it is replaced by one that is killed for the same reason.
        timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
    )


def cmd_migrate(_: argparse.Namespace) -> int:
    settings = _settings()
    upgrade(settings.database_url)
    print("database migrated to head")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings()
    if settings.simulation_seed is not None and args.workers > 1:
        # Each worker would keep its own simulated clock and decision-id sequence.
        raise ValueError("simulation mode (BANDIT_SIMULATION_SEED) runs one worker only")
    if not args.no_migrate:
        upgrade(settings.database_url)
    print(f"serving on http://{args.host}:{args.port}  (OpenAPI: /schema)", flush=True)
    _serve(args.host, args.port, args.workers, args.server, access_log=not args.no_access_log)
    return 0


#: How the demo's own approval reads in the audit log.
DEMO_APPROVAL = "demo setup: the bundled demo configuration, approved by the demo itself"


def setup_demo(platform: Platform, *, created_at: datetime | None = None) -> tuple[str, bool]:
    """Create, approve and start the demo experiment if needed; return a new API key for it.

    The demo approves its own configuration under the actor `demo` (audited as such): there
    is no second person in a demo. Real experiments are approved by an approver in the UI.

    Args:
        platform: the platform to set up.
        created_at: when a newly created experiment (and its first model) is dated; the
            demo dates it to the start of the simulated traffic it plays into it, so that its
            history reads in order. Default: the platform's clock.

    Returns:
        The API key's secret and whether the experiment was created now.
    """
    created = False
    try:
        ExperimentService(platform).get(DEMO_EXPERIMENT_KEY)
    except NotFound:
        creator = (
            platform
            if created_at is None
            else Platform(platform.settings, clock=lambda: created_at)
        )
        try:
            experiments = ExperimentService(creator)
            experiments.create(demo_config(), actor="demo")
            experiments.approve(DEMO_EXPERIMENT_KEY, actor="demo", comment=DEMO_APPROVAL)
            experiments.change_status(DEMO_EXPERIMENT_KEY, ExperimentStatus.RUNNING, actor="demo")
        finally:
            if creator is not platform:
                creator.close()
        created = True
    experiments = ExperimentService(platform)
    if experiments.get(DEMO_EXPERIMENT_KEY).status == ExperimentStatus.DRAFT:
        experiments.approve(DEMO_EXPERIMENT_KEY, actor="demo", comment=DEMO_APPROVAL)
    if experiments.get(DEMO_EXPERIMENT_KEY).status in (
        ExperimentStatus.APPROVED,
        ExperimentStatus.PAUSED,
    ):
        experiments.change_status(DEMO_EXPERIMENT_KEY, ExperimentStatus.RUNNING, actor="demo")
    key = ApiKeyService(platform).create("demo", scopes=set(Scope))
    return key.secret, created


def cmd_demo(args: argparse.Namespace) -> int:
    settings = _settings()
    upgrade(settings.database_url)
    platform = Platform(settings)
    created_at = None
    if not args.no_traffic:
        from simulators.traffic import traffic_start

        created_at = traffic_start(demo_config(), args.traffic_days, datetime.now(UTC))
    try:
        secret, created = setup_demo(platform, created_at=created_at)
    finally:
        platform.close()
    what = "created and started" if created else "is running"
    where = sa.make_url(settings.database_url).render_as_string(hide_password=True)
    print(f"demo experiment {DEMO_EXPERIMENT_KEY!r} {what} in {where}", flush=True)
    if created and not args.no_traffic:
        from simulators.traffic import play_traffic

        print(
            f"playing {args.traffic_days} days of {args.traffic_customers} simulated customers "
            "into it (decisions, outcomes, learning), so that it has data to show:",
            file=sys.stderr,
            flush=True,
        )
        traffic = play_traffic(
            settings,
            DEMO_EXPERIMENT_KEY,
            customers=args.traffic_customers,
            days=args.traffic_days,
            progress=_progress_bar("decisions"),
        )
        print(file=sys.stderr)
        print(
            f"simulated traffic: {traffic.decisions} decisions and {traffic.outcomes} outcomes "
            f"from {traffic.first_decision_at:%Y-%m-%d} to {traffic.last_event_at:%Y-%m-%d}"
        )
    print(f"API key for trying it (shown once): {secret}")
    if args.setup_only:
        return 0
    url = f"http://{args.host}:{args.port}"
    print(f"service: {url}   OpenAPI: {url}/schema   health: {url}/health/ready", flush=True)
    print(
        "try: curl -s -H 'Content-Type: application/json' -H 'X-API-Key: <key>' "
        f"-d @examples/requests/decision.json {url}/v1/decisions",
        flush=True,
    )
    _serve(args.host, args.port, args.workers, args.server, access_log=not args.no_access_log)
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    settings = _settings()
    upgrade(settings.database_url)
    platform = Platform(settings)
    try:
        scopes = {Scope(s) for s in args.scopes.split(",") if s}
        key = ApiKeyService(platform).create(
            args.name, scopes, rate_limit_per_second=args.rate_limit
        )
    finally:
        platform.close()
    print(key.secret)
    limit = "the server's default" if args.rate_limit is None else args.rate_limit or "none"
    print(
        f"(API key {args.name!r}, scopes {sorted(scopes)}, rate limit {limit} per second; "
        "store it now, it is not shown again)",
        file=sys.stderr,
    )
    return 0


def cmd_apikey_list(_: argparse.Namespace) -> int:
    settings = _settings()
    platform = Platform(settings)
    try:
        keys = ApiKeyService(platform).all()
    finally:
        platform.close()
    default = settings.rate_limit_per_second or "none"
    print(f"{'prefix':<14}{'name':<32}{'scopes':<28}{'limit/s':<20}status")
    for key in keys:
        if key.rate_limit_per_second is None:
            limit = f"default ({default})"
        else:
            limit = str(key.rate_limit_per_second or "none")
        status = "active" if key.revoked_at is None else f"revoked {key.revoked_at:%Y-%m-%d}"
        scopes = ",".join(sorted(key.scopes))
        print(f"{key.prefix:<14}{key.name[:31]:<32}{scopes:<28}{limit:<20}{status}")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    settings = _settings()
    platform = Platform(settings)
    try:
        ApiKeyService(platform).revoke(args.prefix, actor="cli")
    finally:
        platform.close()
    print(f"API key {args.prefix} revoked")
    return 0


def _read_password(args: argparse.Namespace) -> str:
    """The new user's password from stdin (`--password-stdin`) or a prompt; never argv."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ValueError("no terminal to prompt on: pipe the password with --password-stdin")
    import getpass

    password = getpass.getpass("password: ")
    if getpass.getpass("repeat it: ") != password:
        raise ValueError("the two passwords differ")
    return password


def cmd_user_create(args: argparse.Namespace) -> int:
    from bandit_platform.domain.users import Role
    from bandit_platform.service.users import UserService

    settings = _settings()
    upgrade(settings.database_url)
    password = _read_password(args)
    platform = Platform(settings)
    try:
        user = UserService(platform).create(args.username, password, Role(args.role), actor="cli")
    finally:
        platform.close()
    print(f"user {user.username!r} created with role {user.role.value}")
    return 0


def cmd_user_disable(args: argparse.Namespace) -> int:
    from bandit_platform.service.users import UserService

    platform = Platform(_settings())
    try:
        UserService(platform).disable(args.username, actor="cli")
    finally:
        platform.close()
    print(f"user {args.username!r} disabled; their sessions have ended")
    return 0


def cmd_user_list(_: argparse.Namespace) -> int:
    from bandit_platform.service.users import UserService

    platform = Platform(_settings())
    try:
        users = UserService(platform).all()
    finally:
        platform.close()
    for user in users:
        state = "disabled" if user.disabled_at else "active"
        print(f"{user.username}\t{user.role.value}\t{state}")
    return 0


def cmd_customer_erase(args: argparse.Namespace) -> int:
    """A customer withdrew consent: erase their stored context in every experiment.

    The id comes from the argument or, without one (or with `-`), from the first line of
    stdin, which keeps it out of the process list and the shell's history. It is never
    printed or logged.
    """
    from bandit_platform.service.privacy import ConsentService

    customer_id = args.customer_id
    if customer_id in (None, "-"):
        customer_id = sys.stdin.readline().rstrip("\r\n")
    settings = _settings()
    upgrade(settings.database_url)
    platform = Platform(settings)
    try:
        withdrawal = ConsentService(platform).withdraw(customer_id, None)
    finally:
        platform.close()
    print(
        f"consent withdrawal {withdrawal.withdrawal_id}: the context of "
        f"{withdrawal.decisions_erased} decisions was erased"
    )
    return 0


def cmd_experiment_apply(args: argparse.Namespace) -> int:
    settings = _settings()
    upgrade(settings.database_url)
    config = decode_config(Path(args.file).read_bytes())
    platform = Platform(settings)
    try:
        service = ExperimentService(platform)
        change = None
        try:
            service.get(config.key)
            result = service.propose(config.key, config, actor="cli")
            view, change = result.experiment, result.change
        except NotFound:
            view = service.create(config, actor="cli")
        if args.start and view.status == ExperimentStatus.DRAFT:
            # The operator who runs `--start` takes responsibility; the audit log says so.
            view = service.approve(
                config.key, actor="cli", comment="approved by `experiment apply --start`"
            )
        if args.start and view.status in (ExperimentStatus.APPROVED, ExperimentStatus.PAUSED):
            view = service.change_status(config.key, ExperimentStatus.RUNNING, actor="cli")
    finally:
        platform.close()
    print(f"experiment {view.key!r} version {view.version}, {view.status.value}")
    if change is not None:
        print(f"change request {change.id} waits for an approver (the running version stays)")
    return 0


def cmd_experiment_approve(args: argparse.Namespace) -> int:
    from bandit_platform.domain.users import ROLE_PERMISSIONS, Permission
    from bandit_platform.service.users import UserService, normalise_username

    platform = Platform(_settings())
    try:
        name = normalise_username(args.as_user)
        person = next((u for u in UserService(platform).all() if u.username == name), None)
        if person is None or person.disabled_at is not None:
            raise NotFound(f"no active user {name!r}", field="as")
        if Permission.APPROVE_EXPERIMENTS not in ROLE_PERMISSIONS[person.role]:
            print(f"error: the role {person.role.value!r} does not approve", file=sys.stderr)
            return 2
        actor = f"user:{name}"
        service = ExperimentService(platform)
        if args.change is not None:
            if service.change(args.change).experiment_key != args.key:
                raise NotFound(f"no change request {args.change} of {args.key!r}", field="change")
            if args.reject:
                service.reject_change(args.change, actor, args.comment)
            else:
                service.approve_change(args.change, actor, args.comment)
        elif args.reject:
            service.reject(args.key, actor, args.comment)
        else:
            service.approve(args.key, actor, args.comment)
        view = service.get(args.key)
    finally:
        platform.close()
    print(
        f"experiment {view.key!r} version {view.version}, {view.status.value}; "
        f"approved version {view.approved_version}"
    )
    return 0


def cmd_learner(args: argparse.Namespace) -> int:
    from bandit_platform.service.learner import LearnerRunner

    settings = _settings()
    upgrade(settings.database_url)
    platform = Platform(settings)
    runner = LearnerRunner(platform, interval_seconds=args.interval)
    try:
        while True:
            report = runner.step()
            if report is None:
                print("another process holds the learner lease; retrying", flush=True)
            elif report.rewards_closed or report.examples_learned or report.snapshots_published:
                print(
                    f"closed {report.rewards_closed} rewards, learned "
                    f"{report.examples_learned}, published {report.snapshots_published}",
                    flush=True,
                )
            if args.once:
                return 0 if report is not None else 1
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0
    finally:
        runner.lease.release()
        platform.close()


def cmd_export(args: argparse.Namespace) -> int:
    from bandit_platform.service.export import export_log

    settings = _settings()
    platform = Platform(settings)
    try:
        summary = export_log(platform, args.experiment, Path(args.out))
    finally:
        platform.close()
    print(f"{summary.decisions} decisions -> {summary.parquet}")
    print(f"{summary.dsjson_examples} learnable examples -> {summary.dsjson}")
    return 0


def _traffic_split(text: str) -> dict[str, float]:
    parts = [part.strip() for part in text.split(",")]
    try:
        values = [float(part) for part in parts]
    except ValueError:
        raise argparse.ArgumentTypeError("expected three numbers: holdout,ab,bandit") from None
    if len(values) != 3:
        raise argparse.ArgumentTypeError("expected three numbers: holdout,ab,bandit")
    return dict(zip(("holdout", "ab", "bandit"), values, strict=True))


def cmd_evaluate(args: argparse.Namespace) -> int:
    import json

    from bandit_platform.evaluation.report import evaluate_log, format_report
    from bandit_platform.service import reports

    if args.experiment is None:
        if args.audit_groups is not None:
            raise ValueError("--audit-groups needs --experiment (the database)")
        try:
            if args.obd is not None:
                from bandit_platform.evaluation.obd import obd_frame, read_obd

                log = obd_frame(read_obd(args.obd))
                report = evaluate_log(log, traffic=args.traffic, horizon=args.horizon)
            else:
                report = evaluate_log(Path(args.log), traffic=args.traffic, horizon=args.horizon)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(json.dumps(reports.to_json(report), indent=2) if args.json else format_report(report))
        return 0
    audit = None if args.audit_groups is None else reports.read_audit_file(Path(args.audit_groups))
    platform = Platform(_settings())
    try:
        result = reports.evaluate_experiment(
            platform, args.experiment, traffic=args.traffic, horizon=args.horizon, audit=audit
        )
    finally:
        platform.close()
    print(json.dumps(reports.to_json(result), indent=2) if args.json else result.text())
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    settings = _settings()
    platform = Platform(settings)
    try:
        service = ExperimentService(platform)
        if args.model_command == "rollback":
            result = service.rollback_model(args.experiment, args.version, actor="cli")
            print(f"serving the model of v{args.version} as v{result['version']}")
        else:
            result = service.warm_start(args.experiment, actor="cli")
            print(f"v{result['version']} trained on {result['examples_seen']} logged decisions")
    finally:
        platform.close()
    return 0


def _aware_time(text: str) -> object:
    value = datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError("needs a timezone, e.g. 2026-11-02T09:00:00+00:00")
    return value


def cmd_model_evaluate(args: argparse.Namespace) -> int:
    from bandit_platform.evaluation.ope import Estimate
    from bandit_platform.service import policy_evaluation as pe

    def line(estimate: Estimate) -> str:
        return (
            f"{estimate.name:>6} {estimate.value:8.4f}  "
            f"[{estimate.lower:8.4f}, {estimate.upper:8.4f}]  "
            f"ESS {estimate.effective_sample_size:8.1f}  max w {estimate.max_weight:6.2f}"
            + (f"  ({', '.join(estimate.warnings)})" if estimate.warnings else "")
        )

    platform = Platform(_settings())
    try:
        integrity = pe.check_integrity(platform, args.experiment, limit=args.limit)
        targets = pe.standard_targets(platform, args.experiment, args.version or ())
        evaluations = pe.evaluate_policies(
            platform, args.experiment, targets, horizon=args.horizon, confidence=args.confidence
        )
    finally:
        platform.close()
    status = "ok" if integrity.ok else "FAILED"
    print(
        f"integrity {status}: {integrity.checked} of the {integrity.sampled} newest decisions "
        f"recomputed, {integrity.mismatched} mismatched (largest difference "
        f"{integrity.max_difference:.3g}), {integrity.unverifiable} unverifiable; skipped "
        f"{integrity.skipped or 'none'}"
    )
    for decision_id in integrity.mismatched_ids:
        print(f"  mismatch: {decision_id}")
    for evaluation in evaluations:
        print(
            f"{evaluation.policy} ({evaluation.horizon}, n = {evaluation.n}, "
            f"{args.confidence:.0%} intervals)"
        )
        for estimate in (evaluation.ips, evaluation.snips, evaluation.dr):
            print("  " + line(estimate))
    return 0 if integrity.ok else 1


def cmd_model_candidate(args: argparse.Namespace) -> int:
    import json

    import msgspec

    from bandit_platform.domain.config import EpsilonGreedy, Explorer
    from bandit_platform.service.policy_evaluation import CandidateSpec, PromotionRefused

    explorer: Explorer | None = None
    if args.explorer is not None:
        try:
            explorer = msgspec.json.decode(args.explorer, type=Explorer)
        except msgspec.DecodeError as exc:  # malformed JSON or an invalid explorer
            raise ValueError(f"--explorer: {exc}") from None
    elif args.epsilon is not None:
        explorer = EpsilonGreedy(epsilon=args.epsilon)
    spec = CandidateSpec(
        explorer=explorer,
        holdout_fraction=args.holdout_fraction,
        cutoff=args.cutoff,
        confidence=args.confidence,
        estimator=args.estimator,
    )
    platform = Platform(_settings())
    try:
        service = ExperimentService(platform)
        try:
            result = service.promote_candidate(
                args.experiment, spec, actor="cli", dry_run=args.model_command == "candidate"
            )
        except PromotionRefused as exc:
            print(json.dumps(exc.evidence, indent=2))
            print(f"refused: {exc.message}", file=sys.stderr)
            return 1
    finally:
        platform.close()
    print(json.dumps(result["evidence"], indent=2))
    if result["promoted"]:
        print(f"promoted: serving the candidate as v{result['version']}")
    else:
        verdict = "would be promoted" if result["would_promote"] else "would be refused"
        print(f"dry run: the candidate {verdict}; nothing was written")
    return 0 if result["promoted"] or result["would_promote"] else 1


def _progress_bar(unit: str) -> Callable[[int, int], None]:
    """A progress callback drawing `[####----] done/total unit` on stderr."""

    def progress(done: int, total: int) -> None:
        if done == total or done % max(total // 200, 1) == 0:
            filled = int(40 * done / max(total, 1))
            bar = "#" * filled + "-" * (40 - filled)
            print(f"\r[{bar}] {done}/{total} {unit}", end="", file=sys.stderr, flush=True)

    return progress


def cmd_simulate(args: argparse.Namespace) -> int:
    import msgspec

    from simulators.report import write_report
    from simulators.runner import SimulationConfig, TransportError, run_simulation

    config = SimulationConfig.from_toml(Path(args.config))
    if args.transport is not None:
        config = msgspec.structs.replace(config, transport=args.transport)
    directory = Path(args.out) if args.out else Path(args.config).parent / "runs" / config.name

    try:
        result = run_simulation(config, directory, progress=_progress_bar("decisions"))
    except TransportError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    print(file=sys.stderr)
    report = write_report(result)
    for name, value in result.summary().items():
        print(f"{name}: {value}")
    print(f"report: {report}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from simulators.study import StudySpec, run_study

    path = Path(args.study)
    spec = StudySpec.from_toml(path)
    directory = Path(args.out) if args.out else path.parent
    command = f"bandit-platform study {path} --workers {args.workers}"
    if args.scale != 1.0:
        command += f" --scale {args.scale:g}"
    if args.out:
        command += f" --out {args.out}"
    result = run_study(spec, directory, workers=args.workers, scale=args.scale, command=command)
    for arm in result.aggregates["arms"]:
        regret = arm["regret_per_1000"]
        half = regret["half_width"]
        print(
            f"{arm['label']}: regret per 1,000 decisions {regret['estimate']:.1f}"
            + ("" if half is None else f" ± {half:.1f}")
        )
    print(f"{len(result.runs)} runs in {result.seconds / 60:.1f} min")
    print(f"report: {directory / 'report.md'}")
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be a positive number")
    return value


def _server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not log one line per request (uvicorn; about a quarter of the event loop's "
        "time at full load, see docs/scaling.md)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    parser = argparse.ArgumentParser(
        prog="bandit-platform",
        description="Contextual-bandit offers for digital banking. The database comes from "
        "DATABASE_URL (default: SQLite in ./data); BANDIT_PSEUDONYM_KEY keys the customer "
        "pseudonyms (required with PostgreSQL).",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP API")
    _server_options(serve)
    serve.add_argument("--no-migrate", action="store_true", help="do not migrate on start")
    serve.set_defaults(handler=cmd_serve)

    demo = commands.add_parser("demo", help="set up the demo experiment and serve it")
    _server_options(demo)
    demo.add_argument("--setup-only", action="store_true", help="create and start; no server")
    demo.add_argument(
        "--no-traffic",
        action="store_true",
        help="do not play simulated customers into a newly created demo experiment",
    )
    demo.add_argument("--traffic-customers", type=int, default=500, help="simulated customers")
    demo.add_argument("--traffic-days", type=int, default=14, help="days of simulated visits")
    demo.set_defaults(handler=cmd_demo)

    migrate = commands.add_parser("migrate", help="migrate the database to the newest schema")
    migrate.set_defaults(handler=cmd_migrate)

    apikey = commands.add_parser("apikey", help="manage app API keys")
    apikey_commands = apikey.add_subparsers(dest="apikey_command", required=True)
    create = apikey_commands.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scopes",
        default="decide,outcome,read",
        help="comma-separated: decide, outcome, read, manage",
    )
    create.add_argument(
        "--rate-limit",
        type=int,
        default=None,
        metavar="N",
        help="requests per second this key may make, shared by every worker (0: no limit; "
        "default: BANDIT_RATE_LIMIT_PER_SECOND)",
    )
    create.set_defaults(handler=cmd_apikey_create)
    apikey_list = apikey_commands.add_parser(
        "list", help="list keys: prefix, name, scopes, rate limit, status"
    )
    apikey_list.set_defaults(handler=cmd_apikey_list)
    revoke = apikey_commands.add_parser("revoke", help="revoke a key (it stops working at once)")
    revoke.add_argument("--prefix", required=True, help="the part after bpk_, before the next _")
    revoke.set_defaults(handler=cmd_apikey_revoke)

    user = commands.add_parser("user", help="manage people who sign in to the web UI")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    user_create = user_commands.add_parser(
        "create", help="create a user; the password is prompted for (or read from stdin)"
    )
    user_create.add_argument("username")
    user_create.add_argument(
        "--role", choices=["viewer", "editor", "approver", "admin"], default="viewer"
    )
    user_create.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of stdin instead of prompting",
    )
    user_create.set_defaults(handler=cmd_user_create)
    user_disable = user_commands.add_parser(
        "disable", help="disable a user (their sessions end at once)"
    )
    user_disable.add_argument("username")
    user_disable.set_defaults(handler=cmd_user_disable)
    user_list = user_commands.add_parser("list", help="list users, roles and whether active")
    user_list.set_defaults(handler=cmd_user_list)

    customer = commands.add_parser("customer", help="act on a customer's stored data")
    customer_commands = customer.add_subparsers(dest="customer_command", required=True)
    erase = customer_commands.add_parser(
        "erase",
        help="the customer withdrew consent: erase the context of all their decisions",
    )
    erase.add_argument(
        "customer_id",
        nargs="?",
        help="the bank's customer id; omit it (or give -) to read it from stdin",
    )
    erase.set_defaults(handler=cmd_customer_erase)

    experiment = commands.add_parser("experiment", help="manage experiments from files")
    experiment_commands = experiment.add_subparsers(dest="experiment_command", required=True)
    apply = experiment_commands.add_parser("apply", help="create or update from a JSON file")
    apply.add_argument("file")
    apply.add_argument(
        "--start",
        action="store_true",
        help="approve it (as `cli`, audited) and start it after applying",
    )
    apply.set_defaults(handler=cmd_experiment_apply)
    approve = experiment_commands.add_parser(
        "approve",
        help="approve (or reject) a draft or a pending change request as an approver",
    )
    approve.add_argument("key")
    approve.add_argument(
        "--as", dest="as_user", required=True, help="the approver's username (not the author)"
    )
    approve.add_argument("--comment", required=True, help="why (kept in the audit log)")
    approve.add_argument("--change", type=int, help="a change request id (running experiments)")
    approve.add_argument("--reject", action="store_true", help="reject instead of approve")
    approve.set_defaults(handler=cmd_experiment_approve)
    learner = commands.add_parser(
        "learner", help="run the learner as its own process (takes the lease when free)"
    )
    learner.add_argument("--once", action="store_true", help="one pass, then exit")
    learner.add_argument("--interval", type=float, default=1.0, help="seconds between passes")
    learner.set_defaults(handler=cmd_learner)

    export = commands.add_parser("export", help="write the joined log as Parquet and dsjson")
    export.add_argument("--experiment", required=True)
    export.add_argument("--out", required=True, help="directory to write into")
    export.set_defaults(handler=cmd_export)

    evaluate = commands.add_parser(
        "evaluate",
        help="lift, sample-ratio check and off-policy values of an exported log or of an "
        "experiment in the database (with its segments and an optional fairness audit)",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--log", help="the Parquet file of `export`")
    source.add_argument("--experiment", help="an experiment key: read the database instead")
    source.add_argument(
        "--obd", metavar="FILE", help="an Open Bandit Dataset CSV (e.g. random/all/all.csv)"
    )
    evaluate.add_argument(
        "--audit-groups",
        metavar="FILE",
        help="with --experiment: a CSV of customer_id and protected attribute columns, used "
        "for the fairness audit only (pseudonymised in memory; never stored or logged)",
    )
    evaluate.add_argument("--json", action="store_true", help="print JSON instead of text")
    evaluate.add_argument(
        "--traffic",
        type=_traffic_split,
        help="designed holdout,ab,bandit percentages (e.g. 10,20,70) for the SRM check",
    )
    evaluate.add_argument("--horizon", help="reward horizon of the off-policy values")
    evaluate.set_defaults(handler=cmd_evaluate)

    simulate = commands.add_parser(
        "simulate", help="run a policy against the synthetic bank customers (TOML config)"
    )
    simulate.add_argument("config", help="a run file, e.g. experiments/smoke/run.toml")
    simulate.add_argument("--out", help="output folder (default: runs/<name> beside the file)")
    simulate.add_argument(
        "--transport",
        choices=["in_process", "http"],
        help="in_process (services called directly) or http (a local server in simulation "
        "mode); overrides the file's `transport` (default in_process)",
    )
    simulate.set_defaults(handler=cmd_simulate)

    model = commands.add_parser("model", help="model snapshots")
    model_commands = model.add_subparsers(dest="model_command", required=True)
    rollback = model_commands.add_parser("rollback", help="serve an earlier version again")
    rollback.add_argument("--experiment", required=True)
    rollback.add_argument("--version", type=int, required=True)
    rollback.set_defaults(handler=cmd_model)
    warm = model_commands.add_parser("warm-start", help="retrain from all logged decisions")
    warm.add_argument("--experiment", required=True)
    warm.set_defaults(handler=cmd_model)
    model_evaluate = model_commands.add_parser(
        "evaluate",
        help="integrity of the logged probabilities and off-policy values of the logging "
        "policy, uniform random, the incumbent rules and model versions",
    )
    model_evaluate.add_argument("--experiment", required=True)
    model_evaluate.add_argument(
        "--version", type=int, action="append", help="a model version (repeatable; default: served)"
    )
    model_evaluate.add_argument("--horizon", help="reward horizon (default: the learning one)")
    model_evaluate.add_argument("--confidence", type=float, default=0.95)
    model_evaluate.add_argument(
        "--limit", type=int, default=1000, help="newest decisions checked for integrity"
    )
    model_evaluate.set_defaults(handler=cmd_model_evaluate)
    for name, text in (
        ("candidate", "judge a candidate trained on the log against the served model (dry run)"),
        ("promote", "promote a candidate trained on the log when it passes the promotion gate"),
    ):
        gate = model_commands.add_parser(name, help=text)
        gate.add_argument("--experiment", required=True)
        chosen = gate.add_mutually_exclusive_group()
        chosen.add_argument("--epsilon", type=float, help="an epsilon-greedy candidate")
        chosen.add_argument("--explorer", help='an explorer as JSON, e.g. {"kind": "softmax"}')
        gate.add_argument(
            "--holdout-fraction", type=float, default=0.3, help="newest rows held out (0.3)"
        )
        gate.add_argument(
            "--cutoff",
            type=_aware_time,
            help="ISO time with zone: decisions before it train, after it evaluate",
        )
        gate.add_argument("--confidence", type=float, default=0.95, help="one-sided (0.95)")
        gate.add_argument("--estimator", choices=["snips", "ips", "dr"], default="snips")
        gate.set_defaults(handler=cmd_model_candidate)

    study = commands.add_parser(
        "study", help="run a study (arms x seeds of simulations in parallel) and report it"
    )
    study.add_argument("study", help="a study file, e.g. experiments/explorers/study.toml")
    study.add_argument(
        "--workers", type=_positive_int, default=2, help="parallel processes (default 2)"
    )
    study.add_argument(
        "--scale",
        type=_positive_float,
        default=1.0,
        help="multiply customers, decisions and checkpoints (e.g. 0.05 for a quick look)",
    )
    study.add_argument(
        "--out", help="folder for report.md, results.json, charts, runs/ (default: the file's)"
    )
    study.set_defaults(handler=cmd_study)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `bandit-platform` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except DomainError as exc:
        where = f" ({exc.field})" if exc.field else ""
        print(f"error{where}: {exc.message}", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    raise SystemExit(main())
