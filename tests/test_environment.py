"""medsure.training.environment.describe_environment: what a benchmark writes beside its numbers."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from medsure import __version__
from medsure.training import environment
from medsure.training.environment import _git_commit, cpu_has_bf16, default_bf16, describe_environment

KEYS = {
    "medsure_version",
    "git_commit",
    "python",
    "torch",
    "numpy",
    "monai",
    "platform",
    "cpu_model",
    "cpu_count",
    "cpu_bf16",
    "device",
    "num_threads",
    "autocast_bf16",
    "wall_time_s",
}


def test_describes_versions_cpu_threads_and_autocast_of_this_process() -> None:
    env = describe_environment("cpu")
    assert set(env) == KEYS
    assert env["medsure_version"] == __version__
    assert env["torch"] == torch.__version__ and env["numpy"] == np.__version__
    assert env["device"] == "cpu"
    assert env["num_threads"] == torch.get_num_threads()
    assert env["cpu_bf16"] is cpu_has_bf16()
    assert env["autocast_bf16"] is default_bf16(torch.device("cpu"))  # the run's default when not given
    assert env["wall_time_s"] is None
    assert isinstance(env["cpu_model"], str) and env["cpu_model"]
    # JSON-ready: the benchmarks write it into their result files as is
    assert json.loads(json.dumps(env)) == env


def test_explicit_settings_win_and_wall_time_is_rounded() -> None:
    env = describe_environment(torch.device("cpu"), autocast=False, num_threads=3, wall_time_s=12.34567)
    assert env["autocast_bf16"] is False and env["num_threads"] == 3 and env["wall_time_s"] == 12.346
    assert describe_environment("cpu", autocast=True)["autocast_bf16"] is True
    assert describe_environment("cpu", autocast=1)["autocast_bf16"] is True  # a bool, whatever truthy value came


def test_git_commit_of_this_checkout_and_none_outside_one(tmp_path: Path) -> None:
    repo = Path(environment.__file__).resolve().parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout (installed package) or no git")
    commit = _git_commit(repo)
    assert commit is not None and re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
    assert commit.split("+")[0] == head.stdout.strip()
    assert _git_commit(tmp_path) is None  # no checkout there: None, not an error
    with mock.patch.object(subprocess, "run", side_effect=FileNotFoundError("git")):
        assert _git_commit(repo) is None  # no git installed


def test_cpu_without_bf16_flags_reads_false() -> None:
    flags = "processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse avx2\n"
    with mock.patch("builtins.open", mock.mock_open(read_data=flags)):
        assert cpu_has_bf16() is False
    with mock.patch("builtins.open", mock.mock_open(read_data=flags.replace("avx2", "avx2 avx512_bf16"))):
        assert cpu_has_bf16() is True
    with mock.patch("builtins.open", side_effect=OSError("no /proc")):
        assert cpu_has_bf16() is False
