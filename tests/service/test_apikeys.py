"""API keys: shown once, stored hashed, revocable."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from bandit_platform.domain.errors import NotFound
from bandit_platform.service.apikeys import ApiKeyService
from bandit_platform.service.platform import Platform


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
