from __future__ import annotations

import pytest

from fastdup_ray.sample import make_sample_dataset


@pytest.fixture(scope="session")
def ray_local():
    """A real local Ray runtime with 2 CPUs, shared by the integration tests."""
    ray = pytest.importorskip("ray")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def sample(tmp_path_factory):
    """12 photo-like scenes, 6 near-duplicate copies, a truncated JPEG, a nested folder."""
    return make_sample_dataset(tmp_path_factory.mktemp("sample"))
