"""People of the web UI: accounts, scrypt password hashes and database-backed sessions.

- **Passwords** are hashed with scrypt (memory-hard: RFC 7914, `hashlib.scrypt`), a random
  16-byte salt per password, and stored as `scrypt$n$r$p$salt$hash` (base64) so that the
  work factor can be raised later: a sign-in with a hash made under weaker parameters
  rehashes the password under the current ones. Hashes are compared in constant time.
- **Sign-in** does the same scrypt work whether the user exists, is disabled or gave a wrong
  password, so that the response time does not tell which usernames exist.
- **Sessions**: a random 256-bit token goes to the browser (an HttpOnly cookie); the database
  stores only its SHA-256, the user, a CSRF token, and when the session started, was last
  used, expires and was revoked. A session ends at `ui_session_hours` after sign-in, after
  `ui_idle_minutes` without a request, at sign-out, or when its user is disabled. Every
  worker reads the same table, so any worker serves any session.
- **Sign-in throttling**: `SIGN_IN_MAX_FAILURES` failed sign-ins for one username within
  `SIGN_IN_WINDOW` lock that username for `SIGN_IN_LOCK`, whether or not it exists (the same
  answer either way, so the lock tells nothing about which usernames exist). While locked,
  even the right password is refused (`SignInLocked`, 429); a successful sign-in clears the
  count. Failures and locks are audited and logged with the username, never the password.
  The count lives in `sign_in_throttles`, shared by every worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, select

from bandit_platform.domain.errors import Conflict, DomainError, InvalidInput, NotFound
from bandit_platform.domain.users import Role, UiSession, UserIdentity
from bandit_platform.service.platform import Platform
from bandit_platform.storage import repositories
from bandit_platform.storage.tables import SignInThrottleRow, UiSessionRow, UserRow

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScryptParameters:
    """scrypt's cost parameters: CPU/memory cost `n` (a power of 2), block size `r`,
    parallelism `p`. Memory used is about `128 * n * r` bytes (16 MiB by default)."""

    n: int = 2**14
    r: int = 8
    p: int = 1


#: Parameters of new hashes. Raise them here; older hashes are upgraded at sign-in.
SCRYPT: Final = ScryptParameters()
SALT_BYTES: Final = 16
KEY_BYTES: Final = 32
MIN_PASSWORD_LENGTH: Final = 12
MAX_PASSWORD_LENGTH: Final = 1024
#: Don't write `last_seen_at` more often than this (a page view is not worth a write each).
TOUCH_INTERVAL: Final = timedelta(seconds=60)
#: Ended sessions are deleted this long after they expired (kept a while for audits).
SESSION_RETENTION: Final = timedelta(days=30)
#: Failed sign-ins for one username within `SIGN_IN_WINDOW` that lock it.
SIGN_IN_MAX_FAILURES: Final = 5
SIGN_IN_WINDOW: Final = timedelta(minutes=15)
#: How long a locked username stays locked.
SIGN_IN_LOCK: Final = timedelta(minutes=15)
#: How often one service deletes the throttle rows that no longer count.
THROTTLE_CLEANUP_INTERVAL: Final = timedelta(minutes=1)
_USERNAME = re.compile(r"[a-z0-9][a-z0-9._@-]{0,63}")
_USERS = cast(sa.Table, getattr(UserRow, "__table__"))  # noqa: B009 (untyped)
_SESSIONS = cast(sa.Table, getattr(UiSessionRow, "__table__"))  # noqa: B009
_THROTTLES = cast(sa.Table, getattr(SignInThrottleRow, "__table__"))  # noqa: B009


class SignInLocked(DomainError):
    """Too many failed sign-ins for this username: refused until `retry_after` seconds pass.

    The message is the same whether or not the username exists.
    """

    status_hint = 429

    def __init__(self, retry_after: int) -> None:
        minutes = max(1, math.ceil(retry_after / 60))
        super().__init__(
            "Too many failed sign-ins for this username. Try again in "
            f"{minutes} minute{'s' if minutes != 1 else ''}.",
            field="username",
        )
        self.retry_after = max(1, retry_after)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _scrypt(password: str, salt: bytes, params: ScryptParameters) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=params.n,
        r=params.r,
        p=params.p,
        maxmem=256 * params.n * params.r + 1024 * 1024,
        dklen=KEY_BYTES,
    )


def hash_password(password: str, params: ScryptParameters = SCRYPT) -> str:
    """`scrypt$n$r$p$salt$hash` of a password, with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(password, salt, params)
    return f"scrypt${params.n}${params.r}${params.p}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[ScryptParameters, bytes, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return None
    try:
        params = ScryptParameters(int(parts[1]), int(parts[2]), int(parts[3]))
        return params, base64.b64decode(parts[4]), base64.b64decode(parts[5])
    except ValueError:
        return None


