"""Properties of the customer pseudonym (`Platform.pseudonym`, HMAC-SHA-256 under the
pseudonym key): it is what the decision path stores and what sticky assignment hashes.

Keyed (another key gives another pseudonym, so a leaked log cannot be joined to another
deployment's), deterministic (the same customer keeps their group and caps), of fixed length
and never the customer id itself. `tests/policies/test_assignment.py` covers the bucket and the
split; `tests/service/test_sticky_assignment.py` the groups across configuration changes.
"""

from __future__ import annotations

import hashlib
import hmac
import string
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bandit_platform.service.platform import Platform
from bandit_platform.settings import Settings
from tests.conftest import PSEUDONYM_KEY

customer_ids = st.text(min_size=0, max_size=128)
keys = st.binary(min_size=16, max_size=64)
HEX = frozenset(string.hexdigits.lower())


@dataclass
class Platforms:
    """Platforms by pseudonym key, made on first use (no database work happens)."""

    url: str
    made: dict[bytes, Platform] = field(default_factory=dict)
    #: A second platform with the test key.
    twin: Platform = field(init=False)

    def __post_init__(self) -> None:
        self.twin = self.new(PSEUDONYM_KEY)

    def new(self, key: bytes) -> Platform:
        return Platform(Settings(database_url=self.url, pseudonym_key=key))

    def pseudonym(self, key: bytes, customer: str) -> str:
        if key not in self.made:
            self.made[key] = self.new(key)
        return self.made[key].pseudonym(customer)


@pytest.fixture(scope="module")
def platforms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platforms]:
    found = Platforms(f"sqlite:///{tmp_path_factory.mktemp('pseudonyms') / 'unused.db'}")
    yield found
    for platform in [*found.made.values(), found.twin]:
        platform.close()


@settings(max_examples=300, deadline=None)
@given(customer=customer_ids)
def test_pseudonym_is_deterministic_fixed_length_hex_and_never_the_id(
    platforms: Platforms, customer: str
) -> None:
    first = platforms.pseudonym(PSEUDONYM_KEY, customer)
    assert platforms.pseudonym(PSEUDONYM_KEY, customer) == first
    # Another platform with the same key (another worker, a restart) agrees.
    assert platforms.twin.pseudonym(customer) == first
    assert len(first) == 64
    assert set(first) <= HEX
    assert first != customer


@settings(max_examples=300, deadline=None)
@given(first=customer_ids, second=customer_ids)
def test_different_customers_get_different_pseudonyms(
    platforms: Platforms, first: str, second: str
) -> None:
    if first != second:
        mine = platforms.pseudonym(PSEUDONYM_KEY, first)
        assert mine != platforms.pseudonym(PSEUDONYM_KEY, second)


@settings(max_examples=60, deadline=None)
@given(key=keys, other=keys, customer=customer_ids)
def test_pseudonyms_are_keyed(
    platforms: Platforms, key: bytes, other: bytes, customer: str
) -> None:
    """Another key, another pseudonym; the value is the documented HMAC-SHA-256, so a plain
    (unkeyed) hash of the id, which anyone could recompute, is never what is stored."""
    mine = platforms.pseudonym(key, customer)
    assert mine == hmac.new(key, customer.encode(), hashlib.sha256).hexdigest()
    assert mine != hashlib.sha256(customer.encode()).hexdigest()
    if key != other:
        assert platforms.pseudonym(other, customer) != mine


def test_a_short_pseudonym_key_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Settings(database_url="sqlite://", pseudonym_key=b"too-short")
