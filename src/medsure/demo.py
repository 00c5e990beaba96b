"""``medsure demo``: the whole road from data to a trustworthy report, on embedded data.

Trains a classifier on BUSI (breast ultrasound, 3 classes) and a U-Net on MSD lung-tumour CT
patches, writes their prediction artifacts, runs every analysis on those artifacts, and writes
``results.json`` and a self-contained ``report.html``. Each analysis contributes report sections
through its package's ``report.build_sections``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medsure.artifact import Predictions, save_predictions
from medsure.data.base import ImageDataset
from medsure.evaluation import classification_summary, segmentation_summary
from medsure.predict import predict, predict_cams
from medsure.report import Report, Section
from medsure.report.core import classification_section, segmentation_section
from medsure.training import TrainConfig, train
from medsure.training.datasets import dataset_record, load_splits
from medsure.utils.io import write_result_json


@dataclass
class DemoSettings:
    """Knobs of the demo; the defaults fit in 10 minutes on 2 CPU cores.

    ``quick`` shrinks everything (subsets, 1-2 epochs) for smoke tests.
    """

    seed: int = 0
    cls_epochs: int = 30
    seg_epochs: int = 80
    mc_samples: int = 20
    alpha: float = 0.1
    quick: bool = False
    max_samples: int | None = None  # cap on images per split (quick mode)
    joint_epochs: int = 15  # the small UML of the joint view (BUSI with masks, when present)
    joint_max_samples: int = 80  # images per split of that UML

    def __post_init__(self) -> None:
        if self.quick:
            self.cls_epochs = min(self.cls_epochs, 2)
            self.seg_epochs = min(self.seg_epochs, 2)
            self.joint_epochs = min(self.joint_epochs, 2)
            self.joint_max_samples = min(self.joint_max_samples, 48)
            self.mc_samples = min(self.mc_samples, 4)
            self.max_samples = self.max_samples or 64


@dataclass
class DemoOutputs:
    """What the demo produced (built once both models are trained and have predicted); also what
    feature sections receive."""

    out_dir: Path
    cls_splits: dict[str, ImageDataset]
    seg_splits: dict[str, ImageDataset]
    cls_model: Any
    seg_model: Any
    cls_cal: Predictions
    cls_test: Predictions
    cls_cal_mc: Predictions
    cls_test_mc: Predictions
    seg_cal: Predictions
    seg_test: Predictions
    seg_results: Any = None  # SegmentationResults of seg_test (Dice predictor fitted on seg_cal)
    seg_conformal: Any = None  # ConformalMaskResults (fitted on seg_cal, measured on seg_test)
    histories: dict[str, list] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


def _splits(name: str, settings: DemoSettings) -> tuple[dict[str, Any], dict[str, ImageDataset]]:
    """The run's dataset record and the project's standard splits (``medsure.training.splits``:
    stratified, near-duplicates grouped, MSD lung split by its patient-disjoint source files).
    Going through the record means ``medsure predict --run`` on a demo run rebuilds these very
    splits."""
    record = dataset_record(
        name, root=None, image_size=None, options={}, split_seed=settings.seed, max_samples=settings.max_samples
    )
    return record, load_splits(record)


def _train_and_predict(out: Path, settings: DemoSettings, log: Callable[[str], None]) -> DemoOutputs:
    seed = settings.seed
    timings: dict[str, float] = {}
    histories: dict[str, list] = {}

    t0 = time.perf_counter()
    busi_record, cls_splits = _splits("busi", settings)
    class_names = [str(c) for c in cls_splits["train"].class_names]
    log(f"BUSI: classes {class_names}, splits " + ", ".join(f"{k} {len(v)}" for k, v in cls_splits.items()))
    cls_config = TrainConfig(
        model="small_cnn", epochs=settings.cls_epochs, seed=seed, dropout=0.2, patience=8, dataset=busi_record
    )
    result = train(
        cls_config,
        {"train": cls_splits["train"], "val": cls_splits["val"]},
        out / "runs" / "busi_small_cnn",
    )
    histories["classification"] = result.history
    timings["train_classifier_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    cls_predictions = {
        "cal": predict(result.run, cls_splits["cal"], seed=seed),
        "test": predict(result.run, cls_splits["test"], seed=seed),
        "cal_mc": predict(result.run, cls_splits["cal"], mc_samples=settings.mc_samples, seed=seed),
        "test_mc": predict(result.run, cls_splits["test"], mc_samples=settings.mc_samples, seed=seed + 1),
    }
    for name, pred in cls_predictions.items():
        save_predictions(out / "predictions" / f"busi_{name}.npz", pred)
    timings["predict_classifier_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    lung_record, seg_splits = _splits("msd_lung", settings)
    log(
        f"MSD lung: patches {seg_splits['train'].image_size}, splits "
        + ", ".join(f"{k} {len(v)}" for k, v in seg_splits.items())
    )
    seg_config = TrainConfig(
        model="unet",
        epochs=settings.seg_epochs,
        seed=seed,
        dropout=0.1,
        loss="ce_dice",
        patience=20,
        batch_size=16,
        lr=3e-3,
        dataset=lung_record,
    )
    seg_result = train(
        seg_config,
        {"train": seg_splits["train"], "val": seg_splits["val"]},
        out / "runs" / "msd_lung_unet",
    )
    histories["segmentation"] = seg_result.history
    timings["train_segmenter_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # MC-dropout samples: the segmentation-uncertainty section then shows the sample spread, and
    # the single-pass performance section reads the sample mean
    seg_cal = predict(seg_result.run, seg_splits["cal"], mc_samples=settings.mc_samples, seed=seed)
    seg_test = predict(seg_result.run, seg_splits["test"], mc_samples=settings.mc_samples, seed=seed + 1)
    save_predictions(out / "predictions" / "msd_lung_cal.npz", seg_cal)
    save_predictions(out / "predictions" / "msd_lung_test.npz", seg_test)
    timings["predict_segmenter_s"] = time.perf_counter() - t0
    return DemoOutputs(
        out_dir=out,
        cls_splits=cls_splits,
        seg_splits=seg_splits,
        cls_model=result.model,
        seg_model=seg_result.model,
        cls_cal=cls_predictions["cal"],
        cls_test=cls_predictions["test"],
        cls_cal_mc=cls_predictions["cal_mc"],
        cls_test_mc=cls_predictions["test_mc"],
        seg_cal=seg_cal,
        seg_test=seg_test,
        histories=histories,
        timings=timings,
    )


def _display_images(ds: ImageDataset) -> np.ndarray:
    images = ds.images
    if images.shape[-1] == 1:
        images = images[..., 0]
    return images


def _conformal_study(outputs: DemoOutputs, settings: DemoSettings, cache: dict[str, Any]) -> Any:
    """The conformal study (APS, marginal) computed once and shared by the conformal and the
    Grad-CAM sections."""
    if "study" not in cache:
        from medsure.conformal.analysis import evaluate_conformal_study

        cache["study"] = evaluate_conformal_study(
            outputs.cls_cal, outputs.cls_test, method="aps", alpha=settings.alpha, seed=settings.seed, n_repeats=50
        )
    return cache["study"]


def _explain_conformal_sets(
    outputs: DemoOutputs,
    settings: DemoSettings,
    explain_sections: Callable[..., list[Section]],
    sets: np.ndarray,
    n: int = 6,
) -> list[Section]:
    """Grad-CAM for every label of the APS prediction set of the hardest test cases: the
    confident wrong ones first, then the largest sets, so a reader sees where the model looks
    for each label it could not rule out. ``sets``: the conformal study's APS sets (N, K)."""
    probs = outputs.cls_test.probabilities()
    predicted = probs.argmax(1)
    wrong = predicted != outputs.cls_test.labels
    conf = probs.max(1)
    ranked = np.r_[
        np.flatnonzero(wrong)[np.argsort(-conf[wrong], kind="stable")], np.argsort(-sets.sum(1), kind="stable")
    ]
    rows = list(dict.fromkeys(ranked.tolist()))[:n]
    label_sets = [np.flatnonzero(sets[r]).tolist() or [int(predicted[r])] for r in rows]
    cams = predict_cams(
        outputs.cls_model, outputs.cls_splits["test"], [str(outputs.cls_test.ids[r]) for r in rows], targets=label_sets
    )
    return explain_sections(
        cams, outputs.cls_test, title=f"Grad-CAM for every label of the {1 - settings.alpha:.0%} APS set", order=55
    )


