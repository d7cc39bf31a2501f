"""Sticky assignment of customers to the holdout, A-B and bandit groups.

The group is a pure function of (pseudonymous customer key, experiment salt): the same customer
lands in the same group on every request, in every worker and after every restart, and a new
salt (a new experiment) reshuffles customers independently of other experiments.
"""

from __future__ import annotations

import hashlib

from bandit_platform.domain.config import TrafficSplit
from bandit_platform.domain.decisions import Group

#: Resolution of the split: 1/10,000 of the population (0.01 percent).
BUCKETS = 10_000


def bucket(customer_key: str, salt: str) -> int:
    """The customer's bucket in `[0, BUCKETS)` from SHA-256 of salt and key."""
    digest = hashlib.sha256(f"{salt}:{customer_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_group(customer_key: str, salt: str, split: TrafficSplit) -> Group:
    """The customer's sticky group under the configured split (percentages)."""
    position = bucket(customer_key, salt)
    holdout_end = round(split.holdout * BUCKETS / 100.0)
    ab_end = holdout_end + round(split.ab * BUCKETS / 100.0)
    if position < holdout_end:
        return Group.HOLDOUT
    if position < ab_end:
        return Group.AB
    return Group.BANDIT