def verify_password(password: str, encoded: str) -> bool:
    """Whether `password` matches the encoded hash (constant-time comparison)."""
    parsed = _parse(encoded)
    if parsed is None:
        return False
    params, salt, expected = parsed
    return hmac.compare_digest(_scrypt(password, salt, params), expected)


def needs_rehash(encoded: str, params: ScryptParameters = SCRYPT) -> bool:
    """Whether a hash was made under other parameters than the current ones."""
    parsed = _parse(encoded)
    return parsed is None or parsed[0] != params


def token_hash(token: str) -> str:
    """What the database stores of a session token (its SHA-256, hex).

    A session token carries 256 bits of randomness, so a fast hash suffices.
    """
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_username(username: str) -> str:
    """Lower-cased, stripped; 1 to 64 of `a-z 0-9 . _ @ -`, starting with a letter or digit.

    Raises:
        InvalidInput: anything else (field `username`).
    """
    name = username.strip().lower()
    if not _USERNAME.fullmatch(name):
        raise InvalidInput(
            "1 to 64 characters of a-z, 0-9, '.', '_', '@', '-', starting with a letter or digit",
            field="username",
        )
    return name


@dataclass(frozen=True)
class UserView:
    """A user as an admin sees it (never the hash)."""

    user_id: int
    username: str
    role: Role
    created_at: datetime
    disabled_at: datetime | None


@dataclass(frozen=True)
class NewSession:
    """A session just started: `token` goes to the browser once and is not stored."""

    token: str
    session: UiSession


def _identity(row: UserRow) -> UserIdentity:
    assert row.id is not None
    return UserIdentity(row.id, row.username, Role(row.role))


