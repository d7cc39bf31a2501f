"""Sticky groups survive every configuration change that leaves the split alone.

A customer's group is a function of (pseudonym, experiment salt, split): the salt belongs to
the experiment, not to a configuration version. So after any sequence of approved changes to
offers' presentation, rewards, explorer, floor, caps or consent rules, every customer is still
in the group of their first decision; a change of the split itself moves customers exactly as
`assign_group` says.
"""

from __future__ import annotations

import string
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bandit_platform.demo import DEMO_EXPERIMENT_KEY
from bandit_platform.domain.access import AppIdentity
from bandit_platform.domain.config import EpsilonGreedy, ExperimentConfig, TrafficSplit
from bandit_platform.domain.decisions import Group
from bandit_platform.policies.assignment import assign_group
from bandit_platform.storage import repositories
from tests.conftest import Demo
from tests.service.learning_support import DEMO, apply_change, decide, identity

CUSTOMERS = [f"sticky-config-{i}" for i in range(40)]

#: Changes that do not touch `traffic`; each example applies a non-empty set of them.
CHANGES = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(string.ascii_letters + " -", min_size=1, max_size=40).map(
            lambda s: s.strip() or "renamed"
        ),
        "description": st.text(string.printable, max_size=200),
        "probability_floor": st.sampled_from([0.0, 0.005, 0.02, 0.05]),
        "explorer": st.sampled_from([0.05, 0.2, 0.5]).map(lambda e: EpsilonGreedy(epsilon=e)),
        "include_no_offer": st.booleans(),
        "frequency_caps": st.sampled_from([[], DEMO.frequency_caps]),
        "consent_required": st.booleans(),
        "reward": st.sampled_from([(24.0, 0.0), (72.0, -0.1), (168.0, 0.0)]).map(
            lambda w: msgspec.structs.replace(
                DEMO.reward, attribution_window_hours=w[0], default_reward=w[1]
            )
        ),
    },
).filter(bool)


def _groups(demo: Demo, app: AppIdentity) -> dict[str, Group]:
    return {c: decide(demo.platform, app, c).group for c in CUSTOMERS}


def _version_and_salt(demo: Demo) -> tuple[int, str]:
    with demo.platform.session() as session:
        row = repositories.experiment_by_key(session, DEMO_EXPERIMENT_KEY)
    assert row is not None
    return row.version, row.salt


def test_groups_are_stable_under_changes_that_keep_the_split(demo: Demo) -> None:
    app = identity(demo)
    first = _groups(demo, app)
    assert set(first.values()) == set(Group), "the sample must cover every group"
    _, salt = _version_and_salt(demo)
    current: list[ExperimentConfig] = [DEMO]

    @settings(
        max_examples=12,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(changes=CHANGES)
    def change_and_decide(changes: dict[str, Any]) -> None:
        version_before, _ = _version_and_salt(demo)
        config = msgspec.structs.replace(current[-1], **changes)
        apply_change(demo.platform, DEMO_EXPERIMENT_KEY, config, actor="test")
        current.append(config)
        version, salt_now = _version_and_salt(demo)
        assert version == version_before + 1  # the change is served
        assert salt_now == salt
        assert _groups(demo, app) == first

    change_and_decide()
    assert len(current) > 1

    # The split itself: customers move, each exactly to the group the new split gives.
    split = TrafficSplit(holdout=30, ab=30, bandit=40)
    apply_change(
        demo.platform,
        DEMO_EXPERIMENT_KEY,
        msgspec.structs.replace(current[-1], traffic=split),
        actor="test",
    )
    moved = _groups(demo, app)
    expected = {c: assign_group(demo.platform.pseudonym(c), salt, split) for c in CUSTOMERS}
    assert moved == expected
    assert moved != first
