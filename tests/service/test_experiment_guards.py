"""Changes that would corrupt learning are refused once an experiment has started."""

from __future__ import annotations

import msgspec
import pytest

from bandit_platform.demo import DEMO_EXPERIMENT_KEY, demo_config
from bandit_platform.domain.errors import InvalidInput
from bandit_platform.service.experiments import ExperimentService
from tests.conftest import Demo


def test_the_learning_horizon_cannot_be_renamed_after_start(demo: Demo) -> None:
    config = demo_config()
    renamed = msgspec.structs.replace(
        config, reward=msgspec.structs.replace(config.reward, name="applied_7d")
    )
    service = ExperimentService(demo.platform)
    with pytest.raises(InvalidInput) as error:
        service.update(DEMO_EXPERIMENT_KEY, renamed, "test")
    assert error.value.field == "reward.name"
    assert service.get(DEMO_EXPERIMENT_KEY).version == 1