class UserService:
    """Creates users, checks passwords and keeps the UI's sessions."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self._dummy_hash: str | None = None
        self._throttles_cleaned: datetime | None = None

    # --- accounts ----------------------------------------------------------------------------

    def create(self, username: str, password: str, role: Role, actor: str) -> UserIdentity:
        """Create a user; audited (without the password).

        Raises:
            InvalidInput: bad username or a password shorter than 12 characters.
            Conflict: the username is taken.
        """
        name = normalise_username(username)
        if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
            raise InvalidInput(
                f"needs {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters",
                field="password",
            )
        encoded = hash_password(password)
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            if session.exec(select(UserRow).where(_USERS.c.username == name)).first():
                raise Conflict(f"user {name!r} exists", field="username")
            row = UserRow(username=name, password_hash=encoded, role=role.value, created_at=now)
            session.add(row)
            session.flush()
            repositories.audit(
                session,
                at=now,
                actor=actor,
                action="user.create",
                experiment_id=None,
                details={"username": name, "role": role.value},
            )
            return _identity(row)

    def disable(self, username: str, actor: str) -> None:
        """Disable a user and end their sessions; audited.

        Raises:
            NotFound: no such user.
        """
        name = username.strip().lower()
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            row = session.exec(select(UserRow).where(_USERS.c.username == name)).first()
            if row is None:
                raise NotFound(f"no user {name!r}", field="username")
            if row.disabled_at is None:
                row.disabled_at = now
                session.add(row)
                session.execute(
                    sa.update(_SESSIONS)
                    .where(_SESSIONS.c.user_id == row.id, _SESSIONS.c.revoked_at.is_(None))
                    .values(revoked_at=now)
                )
                repositories.audit(
                    session,
                    at=now,
                    actor=actor,
                    action="user.disable",
                    experiment_id=None,
                    details={"username": name},
                )

    def all(self) -> list[UserView]:
        """Every user, by username."""
        with self.platform.read_session() as session:
            rows = session.exec(select(UserRow).order_by(_USERS.c.username)).all()
        return [
            UserView(r.id or 0, r.username, Role(r.role), r.created_at, r.disabled_at) for r in rows
        ]

    # --- sign-in -----------------------------------------------------------------------------

    def authenticate(self, username: str, password: str) -> UserIdentity | None:
        """The user with this password, or None (unknown, disabled or wrong password).

        Always runs scrypt once, so the time taken does not reveal whether the user exists.
        A correct password under older scrypt parameters is rehashed under the current ones.
        Every failure counts against the username (known or not); a successful sign-in
        clears the count.

        Raises:
            SignInLocked: the username is locked after too many failures, even when the
                password is right.
        """
        name = username.strip().lower()
        key = name[:64]
        password = password[:MAX_PASSWORD_LENGTH]
        now = self.platform.clock()
        with self.platform.read_session() as session:
            throttle = session.get(SignInThrottleRow, key)
            row = session.exec(select(UserRow).where(_USERS.c.username == name)).first()
        if throttle is not None:
            self._refuse_if_locked(throttle.locked_until, now, key)
        if row is None:
            verify_password(password, self._dummy())
            self._failed(key, now)
            return None
        if not verify_password(password, row.password_hash) or row.disabled_at is not None:
            self._failed(key, now)
            return None
        self._succeeded(key, now)
        if needs_rehash(row.password_hash):
            self._rehash(row, password)
        return _identity(row)

    def sign_in_lock(self, username: str) -> datetime | None:
        """Until when this username is locked, or None."""
        now = self.platform.clock()
        with self.platform.read_session() as session:
            throttle = session.get(SignInThrottleRow, username.strip().lower()[:64])
        if throttle is None or throttle.locked_until is None or throttle.locked_until <= now:
            return None
        return throttle.locked_until

    @staticmethod
    def _refuse_if_locked(locked_until: datetime | None, now: datetime, key: str) -> None:
        if locked_until is not None and locked_until > now:
            logger.warning("sign-in refused: username %r is locked until %s", key, locked_until)
            raise SignInLocked(math.ceil((locked_until - now).total_seconds()))

    def _throttle_row(self, session: Session, key: str, now: datetime) -> SignInThrottleRow:
        """The username's throttle row, created if missing and locked for this transaction."""
        dialect = self.platform.engine.dialect.name
        insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(_THROTTLES)
        session.execute(
            insert.values(
                username=key, failures=0, window_started_at=now, locked_until=None
            ).on_conflict_do_nothing(index_elements=[_THROTTLES.c.username])
        )
        found = session.exec(
            select(SignInThrottleRow)
            .where(_THROTTLES.c.username == key)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
        return found

    def _failed(self, key: str, now: datetime) -> None:
        """Count a failed sign-in; the `SIGN_IN_MAX_FAILURES`th within the window locks."""
        with self.platform.session() as session, session.begin():
            row = self._throttle_row(session, key, now)
            if row.locked_until is not None and row.locked_until > now:
                return  # locked meanwhile by a concurrent failure
            if now - row.window_started_at >= SIGN_IN_WINDOW or row.locked_until is not None:
                row.failures, row.window_started_at, row.locked_until = 0, now, None
            row.failures += 1
            locked = row.failures >= SIGN_IN_MAX_FAILURES
            if locked:
                row.locked_until = now + SIGN_IN_LOCK
            session.add(row)
            repositories.audit(
                session,
                at=now,
                actor="ui",
                action="user.sign_in_locked" if locked else "user.sign_in_failed",
                experiment_id=None,
                details={"username": key, "failures": row.failures},
            )
        self._forget_old_throttles(now)
        if locked:
            logger.warning(
                "username %r locked for %s after %d failed sign-ins",
                key,
                SIGN_IN_LOCK,
                SIGN_IN_MAX_FAILURES,
            )
        else:
            logger.info("failed sign-in for username %r", key)

    def _succeeded(self, key: str, now: datetime) -> None:
        """Clear the username's count, unless a lock started meanwhile (then refuse)."""
        with self.platform.session() as session, session.begin():
            row = session.exec(
                select(SignInThrottleRow)
                .where(_THROTTLES.c.username == key)
                .with_for_update()
                .execution_options(populate_existing=True)
            ).first()
            if row is None:
                return
            self._refuse_if_locked(row.locked_until, now, key)
            session.execute(sa.delete(_THROTTLES).where(_THROTTLES.c.username == key))

    def _forget_old_throttles(self, now: datetime) -> None:
        """Delete throttle rows whose window and lock are over (at most once a minute; in a
        transaction of its own, so that no row lock is held while waiting for others)."""
        last = self._throttles_cleaned
        if last is not None and abs(now - last) < THROTTLE_CLEANUP_INTERVAL:
            return
        self._throttles_cleaned = now
        with self.platform.session() as session, session.begin():
            session.execute(
                sa.delete(_THROTTLES).where(
                    _THROTTLES.c.window_started_at < now - SIGN_IN_WINDOW,
                    sa.or_(_THROTTLES.c.locked_until.is_(None), _THROTTLES.c.locked_until < now),
                )
            )

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = hash_password(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _rehash(self, row: UserRow, password: str) -> None:
        with self.platform.session() as session, session.begin():
            session.execute(
                sa.update(_USERS)
                .where(_USERS.c.id == row.id)
                .values(password_hash=hash_password(password))
            )

    # --- sessions ----------------------------------------------------------------------------

    def start_session(self, user: UserIdentity) -> NewSession:
        """Open a session for a signed-in user; the token is returned, only its hash stored.

        Sessions that expired more than `SESSION_RETENTION` ago are deleted on the way.
        """
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(32)
        now = self.platform.clock()
        expires = now + timedelta(hours=self.platform.settings.ui_session_hours)
        with self.platform.session() as session, session.begin():
            session.execute(
                sa.delete(_SESSIONS).where(_SESSIONS.c.expires_at < now - SESSION_RETENTION)
            )
            session.add(
                UiSessionRow(
                    token_hash=token_hash(token),
                    user_id=user.user_id,
                    csrf_token=csrf,
                    created_at=now,
                    last_seen_at=now,
                    expires_at=expires,
                )
            )
            repositories.audit(
                session,
                at=now,
                actor=user.actor,
                action="user.sign_in",
                experiment_id=None,
                details={},
            )
        return NewSession(token, UiSession(user, csrf, expires))

    def session(self, token: str) -> UiSession | None:
        """The live session of a token, or None when unknown, revoked, expired, idle for too
        long, or its user is disabled. Records the use (at most once a minute)."""
        if not token or len(token) > 128:
            return None
        hashed = token_hash(token)
        now = self.platform.clock()
        idle = timedelta(minutes=self.platform.settings.ui_idle_minutes)
        with self.platform.read_session() as session:
            row = session.get(UiSessionRow, hashed)
            user = None if row is None else session.get(UserRow, row.user_id)
        if row is None or user is None:
            return None
        if (
            row.revoked_at is not None
            or user.disabled_at is not None
            or now >= row.expires_at
            or now - row.last_seen_at >= idle
        ):
            return None
        if now - row.last_seen_at >= TOUCH_INTERVAL:
            with self.platform.session() as session, session.begin():
                session.execute(
                    sa.update(_SESSIONS)
                    .where(_SESSIONS.c.token_hash == hashed)
                    .values(last_seen_at=now)
                )
        return UiSession(_identity(user), row.csrf_token, row.expires_at)

    def end_session(self, token: str) -> None:
        """Sign out: revoke the session of this token (nothing happens for an unknown one)."""
        now = self.platform.clock()
        with self.platform.session() as session, session.begin():
            session.execute(
                sa.update(_SESSIONS)
                .where(
                    _SESSIONS.c.token_hash == token_hash(token),
                    _SESSIONS.c.revoked_at.is_(None),
                )
                .values(revoked_at=now)
            )
