"""Certification speed-ups and the sequential mode's rules (issue 11): batched noise that keeps the
stream, the late look schedule, futility and tolerance, the reused selection passes (union bound),
and the CLI options (bad input: exit 2, one line, nothing written)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import proportion_confint

from medsure.certify import certify_segmentation, evaluate_certification
from medsure.certify.smoothing import certify_labels, draw_noise, noisy_labels
from medsure.certify.stats import (
    binomial_pvalue_greater,
    chance_to_reach,
    clopper_pearson_lower,
    clopper_pearson_upper,
    futile,
    late_looks,
    reachable_threshold,
    reject,
)
from medsure.cli import main
from medsure.errors import MedsureInputError
from test_certify import Constant, Thresholds, _images

# ---- noise: one batched draw, the same stream ---------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 128, 128), (3, 4, 4), (1, 5, 5), (3, 7, 5)])
def test_batched_noise_is_the_per_sample_stream(shape: tuple[int, ...]) -> None:
    """Whatever the sample size (a multiple of 16 takes the batched path), the draws equal
    successive per-sample draws, so grouping samples into batches never changes them."""
    gen = torch.Generator().manual_seed(5)
    reference = torch.stack([torch.randn(shape, generator=gen) for _ in range(7)])
    gen = torch.Generator().manual_seed(5)
    grouped = torch.cat([draw_noise(3, shape, gen), draw_noise(1, shape, gen), draw_noise(3, shape, gen)])
    assert torch.equal(grouped, reference)


@pytest.mark.parametrize("size", [8, 10])  # 64 pixels: batched draw; 100 pixels: per-sample draws
def test_labels_and_certificates_do_not_depend_on_the_batch_size(size: int) -> None:
    image = torch.from_numpy(_images(1, size)[0][0]).permute(2, 0, 1).float() / 255.0
    model = Thresholds().eval()
    runs = []
    for batch in (1, 7, 64):
        gen = torch.Generator().manual_seed(11)
        labels = torch.cat(list(noisy_labels(model, image, 23, sigma=0.25, generator=gen, batch_size=batch)))
        cert = certify_segmentation(
            model, image, n_classes=3, n=40, alpha=0.05, generator=torch.Generator().manual_seed(3), batch_size=batch
        )
        runs.append((labels, cert))
    for labels, cert in runs[1:]:
        assert torch.equal(labels, runs[0][0])
        np.testing.assert_array_equal(cert.certified, runs[0][1].certified)
        np.testing.assert_array_equal(cert.counts, runs[0][1].counts)
    assert 0 < (runs[0][1].certified >= 0).mean() < 1  # the case certifies some pixels, not all


# ---- statistics of the stopping rules ------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 10, 100])
def test_clopper_pearson_upper_equals_statsmodels(n: int) -> None:
    k = np.arange(n + 1)
    ours = clopper_pearson_upper(k, n, 0.01)
    _, upper = proportion_confint(k, n, alpha=0.02, method="beta")
    np.testing.assert_allclose(ours, np.nan_to_num(upper, nan=1.0), atol=1e-10)
    # symmetry with the lower bound: the upper bound of k is one minus the lower bound of n - k
    np.testing.assert_allclose(ours, 1.0 - clopper_pearson_lower(n - k, n, 0.01), atol=1e-12)


def test_chance_to_reach_hand_case() -> None:
    """k_req is the smallest count whose last-look p-value clears the threshold; the chance is a binomial tail."""
    n_final, w, tau, threshold = 60, 0.5, 0.75, 1e-4
    pvals = binomial_pvalue_greater(np.arange(n_final + 1), n_final, tau) / w
    k_req = int(np.argmax(pvals <= threshold))
    assert pvals[k_req] <= threshold < pvals[k_req - 1]
    hits = np.array([0, 27, 28, 29, 30])
    got = chance_to_reach(hits, 30, n_final, w, threshold, tau, 0.8)
    expected = [sps.binom.sf(k_req - h - 1, n_final - 30, 0.8) for h in hits]
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert got[0] == 0.0 and got[-1] > 0.1 and np.all(np.diff(got[1:]) > 0)  # more hits, better chances
    assert np.all(chance_to_reach(hits, 30, n_final, w, -1.0, tau, 0.8) == 0)  # nothing reachable


def test_futility_flags_hopeless_pixels_and_spares_clear_ones() -> None:
    hits = np.array([0, 20, 35, 40])  # of 40 samples so far, 400 at the end
    threshold = 1e-7
    flags = futile(hits, 40, 400, 0.25, threshold, 0.75, 0.01)
    assert flags.tolist() == [True, True, False, False]
    # the rule's budget: over simulated pixels, the share given up at 40 samples that would have reached
    # the count they need by 400 is at most about 2 beta, whatever their true probability
    k_req = int(np.argmax(binomial_pvalue_greater(np.arange(401), 400, 0.75) / 0.25 <= threshold))
    rng = np.random.default_rng(0)
    for p in (0.6, 0.86, 0.9):
        first = rng.binomial(40, p, 50_000)
        reached = first + rng.binomial(360, p, first.size) >= k_req
        flagged = futile(first, 40, 400, 0.25, threshold, 0.75, 0.01)
        assert np.mean(flagged & reached) <= 0.02 + 3 * math.sqrt(0.02 / first.size)
        if p == 0.6:
            assert flagged.mean() > 0.5  # hopeless pixels are recognised early


def test_reachable_threshold_is_the_fixed_point_of_never_rejected() -> None:
    rng = np.random.default_rng(4)
    best = np.concatenate([rng.uniform(0, 1e-5, 40), rng.uniform(0, 1, 60)])
    for method in ("holm", "bh", "bonferroni"):
        t = reachable_threshold(best, 0.01, method)
        # what the correction rejects when every p-value reaches its best is exactly what clears t
        np.testing.assert_array_equal(reject(best, 0.01, method), best <= t)
    assert reachable_threshold(np.ones(5), 0.01, "holm") < 0


def test_late_looks_start_where_a_pixel_can_first_be_certified() -> None:
    n, m, alpha, tau = 500, 4096, 0.001, 0.75
    looks = late_looks(n, m, alpha, tau, n_looks=4)
    first = math.ceil(math.log(alpha / (4 * m)) / math.log(tau))  # tau^s <= alpha / (K m)
    assert looks[0] == first == 58 and looks[-1] == n and np.all(np.diff(looks) > 0) and len(looks) == 4
    assert tau ** (first - 1) > alpha / (4 * m)  # one pass earlier no pixel could be certified
    assert late_looks(100, m, alpha, tau, n_looks=4, offset=10)[0] == first - 10
    assert late_looks(100, m, alpha, tau, n_looks=1).tolist() == [100]


# ---- the sequential rules and the reused selection passes ----------------------------------------


def _stream(labels: torch.Tensor, used: list[int]):
    """A ``draw`` that replays stored label maps in order and records how many were taken."""
    position = [0]

    def draw(k: int) -> Iterator[torch.Tensor]:
        chunk = labels[position[0] : position[0] + k]
        position[0] += k
        used[0] = position[0]
        yield chunk

    return draw


def test_replayed_labels_give_the_live_certificate() -> None:
    """certify_labels on stored label maps returns what certify_segmentation returns live (the benchmark's replay)."""
    image = torch.from_numpy(_images(1, 12)[0][0]).permute(2, 0, 1).float() / 255.0
    model = Thresholds().eval()
    labels = torch.cat(
        list(noisy_labels(model, image, 210, sigma=0.25, generator=torch.Generator().manual_seed(9), batch_size=32))
    )
    kw = {"n_classes": 3, "n0": 10, "n": 200, "alpha": 0.01, "tau": 0.75}
    for options in ({}, {"sequential": True, "looks": "late", "futility": 0.01, "tolerance": 0.05}):
        live = certify_segmentation(model, image, generator=torch.Generator().manual_seed(9), **kw, **options)
        used = [0]
        replay = certify_labels(_stream(labels, used), **kw, **options)  # type: ignore[arg-type]
        np.testing.assert_array_equal(replay.certified, live.certified)
        assert replay.samples_used == live.samples_used == used[0]


def test_sequential_rules_stop_earlier_and_keep_certified_classes() -> None:
    images, masks = _images(2, 12)
    kw = {"task": "segmentation", "class_names": ["b", "m", "h"], "n": 400, "alpha": 0.01, "n_boot": 0, "sigma": 0.1}
    fixed = evaluate_certification(Thresholds().eval(), images, masks, **kw)
    plain = evaluate_certification(Thresholds().eval(), images, masks, sequential=True, looks="late", **kw)
    fast = evaluate_certification(
        Thresholds().eval(), images, masks, sequential=True, looks="late", futility=0.01, tolerance=0.1, **kw
    )
    # the tolerance stops while a few pixels are open, at a small cost in certified pixels
    assert fast.samples_used.mean() < 0.6 * plain.samples_used.mean()
    assert (fast.certified >= 0).mean() > (plain.certified >= 0).mean() - 0.05
    for seq in (plain, fast):
        certified = seq.certified >= 0
        np.testing.assert_array_equal(seq.certified[certified], fixed.selected[certified])
        assert certified.any()
    assert np.all(fast.samples_used <= plain.samples_used)
    # stopping for futility/tolerance only abstains: everything it certifies the longer run certifies too
    assert np.all((fast.certified >= 0) <= (plain.certified >= 0))
    d = fast.to_dict()
    assert d["sequential_settings"] == {"looks": "late", "round_size": 10, "futility": 0.01, "tolerance": 0.1}
    assert d["selection"] == "split"
    # explicit looks: only these counts are ever used
    explicit = evaluate_certification(Thresholds().eval(), images, masks, sequential=True, looks=[150, 400], **kw)
    assert set(explicit.samples_used.tolist()) <= {160, 410}


def test_union_selection_is_holm_over_pixels_and_classes() -> None:
    """Every pass counts, each (pixel, class) is a hypothesis, Holm over the m K family (statsmodels)."""
    image = torch.from_numpy(_images(1, 12)[0][0]).permute(2, 0, 1).float() / 255.0
    model = Thresholds().eval()
    n0, n, k, alpha, tau = 10, 90, 3, 0.01, 0.75
    labels = torch.cat(
        list(noisy_labels(model, image, n0 + n, sigma=0.25, generator=torch.Generator().manual_seed(2), batch_size=50))
    )
    cert = certify_labels(
        _stream(labels, [0]), n_classes=k, n0=n0, n=n, alpha=alpha, tau=tau, selection="union"
    )  # fmt: skip
    counts = np.stack([(labels == c).sum(0).numpy() for c in range(k)])  # (K, H, W) over all passes
    pvals = binomial_pvalue_greater(counts.reshape(-1), n0 + n, tau)
    decided = multipletests(pvals, alpha=alpha, method="holm")[0].reshape(counts.shape)
    assert np.all(decided.sum(0) <= 1)
    expected = np.where(decided.any(0), decided.argmax(0), -1)
    np.testing.assert_array_equal(cert.certified, expected)
    np.testing.assert_array_equal(cert.selected, counts.argmax(0))
    assert cert.samples_used == n0 + n and 0 < (cert.certified >= 0).mean() < 1
    # a constant model: every pixel certified with the union bound too, and the sequential union stops early
    const = certify_segmentation(
        Constant(3, 2, True), image, n_classes=3, n=300, alpha=alpha, selection="union", sequential=True,
        looks="late", generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert np.all(const.certified == 2) and const.samples_used < 310


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"looks": [50, 40, 100]}, "looks"),
        ({"looks": [50, 90]}, "looks"),
        ({"looks": "early"}, "looks"),
        ({"futility": 1.5}, "futility"),
        ({"tolerance": -0.1}, "tolerance"),
        ({"selection": "both"}, "selection"),
    ],
)
def test_bad_sequential_settings_are_refused(kwargs: dict, match: str) -> None:
    image = torch.zeros(1, 4, 4)
    with pytest.raises(MedsureInputError, match=match):
        certify_segmentation(
            Constant(2, 1, True), image, n_classes=2, sequential=True, generator=torch.Generator(), **kwargs
        )


