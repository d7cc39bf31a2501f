"""One place that maps errors to RFC 9457 problem+json responses that name the field."""

from __future__ import annotations

import logging
import re
from typing import Any

from litestar import MediaType, Request, Response
from litestar.background_tasks import BackgroundTask
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_500_INTERNAL_SERVER_ERROR

from bandit_platform.domain.errors import DomainError
from bandit_platform.features.context import IdentifierInContext
from bandit_platform.service.privacy import count_refused_identifiers

logger = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
_PATH = re.compile(r"at `\$\.?([^`]*)`")
_NAMED_FIELD = re.compile(r"Object (?:missing required|contains unknown) field `([^`]+)`")
#: The name every route handler gives its request body parameter.
BODY_PARAMETER = "data"
_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


def problem(status: int, detail: str, field: str | None = None) -> Response[dict[str, Any]]:
    """A problem+json response."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    if field is not None:
        body["field"] = field
    return Response(content=body, status_code=status, media_type=PROBLEM_JSON)


def domain_error(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    """Domain errors carry their status and field.

    A context refused for a direct identifier is counted (`decisions.identifier_refused` and
    one counter per kind) after the answer is sent, in a worker thread.
    """
    response = problem(exc.status_hint, exc.message, exc.field)
    if isinstance(exc, IdentifierInContext):
        platform = request.app.state.get("platform")
        if platform is not None:
            response.background = BackgroundTask(count_refused_identifiers, platform, exc.counters)
    return response


def _validation_field(message: str, key: object, source: object) -> str | None:
    match = _PATH.search(message)
    if match is not None:
        return match.group(1) or "body"
    # Litestar names the body's root by the handler's parameter (`data`) and nested paths
    # without it; msgspec names a missing or unknown field only in the message.
    root = source == "body" and key == BODY_PARAMETER
    parent = "" if root or not key else str(key)
    named = _NAMED_FIELD.search(message)
    if named is not None:
        return f"{parent}.{named.group(1)}" if parent else named.group(1)
    if root:
        return "body"
    return parent or None


def validation_error(
    request: Request[Any, Any, Any], exc: ValidationException
) -> Response[dict[str, Any]]:
    """Body and parameter validation: 422 naming the field, 400 for malformed JSON."""
    extra = exc.extra if isinstance(exc.extra, list) else []
    for item in extra:
        if not isinstance(item, dict):
            continue
        message = str(item.get("message", ""))
        if "malformed" in message.lower() or "json is malformed" in message.lower():
            return problem(400, f"malformed JSON: {message}", "body")
        if item.get("source") == "body" and message == f"'{BODY_PARAMETER}'":
            # The framework found no body at all (a KeyError on the parameter's name).
            return problem(400, "the request needs a JSON object body", "body")
        field = _validation_field(message, item.get("key"), item.get("source"))
        return problem(422, message, field)
    detail = str(exc.detail)
    if "malformed" in detail.lower() or "decode" in detail.lower():
        return problem(400, f"malformed JSON body: {detail}", "body")
    return problem(422, detail, "body")


def http_error(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    """Every other framework error, as problem+json with its status.

    The framework raises 400 for a body that is not JSON and 413 for one over the size limit:
    both are about the body as a whole.
    """
    if exc.status_code == 400:
        return problem(400, f"malformed JSON body: {exc.detail}", "body")
    if exc.status_code == 413:
        return problem(413, str(exc.detail), "body")
    return problem(exc.status_code, str(exc.detail))


def unexpected_error(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """A bug: log it with its traceback, answer 500 without internals."""
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return problem(HTTP_500_INTERNAL_SERVER_ERROR, "internal error; it has been logged")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: domain_error,
    ValidationException: validation_error,
    HTTPException: http_error,
    Exception: unexpected_error,
}

__all__ = ["EXCEPTION_HANDLERS", "PROBLEM_JSON", "MediaType", "problem"]
