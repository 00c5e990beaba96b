"""MC dropout seeded per case: samples do not depend on batch size, shard size or shard layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from medsure.artifact import load_predictions
from medsure.cli import main
from medsure.errors import MedsureInputError
from medsure.predict import _case_dropout, predict
from medsure.shards import shard_ranges

from realpreds import split_datasets, trained_run

N_CASES = 21


def _sharded(run, data, size: int, **kw) -> np.ndarray:
    """MC logits of ``data`` predicted shard by shard (each shard knows its first case)."""
    parts = [
        predict(run, data.subset(np.arange(a, b)), first_case=a, **kw).logits for a, b in shard_ranges(len(data), size)
    ]
    return np.concatenate(parts, axis=1)


def test_mc_dropout_equal_for_shard_sizes_3_and_7_and_whole() -> None:
    run = trained_run("pneumoniamnist")
    data = split_datasets("pneumoniamnist")["test"].subset(np.arange(N_CASES))
    whole = predict(run, data, mc_samples=4, seed=11, batch_size=5, device="cpu").logits
    for size in (3, 7):
        sharded = _sharded(run, data, size, mc_samples=4, seed=11, batch_size=64, device="cpu")
        # the same masks; float sums of a conv may differ in the last bits between batch sizes
        np.testing.assert_allclose(sharded, whole, rtol=1e-5, atol=1e-5)
    assert not np.allclose(whole[0], whole[1])  # the passes differ
    other = predict(run, data, mc_samples=4, seed=12, batch_size=5, device="cpu").logits
    assert not np.allclose(other, whole)  # and the seed matters
    # a shard that forgets its offset gets other masks: the offset is what aligns them
    wrong = predict(run, data.subset(np.arange(7, 14)), mc_samples=4, seed=11, device="cpu").logits
    assert not np.allclose(wrong, whole[:, 7:14])


def test_predict_cli_mc_shard_folder_equals_single_file(tmp_path: Path) -> None:
    run = str(trained_run("pneumoniamnist").run_dir)
    args = ["predict", "--run", run, "--split", "test", "--mc-samples", "3", "--device", "cpu"]
    assert main([*args, "--out", str(tmp_path / "one.npz")]) == 0
    assert main([*args, "--shard-size", "170", "--out", str(tmp_path / "shards")]) == 0
    one, shards = load_predictions(tmp_path / "one.npz"), load_predictions(tmp_path / "shards")
    np.testing.assert_array_equal(shards.ids, one.ids)
    np.testing.assert_allclose(shards.logits, one.logits, rtol=1e-5, atol=1e-5)


def _apply(module: nn.Module, x: torch.Tensor, first: int, seed: int = 0, t: int = 0) -> torch.Tensor:
    module.eval()
    with _case_dropout(module, seed, True) as masks:
        masks.start(first, x.shape[0], t, x.device)
        return module(x)


def test_case_masks_drop_at_rate_p_and_scale_the_rest() -> None:
    p, n = 0.3, 40_000
    out = _apply(nn.Dropout(p), torch.ones(5, n), first=0)
    kept = out != 0
    np.testing.assert_allclose(out[kept].numpy(), 1 / (1 - p), rtol=1e-6)
    dropped = int((~kept).sum())
    # binomial test of the drop rate over 200,000 elements, and per case
    assert stats.binomtest(dropped, out.numel(), p).pvalue > 1e-4
    for row in kept:
        assert stats.binomtest(int((~row).sum()), n, p).pvalue > 1e-4
    # masks of different cases, and of different passes, are not the same
    assert not torch.equal(kept[0], kept[1])
    assert not torch.equal(kept, _apply(nn.Dropout(p), torch.ones(5, n), first=0, t=1) != 0)


def test_case_masks_do_not_depend_on_the_batch() -> None:
    x = torch.randn(9, 3, 8, 8)
    for layer in (nn.Dropout(0.5), nn.Dropout2d(0.5)):
        batch = _apply(layer, x, first=100)
        alone = _apply(layer, x[4:5], first=104)
        assert torch.equal(batch[4:5], alone)
        assert torch.equal(_apply(layer, x[2:7], first=102), batch[2:7])


def test_dropout2d_drops_whole_channels() -> None:
    out = _apply(nn.Dropout2d(0.5), torch.ones(4, 64, 5, 5), first=3)
    per_channel = out.flatten(2)
    assert torch.all(per_channel.amin(2) == per_channel.amax(2))  # a channel is all kept or all dropped
    assert 0 < int((per_channel[..., 0] == 0).sum()) < 4 * 64


def test_mc_dropout_refuses_unsupported_dropout_layers() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.AlphaDropout(0.2), nn.Linear(8, 2))
    data = split_datasets("pneumoniamnist")["test"].subset(np.arange(3))
    data_small = data.subset(np.arange(3))
    with pytest.raises(MedsureInputError, match="AlphaDropout"):
        predict(net, data_small, mc_samples=2)
