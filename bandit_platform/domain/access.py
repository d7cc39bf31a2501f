"""Who is calling: an app identified by its API key, and what it may do."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Scope(enum.StrEnum):
    """What an API key allows."""

    DECIDE = "decide"
    OUTCOME = "outcome"
    READ = "read"
    MANAGE = "manage"


DEFAULT_SCOPES = frozenset({Scope.DECIDE, Scope.OUTCOME, Scope.READ})


@dataclass(frozen=True)
class AppIdentity:
    """An authenticated app (the bank's backend) behind an API key."""

    api_key_id: int
    name: str
    scopes: frozenset[Scope]

    @property
    def actor(self) -> str:
        """How the audit log names this caller."""
        return f"apikey:{self.name}"