def _segmentation_study(outputs: DemoOutputs, settings: DemoSettings) -> tuple[Any, Any]:
    """The segmentation-uncertainty analysis and the conformal masks, computed once and shared by
    the performance section (per-image Dice) and the uncertainty sections."""
    if outputs.seg_results is None:
        from medsure.segmentation.conformal_mask import evaluate_conformal_mask
        from medsure.segmentation.evaluate import evaluate_segmentation

        outputs.seg_results = evaluate_segmentation(outputs.seg_test, cal=outputs.seg_cal, seed=settings.seed)
        outputs.seg_conformal = evaluate_conformal_mask(outputs.seg_cal, outputs.seg_test, alpha=settings.alpha)
    return outputs.seg_results, outputs.seg_conformal


def feature_sections(outputs: DemoOutputs, settings: DemoSettings) -> list[tuple[str, Callable[[], list[Section]]]]:
    """The analyses the demo runs, in report order: (name, builder) pairs."""
    from medsure.calibration.evaluate import evaluate_calibration
    from medsure.calibration.report import build_sections as calibration_sections
    from medsure.conformal.report import build_sections as conformal_sections
    from medsure.explain.report import build_sections as explain_sections
    from medsure.failure.evaluate import evaluate_failure
    from medsure.failure.report import build_sections as failure_sections
    from medsure.segmentation.report import build_sections as segmentation_sections

    conformal_cache: dict[str, Any] = {}
    return [
        ("conformal", lambda: conformal_sections(_conformal_study(outputs, settings, conformal_cache), order=20)),
        (
            "calibration",
            lambda: calibration_sections(
                evaluate_calibration(outputs.cls_cal, outputs.cls_test, seed=settings.seed), order=40
            ),
        ),
        (
            "failure",
            lambda: failure_sections(
                evaluate_failure(
                    outputs.cls_cal_mc, outputs.cls_test_mc, n_boot=500, seed=settings.seed, target_risk=0.1, delta=0.1
                ),
                test=outputs.cls_test_mc,
                order=50,
            ),
        ),
        (
            "explain",
            lambda: _explain_conformal_sets(
                outputs, settings, explain_sections, _conformal_study(outputs, settings, conformal_cache).sets
            ),
        ),
        ("segmentation_uncertainty", lambda: segmentation_sections(*_segmentation_study(outputs, settings), order=80)),
        ("certify", lambda: _certify_sections(outputs, settings)),
        ("joint", lambda: _joint_sections(outputs, settings)),
    ]


