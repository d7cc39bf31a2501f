"""API keys for apps: shown once at creation, stored as SHA-256, checked in constant time.

Verification looks the key up by its public prefix and compares the SHA-256 of the presented
secret with the stored one by `hmac.compare_digest`. A verified key is then kept in memory
for at most `API_KEY_CACHE_SECONDS` (keyed by that hash, never by the secret), so that a
busy app does not cost a database read per request. That bounds how long a revocation takes:
a key revoked through this process stops working at once (every service of the process drops
its cached keys), and one revoked elsewhere (the CLI, another worker) within
`API_KEY_CACHE_SECONDS`. Unknown and revoked keys are never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import secrets
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Final

from sqlmodel import col, select

from bandit_platform.domain.access import DEFAULT_SCOPES, AppIdentity, Scope
from bandit_platform.domain.errors import InvalidInput, NotFound
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import ApiKeyRow

_PREFIX_BYTES = 6
#: The longest a verified key is trusted without looking at the database again: the bound on
#: how long a key revoked by another process keeps working in this one.
API_KEY_CACHE_SECONDS: Final = 2.0
#: The most verified keys one service keeps in memory.
API_KEY_CACHE_SIZE: Final = 10_000
#: The highest per-key limit that can be set (requests per second).
MAX_RATE_LIMIT: Final = 1_000_000
#: Bumped by every revocation in this process: cached keys of an older generation are stale.
_revocations = itertools.count(1)
_generation = 0
_generation_lock = threading.Lock()


def _revoked_here() -> None:
    global _generation
    with _generation_lock:
        _generation = next(_revocations)


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: `secret` is shown this once and never stored."""

    identity: AppIdentity
    secret: str
    #: The public part of the key (after `bpk_`), by which it is revoked.
    prefix: str


@dataclass(frozen=True)
class VerifiedKey:
    """An app behind a valid key, with the key's own rate limit (None: the server default)."""

    identity: AppIdentity
    rate_limit_per_second: int | None


@dataclass(frozen=True)
class ApiKeyView:
    """A key as an operator sees it (never the secret or its hash)."""

    prefix: str
    name: str
    scopes: frozenset[Scope]
    created_at: datetime
    revoked_at: datetime | None
    rate_limit_per_second: int | None


def _hash(secret: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough (no dictionary to attack).
    return hashlib.sha256(secret.encode()).hexdigest()


def _split(secret: str) -> str | None:
    parts = secret.split("_", 2)
    if len(parts) != 3 or parts[0] != "bpk" or len(parts[1]) != 2 * _PREFIX_BYTES:
        return None
    return parts[1]


def _scopes(text: str) -> frozenset[Scope]:
    return frozenset(Scope(s) for s in text.split(",") if s)


def check_rate_limit(limit: int | None) -> int | None:
    """A per-key limit: None (the server default), 0 (none) or 1 to `MAX_RATE_LIMIT`.

    Raises:
        InvalidInput: anything else (field `rate_limit_per_second`).
    """
    if limit is not None and not 0 <= limit <= MAX_RATE_LIMIT:
        raise InvalidInput(
            f"must be 0 (no limit) to {MAX_RATE_LIMIT} requests per second",
            field="rate_limit_per_second",
        )
    return limit


class ApiKeyService:
    """Creates, lists, revokes and verifies API keys."""

    def __init__(
        self,
        platform: Platform,
        *,
        cache_seconds: float = API_KEY_CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.platform = platform
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        #: SHA-256 of a verified secret -> (the key, monotonic expiry, revocation generation).
        self._cache: dict[str, tuple[VerifiedKey, float, int]] = {}
        self._lock = threading.Lock()
        #: Database look-ups made by `authenticate` (for tests and diagnostics).
        self.lookups = 0

    def create(
        self,
        name: str,
        scopes: Iterable[Scope] = DEFAULT_SCOPES,
        *,
        rate_limit_per_second: int | None = None,
    ) -> NewApiKey:
        """Create a key for an app; the returned secret is not recoverable later.

        `rate_limit_per_second`: the key's own limit (0: none); None: the server's default.
        """
        name = name.strip()
        if not name or len(name) > 120:
            raise InvalidInput("needs 1 to 120 characters", field="name")
        limit = check_rate_limit(rate_limit_per_second)
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
                rate_limit_per_second=limit,
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
                details={
                    "name": name,
                    "prefix": prefix,
                    "scopes": sorted(scope_set),
                    "rate_limit_per_second": limit,
                },
            )
            identity = AppIdentity(row.id, name, scope_set)
        return NewApiKey(identity=identity, secret=secret, prefix=prefix)

    def all(self) -> list[ApiKeyView]:
        """Every key, oldest first (revoked ones too)."""
        with self.platform.read_session() as session:
            rows = session.exec(select(ApiKeyRow).order_by(col(ApiKeyRow.id))).all()
        return [
            ApiKeyView(
                prefix=r.prefix,
                name=r.name,
                scopes=_scopes(r.scopes),
                created_at=r.created_at,
                revoked_at=r.revoked_at,
                rate_limit_per_second=r.rate_limit_per_second,
            )
            for r in rows
        ]

    def revoke(self, prefix: str, actor: str) -> None:
        """Revoke the key with this public prefix (the part after `bpk_`); audited.

        It stops working at once in this process, and in others within
        `API_KEY_CACHE_SECONDS`.

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
        _revoked_here()
        with self._lock:
            self._cache.clear()

    def verify(self, secret: str) -> AppIdentity | None:
        """The app behind a presented key, or None when it is unknown or revoked."""
        found = self.authenticate(secret)
        return None if found is None else found.identity

    def cached(self, secret: str) -> VerifiedKey | None:
        """The key verified within the last `cache_seconds`, without the database; None when
        it must be looked up (`authenticate`)."""
        hashed = _hash(secret)
        entry = self._cache.get(hashed)
        if entry is None:
            return None
        found, expires, generation = entry
        if generation != _generation or self._monotonic() >= expires:
            return None
        return found

    def authenticate(self, secret: str) -> VerifiedKey | None:
        """The key behind a presented secret (from the cache when fresh), or None when it is
        unknown or revoked."""
        found = self.cached(secret)
        if found is not None:
            return found
        prefix = _split(secret)
        if prefix is None:
            return None
        generation = _generation
        self.lookups += 1
        with self.platform.read_session() as session:
            row = repositories.api_key_by_prefix(session, prefix)
        if row is None or row.revoked_at is not None:
            return None
        hashed = _hash(secret)
        if not hmac.compare_digest(row.key_hash, hashed):
            return None
        assert row.id is not None
        verified = VerifiedKey(
            AppIdentity(row.id, row.name, _scopes(row.scopes)), row.rate_limit_per_second
        )
        if self.cache_seconds > 0:
            with self._lock:
                if len(self._cache) >= API_KEY_CACHE_SIZE:
                    self._cache.clear()
                self._cache[hashed] = (
                    verified,
                    self._monotonic() + self.cache_seconds,
                    generation,
                )
        return verified
