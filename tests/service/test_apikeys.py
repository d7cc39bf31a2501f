"""API keys: shown once, stored hashed, compared in constant time, revocable within a bound,
with their own rate limits."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bandit_platform.cli import main
from bandit_platform.domain.errors import InvalidInput, NotFound
from bandit_platform.service import apikeys
from bandit_platform.service.apikeys import API_KEY_CACHE_SECONDS, ApiKeyService
from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from tests.conftest import PSEUDONYM_KEY, FakeClock


def test_a_revoked_key_stops_working_and_the_revocation_is_audited(platform: Platform) -> None:
    service = ApiKeyService(platform)
    key = service.create("mobile-backend")
    assert service.verify(key.secret) is not None
    prefix = key.secret.split("_")[1]

    service.revoke(prefix, actor="ops")

    assert service.verify(key.secret) is None
    with platform.read_session() as session:
        stored = session.execute(sa.text("SELECT key_hash FROM api_keys")).scalar_one()
        actions = session.execute(sa.text("SELECT action FROM audit_log")).scalars().all()
    assert key.secret not in stored  # only the hash is kept
    assert "apikey.revoke" in actions


def test_revoking_an_unknown_prefix_names_the_field(platform: Platform) -> None:
    with pytest.raises(NotFound) as error:
        ApiKeyService(platform).revoke("000000000000", actor="ops")
    assert error.value.field == "prefix"


class FakeMonotonic:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_keys_are_compared_in_constant_time(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = ApiKeyService(platform).create("app")
    compared: list[tuple[str, str]] = []
    original = apikeys.hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(apikeys.hmac, "compare_digest", spy)
    forged = key.secret[:-4] + ("AAAA" if not key.secret.endswith("AAAA") else "BBBB")
    assert ApiKeyService(platform).verify(forged) is None  # right prefix, wrong secret
    assert ApiKeyService(platform).verify(key.secret) is not None
    assert len(compared) == 2
    assert all(len(a) == len(b) == 64 for a, b in compared)  # SHA-256 digests, never secrets


def test_a_verified_key_is_cached_for_a_bounded_time(platform: Platform) -> None:
    monotonic = FakeMonotonic()
    service = ApiKeyService(platform, monotonic=monotonic)
    key = ApiKeyService(platform).create("app", rate_limit_per_second=7)
    for _ in range(50):
        found = service.authenticate(key.secret)
        assert found is not None
        assert found.rate_limit_per_second == 7
    assert service.lookups == 1

    monotonic.now += API_KEY_CACHE_SECONDS
    assert service.authenticate(key.secret) is not None
    assert service.lookups == 2


def test_a_key_revoked_by_another_process_stops_within_the_cache_bound(
    platform: Platform, clock: FakeClock
) -> None:
    monotonic = FakeMonotonic()
    service = ApiKeyService(platform, monotonic=monotonic)
    key = ApiKeyService(platform).create("app")
    assert service.verify(key.secret) is not None
    # What `bandit-platform apikey revoke` in another process writes:
    with platform.engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE api_keys SET revoked_at = :t WHERE prefix = :p"),
            {"t": clock(), "p": key.prefix},
        )
    monotonic.now += API_KEY_CACHE_SECONDS - 0.01
    assert service.verify(key.secret) is not None  # still trusted from memory, at most...
    monotonic.now += 0.01
    assert service.verify(key.secret) is None  # ...this long


def test_a_key_revoked_in_this_process_stops_at_once_everywhere_in_it(
    platform: Platform,
) -> None:
    serving = ApiKeyService(platform, monotonic=FakeMonotonic())
    key = ApiKeyService(platform).create("app")
    assert serving.verify(key.secret) is not None
    ApiKeyService(platform).revoke(key.prefix, actor="ops")  # another instance
    assert serving.verify(key.secret) is None


def test_unknown_keys_are_not_cached(platform: Platform) -> None:
    service = ApiKeyService(platform)
    for _ in range(3):
        assert service.verify("bpk_000000000000_nothing") is None
    assert service.lookups == 3
    assert service.verify("not-a-key") is None
    assert service.lookups == 3  # malformed: refused without a look-up


def test_rate_limits_are_validated_and_listed(platform: Platform) -> None:
    service = ApiKeyService(platform)
    with pytest.raises(InvalidInput) as error:
        service.create("app", rate_limit_per_second=-1)
    assert error.value.field == "rate_limit_per_second"
    service.create("default")
    service.create("limited", rate_limit_per_second=25)
    service.create("unlimited", rate_limit_per_second=0)
    listed = {k.name: k.rate_limit_per_second for k in service.all()}
    assert listed == {"default": None, "limited": 25, "unlimited": 0}


def test_the_cli_creates_a_key_with_a_rate_limit_and_lists_it(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", settings.database_url)
    monkeypatch.setenv("BANDIT_PSEUDONYM_KEY", PSEUDONYM_KEY.decode())
    monkeypatch.delenv("BANDIT_RATE_LIMIT_PER_SECOND", raising=False)
    assert main(["apikey", "create", "--name", "mobile", "--rate-limit", "250"]) == 0
    secret = capsys.readouterr().out.strip()
    assert main(["apikey", "create", "--name", "batch"]) == 0
    capsys.readouterr()
    assert main(["apikey", "create", "--name", "bad", "--rate-limit", "-5"]) == 2
    assert "rate_limit_per_second" in capsys.readouterr().err

    assert main(["apikey", "list"]) == 0
    listing = capsys.readouterr().out
    mobile = next(line for line in listing.splitlines() if "mobile" in line)
    batch = next(line for line in listing.splitlines() if "batch" in line)
    assert secret.split("_")[1] in mobile
    assert "250" in mobile
    assert "active" in mobile
    assert "default (1000)" in batch
    assert secret not in listing
