"""What the OpenAPI schema documents beyond each handler's own success answer.

Every `/v1` operation can answer with an RFC 9457 problem document: a malformed body (400),
no or an unknown API key (401), a key without the route's scope (403), an unknown or another
app's resource (404), a conflict with the current state (409), a body over the size limit
(413), a value the field does not allow (422), the key's rate limit (429), and a worker shutting
down (503). `document_problems` adds those to every `/v1` operation of an app that does not
document the status itself, so that clients (and Schemathesis, `tests/system/test_fuzz_api.py`)
can rely on the schema for every answer.
"""

from __future__ import annotations

from litestar import Litestar
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Components, SecurityScheme

from bandit_platform.api.auth import API_KEY_HEADER
from bandit_platform.api.errors import PROBLEM_JSON
from bandit_platform.api.schemas import ProblemBody

#: Problem statuses of every `/v1` operation, with what they mean.
PROBLEM_STATUSES: dict[int, str] = {
    400: "Malformed request: the body is not JSON, or a parameter has the wrong type",
    401: f"No {API_KEY_HEADER} header, or an unknown or revoked key",
    403: "The API key lacks the scope this operation needs",
    404: "No such resource for this API key (another app's is reported the same way)",
    409: "The request conflicts with the current state (status, a concurrent duplicate)",
    413: "The body is larger than the server accepts",
    422: "A value the named field does not allow",
    429: "The API key used up its requests for this second; see Retry-After",
    503: "The worker is shutting down; retry",
}
#: The security scheme of the app API.
API_KEY_SCHEME = "apiKey"  # pragma: allowlist secret (a scheme name)


def api_key_components() -> Components:
    """The `X-API-Key` header as the schema's security scheme."""
    return Components(
        security_schemes={
            API_KEY_SCHEME: SecurityScheme(
                type="apiKey",
                name=API_KEY_HEADER,
                security_scheme_in="header",
                description="An app's API key (`bandit-platform apikey create`)",
            )
        }
    )


def document_problems(app: Litestar) -> None:
    """Add the problem statuses and the API key requirement to every `/v1` operation."""
    for route in app.routes:
        if not route.path.startswith("/v1"):
            continue
        for handler in getattr(route, "route_handlers", ()):
            responses = dict(handler.responses or {})
            for status, description in PROBLEM_STATUSES.items():
                responses.setdefault(
                    status,
                    ResponseSpec(
                        data_container=ProblemBody,
                        description=description,
                        media_type=PROBLEM_JSON,
                    ),
                )
            handler.responses = responses
            if not handler.security:
                handler.security = [{API_KEY_SCHEME: []}]
