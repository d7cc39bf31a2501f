"""Domain errors. The HTTP layer maps each of these to a problem+json response once."""

from __future__ import annotations


class DomainError(Exception):
    """Base class of every error the domain raises on purpose."""

    status_hint = 400

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInput(DomainError):
    """A request or configuration value is invalid; `field` names where."""

    status_hint = 422


class NotFound(DomainError):
    """The named resource does not exist (or the caller may not see it)."""

    status_hint = 404


class Conflict(DomainError):
    """The request conflicts with the current state (status transition, duplicate key)."""

    status_hint = 409


class ExpressionError(InvalidInput):
    """An eligibility or segment expression does not parse or does not type-check.

    `position` is the 0-based character offset where the problem was found.
    """

    def __init__(self, message: str, *, position: int = 0, field: str | None = None) -> None:
        super().__init__(f"{message} (at character {position})", field=field)
        self.position = position
