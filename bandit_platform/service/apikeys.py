"""API keys for apps: shown once at creation, stored as SHA-256, checked in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from bandit_platform.domain.access import DEFAULT_SCOPES, AppIdentity, Scope
from bandit_platform.domain.errors import InvalidInput, NotFound
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import ApiKeyRow

_PREFIX_BYTES = 6


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: `secret` is shown this once and never stored."""

    identity: AppIdentity
    secret: str
    #: The public part of the key (after `bpk_`), by which it is revoked.
    prefix: str


def _hash(secret: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(secret: str) -> str | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != "bpk" or len(parts[1]) != 2 * _PREFIX_BYTES:
        return None
    return parts[1]


class ApiKeyService:
    """Creates and verifies API keys."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def create(self, name: str, scopes: Iterable[Scope] = DEFAULT_SCOPES) -> NewApiKey:
        """Create a key for an app; the returned secret is not recoverable later."""
        name = name.strip()
        if not name or len(name) > 120:
            raise InvalidInput("needs 1 to 120 characters", field="name")
        scope_set = frozenset(scopes)
        prefix = secrets.token_hex(_PREFIX_BYTES)
        secret = f"bpk_{prefix}_{secrets.token_urlsafe(32)}"
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            row = ApiKeyRow(
                name=name,
                prefix=prefix,
                key_hash=_hash(secret),
                scopes=",".join(sorted(scope_set)),
                created_at=now,
            )
            session.add(row)
            session.flush()
            assert row.id is not None
            repositories.audit(
                session,
                at=now,
                actor="cli",
                action="apikey.create",
                experiment_id=None,
                details={"name": name, "prefix": prefix, "scopes": sorted(scope_set)},
            )
            identity = AppIdentity(row.id, name, scope_set)
        return NewApiKey(identity=identity, secret=secret, prefix=prefix)

    def revoke(self, prefix: str, actor: str) -> None:
        """Revoke the key with this public prefix (the part after `bpk_`); audited.

        Raises:
            NotFound: no key has this prefix.
        """
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            row = repositories.api_key_by_prefix(session, prefix)
            if row is None:
                raise NotFound(f"no API key with prefix {prefix!r}", field="prefix")
            if row.revoked_at is None:
                row.revoked_at = now
                session.add(row)
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="apikey.revoke",
                    experiment_id=None,
                    details={"name": row.name, "prefix": prefix},
                )

    def verify(self, secret: str) -> AppIdentity | None:
        """The app behind a presented key, or None when it is unknown or revoked."""
        prefix = _split(secret)
        if prefix is None:
            return None
        with self.platform.read_session() as session:
            row = repositories.api_key_by_prefix(session, prefix)
        if row is None or row.revoked_at is not None:
            return None
        if not hmac.compare_digest(row.key_hash, _hash(secret)):
            return None
        assert row.id is not None
        scopes = frozenset(Scope(s) for s in row.scopes.split(",") if s)
        return AppIdentity(row.id, row.name, scopes)