# ---- CLI --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A segmentation run (embedded MSD lung, 48 px) and a classification run (BreastMNIST), one short epoch."""
    base = tmp_path_factory.mktemp("certify_seq_runs")
    out = {"seg": base / "seg", "cls": base / "cls"}
    common = ["--epochs", "1", "--max-samples", "8", "--threads", "1", "--batch-size", "8"]
    assert main(["train", "--dataset", "msd_lung", "--model", "unet", *common, "--out", str(out["seg"])]) == 0
    assert main(["train", "--dataset", "breastmnist", "--model", "small_cnn", *common, "--out", str(out["cls"])]) == 0
    return out


def _args(run: Path, out: Path, *extra: str) -> list[str]:
    return [
        "certify", "--run", str(run), "--limit", "1", "--n0", "4", "--n", "30", "--alpha", "0.01",
        "--out", str(out), *extra,
    ]  # fmt: skip


def test_cli_sequential_options_reach_the_json(runs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "seq.json"
    assert main(_args(runs["seg"], out, "--sequential", "--looks", "15", "30", "--tolerance", "0.1")) == 0
    cert = json.loads(out.read_text())
    assert cert["sequential_settings"] == {"looks": [15, 30], "round_size": 10, "futility": 0.01, "tolerance": 0.1}
    assert cert["per_image"][0]["samples_used"] in (19, 34)
    default = tmp_path / "default.json"
    assert main(_args(runs["seg"], default, "--sequential", "--selection", "union")) == 0
    cert = json.loads(default.read_text())
    assert cert["selection"] == "union" and cert["sequential_settings"]["looks"] == "late"


@pytest.mark.parametrize(
    "extra, option",
    [
        (["--sequential", "--looks", "20", "10"], "--looks"),
        (["--sequential", "--looks", "10", "20"], "--looks"),
        (["--sequential", "--looks", "soon"], "--looks"),
        (["--sequential", "--looks", "30", "--round-size", "5"], "--looks"),
        (["--looks", "15", "30"], "--looks"),
        (["--futility", "0.01"], "--futility"),
        (["--sequential", "--futility", "2"], "--futility"),
        (["--sequential", "--tolerance", "-1"], "--tolerance"),
    ],
)
def test_cli_bad_sequential_options(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], option: str
) -> None:
    assert main(_args(runs["seg"], tmp_path / "bad.json", *extra)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "expected" in lines[0], lines
    assert list(tmp_path.iterdir()) == []


def test_cli_selection_needs_a_segmentation_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["certify", "--run", str(runs["cls"]), "--selection", "union", "--out", str(tmp_path / "c.json")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--selection" in lines[0] and "segmentation" in lines[0]
    assert list(tmp_path.iterdir()) == []