def _certify_sections(outputs: DemoOutputs, settings: DemoSettings) -> list[Section]:
    """Randomized-smoothing certificates of the segmenter on a few test patches: small n keeps it to
    seconds (the published n = 100, alpha = 0.001 is what ``medsure certify`` runs by default)."""
    from medsure.certify import evaluate_certification
    from medsure.certify.report import build_sections as certify_sections

    test = outputs.seg_splits["test"]
    count = min(4, len(test))
    results = evaluate_certification(
        outputs.seg_model,
        test.images[:count],
        None if test.targets is None else test.targets[:count],
        task="segmentation",
        class_names=[str(c) for c in test.class_names],
        ids=[str(i) for i in test.ids[:count]],
        sigma=0.12,
        n0=5,
        n=30,
        alpha=0.01,
        n_boot=200,
        seed=settings.seed,
    )
    return certify_sections([results], order=90)


def _joint_sections(outputs: DemoOutputs, settings: DemoSettings) -> list[Section]:
    """The joint view (issue 12): a small UML trained on BUSI images *with their lesion masks*
    (``busi_joint``, 64 px, ``joint_max_samples`` per split), its joint prediction files, and the
    joint analysis (image, mask, pixel u, conformal class set, image u per test case).

    Images and masks are the embedded 64 px copies (``busi_64.npz``, ``busi_masks_64.npz``, CC BY
    4.0), so the view needs no ``../shared/data``.
    """
    from medsure.artifact import save_joint_predictions
    from medsure.evidential import evaluate_joint
    from medsure.evidential.report import build_sections as joint_sections
    from medsure.predict import predict_joint

    record = dataset_record(
        "busi_joint",
        root=None,
        image_size=64,
        options={},
        split_seed=settings.seed,
        max_samples=settings.joint_max_samples,
    )
    splits = load_splits(record)
    config = TrainConfig(
        model="uml",
        loss="evidential",
        epochs=settings.joint_epochs,
        seed=settings.seed,
        batch_size=16,
        lr=2e-3,
        patience=0,
        kl_annealing_epochs=max(1, settings.joint_epochs // 2),
        dataset=record,
    )
    run = train(config, {"train": splits["train"], "val": splits["val"]}, outputs.out_dir / "runs" / "busi_uml").run
    cal = predict_joint(run, splits["cal"], seed=settings.seed)
    test = predict_joint(run, splits["test"], seed=settings.seed)
    save_joint_predictions(outputs.out_dir / "predictions" / "busi_joint_cal.npz", cal)
    save_joint_predictions(outputs.out_dir / "predictions" / "busi_joint_test.npz", test)
    result = evaluate_joint(cal, test, alpha=settings.alpha, n_examples=6, seed=settings.seed)
    return joint_sections(result, order=60)


def run_demo(
    out_dir: str | Path = "demo_output", settings: DemoSettings | None = None, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Run the demo end to end; returns the content of ``results.json``."""
    settings = settings or DemoSettings()
    start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    outputs = _train_and_predict(out, settings, log)

    report = Report("medsure demo: BUSI classifier and MSD lung-tumour segmenter")
    report.notes.append(
        "BUSI: Al-Dhabyani et al. 2020 (CC BY 4.0), near-duplicates grouped before splitting. "
        "MSD Task06 lung: CC BY-SA 4.0."
    )
    report.add(
        classification_section(
            classification_summary(outputs.cls_test),
            outputs.cls_test,
            history=outputs.histories["classification"],
            title="BUSI classifier: performance",
        )
    )
    seg_section = segmentation_section(
        segmentation_summary(outputs.seg_test),
        outputs.seg_test,
        image_dice=_segmentation_study(outputs, settings)[0].image_dice,
        images=_display_images(outputs.seg_splits["test"]),
        history=outputs.histories["segmentation"],
        title="MSD lung segmenter: performance",
    )
    seg_section.order = 70
    report.add(seg_section)

    results: dict[str, Any] = {
        "classification": report.sections[0].summary,
        "segmentation": seg_section.summary,
        "settings": dict(vars(settings)),
    }
    for name, build in feature_sections(outputs, settings):
        t0 = time.perf_counter()
        sections = build()
        for section in sections:
            report.add(section)
        results[name] = {s.key or s.title: s.summary for s in sections}
        outputs.timings[f"{name}_s"] = time.perf_counter() - t0
        log(f"{name}: {len(sections)} section(s) in {outputs.timings[f'{name}_s']:.1f} s")

    outputs.timings["total_s"] = time.perf_counter() - start
    results["timings_s"] = {k: round(v, 2) for k, v in outputs.timings.items()}
    timing_rows = "".join(f"<tr><td>{k}</td><td>{v:.1f}</td></tr>" for k, v in outputs.timings.items())
    report.add(
        Section(
            "Run time", f"<table><tr><th>step</th><th>seconds</th></tr>{timing_rows}</table>", key="timings", order=1000
        )
    )
    report.write(outputs.out_dir / "report.html")
    results = write_result_json(outputs.out_dir / "results.json", results)  # stamped with medsure_version
    log(f"demo finished in {outputs.timings['total_s']:.1f} s; report: {outputs.out_dir / 'report.html'}")
    return results
