"""Shared fixtures. Real data lives in ../shared/data beside the repository; tests that need it
skip with a clear reason when it is absent (a user's clone has no ../shared)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSURE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))

os.environ.setdefault("MEDSURE_NO_PROGRESS", "1")


def shared_path(*parts: str) -> Path:
    """Path under ../shared/data, or skip the calling test with the reason."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (tests need ../shared/data)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not available: {SHARED_DATA} is absent (tests need ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance on 2 CPUs for one test module (tests that use it importorskip ray first)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'medsure[ray]')")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"MEDSURE_NO_PROGRESS": "1"}},
    )
    yield
    ray.shutdown()
