"""Trainer: exact resume, seeding, early stopping, safe checkpoints, joint augmentation."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from medsure.data.base import ImageDataset
from medsure.errors import MedsureInputError
from medsure.training import TrainConfig, load_checkpoint, load_run, train
from medsure.training.augment import random_flip_shift


@pytest.fixture(autouse=True)
def single_thread():
    """One torch thread: the test machine's cores are shared and 2-thread torch stalls there."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def synthetic(
    n: int, *, seg: bool = False, size: int = 16, channels: int = 1, seed: int = 0, n_classes: int = 2
) -> ImageDataset:
    """Separable toy data: class c brightens a centred square by 0.3*c (seg: the mask is the square)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    images = rng.normal(0.3, 0.08, (n, size, size, channels))
    square = np.zeros((size, size), bool)
    square[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = True
    if seg:
        targets = np.where(square[None], labels[:, None, None], 0).astype(np.int64)
        images = images + 0.3 * targets[..., None]
    else:
        targets = labels.astype(np.int64)
        images = images + 0.3 * labels[:, None, None, None] * square[None, :, :, None]
    images = (np.clip(images, 0, 1) * 255).astype(np.uint8)
    return ImageDataset(
        images=images,
        targets=targets,
        ids=np.array([f"s{seed}_{i}" for i in range(n)]),
        class_names=np.array([f"c{k}" for k in range(n_classes)]),
        task="segmentation" if seg else "classification",
        meta={"site": np.array(["a", "b"])[np.arange(n) % 2]},
        provenance={"source": "synthetic", "seed": seed},
    )


def splits(seg: bool = False, size: int = 16) -> dict[str, ImageDataset]:
    return {"train": synthetic(40, seg=seg, size=size, seed=1), "val": synthetic(16, seg=seg, size=size, seed=2)}


class Interrupt(Exception):
    pass


def _stop_after(k: int):
    def callback(epoch: int, record: dict) -> None:
        if epoch == k:
            raise Interrupt

    return callback


def _state(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize(
    "model, seg, bf16", [("small_cnn", False, False), ("small_cnn", False, True), ("unet", True, False)]
)
def test_resume_after_kill_reaches_the_same_weights(tmp_path: Path, model: str, seg: bool, bf16: bool) -> None:
    config = TrainConfig(model=model, epochs=3, batch_size=8, dropout=0.2, patience=0, seed=3, bf16=bf16, vflip=True)
    data = splits(seg)
    train(config, data, tmp_path / "full")
    with pytest.raises(Interrupt):
        train(config, data, tmp_path / "cut", on_epoch_end=_stop_after(1))
    assert json.loads((tmp_path / "cut" / "history.json").read_text())[-1]["epoch"] == 1
    result = train(config, data, tmp_path / "cut", resume=True)
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    _assert_same_weights(_state(tmp_path / "full" / "checkpoint.pt"), _state(tmp_path / "cut" / "checkpoint.pt"))
    _assert_same_weights(_state(tmp_path / "full" / "best.pt"), _state(tmp_path / "cut" / "best.pt"))
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["optimizer"]["state"]
    cut = load_checkpoint(tmp_path / "cut" / "checkpoint.pt")["optimizer"]["state"]
    for key in full:
        assert torch.equal(full[key]["exp_avg_sq"], cut[key]["exp_avg_sq"])


def test_same_seed_same_weights_other_seed_differs_and_global_rng_untouched(tmp_path: Path) -> None:
    data = splits()
    before = torch.get_rng_state()
    cfg = TrainConfig(epochs=2, batch_size=8, dropout=0.2, seed=0)
    train(cfg, data, tmp_path / "a")
    assert torch.equal(torch.get_rng_state(), before)
    train(cfg, data, tmp_path / "b")
    train(TrainConfig(epochs=2, batch_size=8, dropout=0.2, seed=1), data, tmp_path / "c")
    a, b, c = (_state(tmp_path / x / "checkpoint.pt") for x in "abc")
    _assert_same_weights(a, b)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert not torch.are_deterministic_algorithms_enabled()  # caller's setting restored


def test_training_learns_separable_data_and_writes_run_folder(tmp_path: Path) -> None:
    data = {"train": synthetic(120, seed=1), "val": synthetic(40, seed=2)}
    result = train(TrainConfig(epochs=6, batch_size=16, lr=3e-3, patience=0), data, tmp_path / "r")
    assert result.history[-1]["val_accuracy"] > 0.9
    for name in ("config.json", "checkpoint.pt", "best.pt", "history.json"):
        assert (tmp_path / "r" / name).is_file()
    history = json.loads((tmp_path / "r" / "history.json").read_text())
    assert {"epoch", "train_loss", "val_loss", "val_accuracy", "val_auc", "lr"} <= history[0].keys()
    run = load_run(tmp_path / "r")
    assert not run.model.training and run.class_names == ["c0", "c1"]
    assert run.config["model"]["name"] == "small_cnn"
    best = max(h["val_auc"] for h in history)
    assert result.best_metric == best
    _assert_same_weights(run.model.state_dict(), _state(tmp_path / "r" / "best.pt"))


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    # lr so small that the validation metric cannot improve after epoch 1.
    cfg = TrainConfig(epochs=10, batch_size=8, lr=1e-12, patience=2, monitor="loss", augment=False)
    result = train(cfg, splits(), tmp_path / "r")
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1


def test_existing_run_folder_needs_resume_and_matching_config(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=1, batch_size=8)
    train(cfg, splits(), tmp_path / "r")
    with pytest.raises(MedsureInputError, match="already holds a run"):
        train(cfg, splits(), tmp_path / "r")
    with pytest.raises(MedsureInputError, match="differs"):
        train(TrainConfig(epochs=1, batch_size=8, lr=0.5), splits(), tmp_path / "r", resume=True)


def test_a_run_recorded_before_a_new_setting_existed_still_resumes(tmp_path: Path) -> None:
    """A TrainConfig field added by a later medsure (here the evidential ones) is absent from an older
    run's config.json; at its default it computes what the old run computed, so resume goes on;
    at another value the run is refused as before."""
    import json

    cfg = TrainConfig(epochs=1, batch_size=8)
    train(cfg, splits(), tmp_path / "r")
    record_path = tmp_path / "r" / "config.json"
    record = json.loads(record_path.read_text())
    for added in ("evidence", "kl_annealing_epochs"):
        del record["train"][added]
    record_path.write_text(json.dumps(record))
    resumed = train(cfg, splits(), tmp_path / "r", resume=True)
    assert len(resumed.history) == 1
    with pytest.raises(MedsureInputError, match="differs"):
        train(TrainConfig(epochs=1, batch_size=8, kl_annealing_epochs=3), splits(), tmp_path / "r", resume=True)


class _Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_checkpoint_with_pickled_code_is_refused(tmp_path: Path) -> None:
    train(TrainConfig(epochs=1, batch_size=8), splits(), tmp_path / "r")
    weights = _state(tmp_path / "r" / "best.pt")
    torch.save({"format": 1, "model": weights, "extra": _Payload()}, tmp_path / "r" / "best.pt", pickle_protocol=2)
    with pytest.raises(MedsureInputError, match="Refusing to load it because unpickling can run arbitrary code"):
        load_run(tmp_path / "r")
    with open(tmp_path / "plain_pickle.pt", "wb") as handle:
        pickle.dump({"x": _Payload()}, handle, protocol=2)
    with pytest.raises(MedsureInputError):
        load_checkpoint(tmp_path / "plain_pickle.pt")


@pytest.mark.parametrize("loss", ["ce", "dice", "ce_dice"])
def test_segmentation_losses(tmp_path: Path, loss: str) -> None:
    result = train(TrainConfig(model="unet", loss=loss, epochs=1, batch_size=8), splits(seg=True), tmp_path / loss)
    assert np.isfinite(result.history[0]["train_loss"]) and 0 <= result.history[0]["val_dice"] <= 1


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"loss": "focal"}, "loss"),
        ({"epochs": 0}, "epochs"),
        ({"model": "vgg"}, "model"),
        ({"monitor": "dice"}, "monitor"),
    ],
)
def test_bad_config_is_refused(tmp_path: Path, kwargs: dict, word: str) -> None:
    with pytest.raises(MedsureInputError, match=word):
        train(TrainConfig(**kwargs), splits(), tmp_path / "r")


def test_training_refuses_wrong_task_or_missing_split(tmp_path: Path) -> None:
    with pytest.raises(MedsureInputError, match="segmentation"):
        train(TrainConfig(model="unet"), splits(seg=False), tmp_path / "a")
    with pytest.raises(MedsureInputError, match="val"):
        train(TrainConfig(), {"train": synthetic(10)}, tmp_path / "b")


def test_augmentation_moves_masks_with_images() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 3, (32, 12, 12))
    images = masks[:, None].float() / 2
    out_images, out_masks = random_flip_shift(images, masks, generator=gen, hflip=True, vflip=True, max_shift=0.25)
    assert torch.equal(out_images[:, 0] * 2, out_masks.float())
    assert not torch.equal(out_masks, masks)  # something moved
    # Values are copied, never interpolated: every output value existed in the input (or is 0).
    assert set(out_images.unique().tolist()) <= {0.0, 0.5, 1.0}
    assert torch.equal(images, masks[:, None].float() / 2)  # input untouched


@pytest.mark.parametrize(
    "sources, test_from",
    [(("train", "val", "test"), "test"), (("train", "val"), "val"), (("val", "test"), "test"), (None, None)],
)
def test_standard_splits_hold_out_cal_and_test(sources, test_from) -> None:
    from dataclasses import replace

    from medsure.training import standard_splits

    data = synthetic(120, seed=4)
    if sources is not None:
        data = replace(data, meta={"source_split": np.array(sources)[np.arange(120) % len(sources)]})
    parts = standard_splits(data, seed=0)
    assert set(parts) == {"train", "val", "cal", "test"}
    ids = [set(parts[k].ids) for k in ("train", "val", "cal", "test")]
    assert sum(map(len, ids)) == 120 and len(set().union(*ids)) == 120  # a partition
    if test_from is not None:
        assert set(parts["test"].meta["source_split"]) == {test_from}
        if sources == ("train", "val", "test"):
            assert abs(len(parts["cal"]) - len(parts["test"])) <= 1
    again = standard_splits(data, seed=0)
    assert all(np.array_equal(again[k].ids, parts[k].ids) for k in parts)


def test_max_samples_keeps_every_class_in_every_split():
    # stored samples are class-sorted: a plain "first N" cap gave single-class splits
    from medsure.training.datasets import load_splits

    splits = load_splits({"name": "busi", "split_seed": 0, "max_samples": 64})
    for name, part in splits.items():
        assert 50 <= len(part) <= 80, name
        assert np.all(np.bincount(part.targets, minlength=3) > 0), name


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("content", [b"not a torch file at all", b"\x80\x04K\x01."])
def test_corrupt_checkpoint_is_one_clear_error(tmp_path, content):
    path = tmp_path / "best.pt"
    path.write_bytes(content)
    with pytest.raises(MedsureInputError, match=r"best\.pt"):
        load_checkpoint(path)


def test_balanced_class_weights_make_a_rare_class_predicted(tmp_path):
    # 90 % class 0: plain cross-entropy learns the majority; balanced weights move the decision
    rng = np.random.default_rng(0)
    n = 200
    labels = (rng.random(n) < 0.1).astype(np.int64)
    images = rng.normal(0, 1, (n, 8, 8, 1)).astype(np.float32)
    images[labels == 1] += 0.6  # a weak signal for the rare class
    ds = ImageDataset(
        images=images,
        targets=labels,
        ids=np.arange(n).astype(str),
        class_names=np.array(["common", "rare"]),
        task="classification",
    )
    predicted_rare = {}
    for weights in (None, "balanced"):
        cfg = TrainConfig(
            model="small_cnn",
            epochs=4,
            batch_size=32,
            lr=3e-3,
            seed=0,
            patience=0,
            width=8,
            augment=False,
            class_weights=weights,
            monitor="loss",
        )
        result = train(cfg, {"train": ds, "val": ds}, tmp_path / f"run-{weights}")
        with torch.no_grad():
            logits = result.model(torch.as_tensor(images).permute(0, 3, 1, 2))
        predicted_rare[weights] = int((logits.argmax(1) == 1).sum())
    assert predicted_rare["balanced"] > predicted_rare[None]
    with pytest.raises(MedsureInputError, match="class_weights"):
        TrainConfig(class_weights="inverse").validate()


def test_deterministic_flag_reaches_the_run_record_and_trains_on_cpu(tmp_path: Path) -> None:
    # strict determinism (for GPU users) changes no arithmetic on CPU: same weights as the default
    data = splits()
    cfg = TrainConfig(epochs=1, batch_size=8, dropout=0.2, seed=2)
    strict = TrainConfig(epochs=1, batch_size=8, dropout=0.2, seed=2, deterministic=True)
    before = (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    train(cfg, data, tmp_path / "default")
    result = train(strict, data, tmp_path / "strict")
    assert (
        torch.are_deterministic_algorithms_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    ) == before  # the caller's settings are restored
    _assert_same_weights(_state(tmp_path / "default" / "best.pt"), _state(tmp_path / "strict" / "best.pt"))
    record = json.loads((tmp_path / "strict" / "config.json").read_text())
    assert record["train"]["deterministic"] is True and record["environment"]["deterministic"] == "strict"
    assert result.run.config["environment"]["deterministic"] == "strict"
    assert json.loads((tmp_path / "default" / "config.json").read_text())["environment"]["deterministic"] == "warn_only"
    # a run may resume with or without strict mode: it changes where it runs, not what it computes
    resumed = train(cfg, data, tmp_path / "strict", resume=True)
    assert len(resumed.history) == 1


def test_strict_deterministic_mode_raises_where_the_default_warns() -> None:
    from medsure.training.environment import deterministic_mode

    calls = []

    def record_call(enabled: bool, *, warn_only: bool = False) -> None:
        calls.append((enabled, warn_only))

    import unittest.mock as mock

    cpu = torch.device("cpu")
    with mock.patch.object(torch, "use_deterministic_algorithms", side_effect=record_call):
        with deterministic_mode(cpu):
            pass
        with deterministic_mode(cpu, strict=True):
            assert torch.backends.cudnn.deterministic
    assert calls[0] == (True, True) and calls[2] == (True, False)  # warn-only vs raising
    assert not torch.backends.cudnn.deterministic


def test_deterministic_cli_flag_reaches_config(tmp_path: Path) -> None:
    from medsure.cli import main

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--dataset",
                "pneumoniamnist",
                "--model",
                "small_cnn",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--max-samples",
                "24",
                "--batch-size",
                "16",
                "--deterministic",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    record = json.loads((out / "config.json").read_text())
    assert record["train"]["deterministic"] is True
    # an --out that cannot be a folder fails before any data is loaded or trained
    assert main(["train", "--dataset", "pneumoniamnist", "--out", str(out / "config.json"), "--epochs", "1"]) == 2


def test_dataset_record_errors_speak_the_error_format():
    from medsure.training.datasets import _stratified_subset, load_splits, parse_options
    from medsure.training.splits import standard_splits

    with pytest.raises(MedsureInputError, match=r"^--option: got 'task'; expected KEY=VALUE"):
        parse_options(["task"])
    with pytest.raises(MedsureInputError, match=r"^the run's dataset record: got no dataset record; expected a record"):
        load_splits({})
    ds = ImageDataset(
        images=np.zeros((4, 2, 2, 1), np.uint8),
        targets=None,
        ids=np.array(list("abcd")),
        class_names=np.array(["x", "y"]),
    )
    with pytest.raises(MedsureInputError, match=r"^max_samples: got -1; expected an integer >= 1"):
        _stratified_subset(ds, -1, 0)
    with pytest.raises(MedsureInputError, match=r"^standard_splits dataset: got 4 images without targets; expected a"):
        standard_splits(ds)


def test_a_record_with_the_size_among_its_options_loads() -> None:
    """Runs recorded through the Python API may hold ``image_size`` in the loader options
    (``medsure explain`` on such a run used to fail with 'multiple values for image_size')."""
    from medsure.training.datasets import load_whole

    whole = load_whole({"name": "busi", "options": {"image_size": 32}, "split_seed": 0})
    assert whole.images.shape[1:3] == (32, 32)
    assert load_whole({"name": "busi", "options": {"image_size": 32}}, image_size=16).images.shape[1:3] == (16, 16)
