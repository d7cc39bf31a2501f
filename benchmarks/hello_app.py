"""The ceiling of the decision path: a Litestar app that only decodes a decision request.

`POST /v1/decisions` takes the same JSON body as the real service and decodes it with msgspec
into the service's own request struct (`DecisionRequestBody`: the same field types, lengths
and refusal of unknown fields), then answers a small JSON document. Nothing else: no API key,
no database, no model. `GET /health/ready` answers 200 for the benchmark's readiness check.

Run it under exactly the settings of `bandit-platform serve` (the same server, worker count,
log level and access log), because it is served through the CLI's own `_serve`:

    .venv/bin/python benchmarks/hello_app.py --port 8001 --workers 1 --server uvicorn

`benchmarks/decide_http.py` starts it as the baseline that the real service is compared with.
"""

from __future__ import annotations

import argparse
import sys
import uuid
from pathlib import Path

import msgspec
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK

from bandit_platform.api.schemas import DecisionRequestBody

#: The factory as a server imports it in each worker process (this folder is on sys.path).
FACTORY = "hello_app:create_app"


class HelloAnswer(msgspec.Struct, kw_only=True):
    """A small answer shaped like the head of a decision."""

    decision_id: str
    experiment: str
    offer: str | None
    propensity: float
    group: str


@post("/v1/decisions", status_code=HTTP_200_OK)
async def decide(data: JSONBody[DecisionRequestBody]) -> HelloAnswer:
    """Decode the body (done by Litestar with msgspec before this runs) and answer."""
    return HelloAnswer(
        decision_id=str(uuid.uuid4()),
        experiment=data.experiment,
        offer=None,
        propensity=1.0,
        group="holdout",
    )


@get("/health/ready", sync_to_thread=False)
def ready() -> dict[str, str]:
    """Always ready: there is nothing to wait for."""
    return {"status": "ready"}


def create_app() -> Litestar:
    """App factory, as `bandit_platform.api.app:app_from_environment` is for the service."""
    return Litestar(route_handlers=[decide, ready], request_max_body_size=64 * 1024, debug=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--server", choices=["uvicorn", "granian"], default="uvicorn")
    parser.add_argument("--no-access-log", action="store_true")
    args = parser.parse_args(argv)

    # Worker processes import the factory by name; make sure they find this folder.
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)

    from bandit_platform import cli

    # The service's own server launcher, with this app's factory instead of the service's:
    # whatever `serve` sets (log level, access log, server header, interface) applies here too.
    cli.FACTORY = FACTORY
    cli._serve(args.host, args.port, args.workers, args.server, access_log=not args.no_access_log)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
