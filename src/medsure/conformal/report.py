"""Conformal report sections and study outputs (outer layer: HTML and files).

``build_sections(cal, test, *, alpha=0.1, seed=0)`` is what ``medsure demo`` calls;
``run_all_analyses`` + ``write_analysis_outputs`` back ``medsure conformal-study``.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from medsure.artifact import Predictions, check_compatible
from medsure.conformal import analysis
from medsure.conformal.classifier import SplitConformalClassifier, to_probabilities
from medsure.conformal.metrics import DEFAULT_DELTA
from medsure.errors import MedsureInputError
from medsure.report.html import Report, Section, figure_to_data_uri, html_table, img_tag

ORDER = 300  # report position of the conformal sections


def run_all_analyses(cal: Predictions, test: Predictions, *, method: str = "aps", alpha: float = 0.1,
                     seed: int = 0, randomized: bool = True, n_repeats: int = 100,
                     input: str = "logits", delta: float = DEFAULT_DELTA) -> dict[str, Any]:
    """Run the main evaluation and every analysis; returns JSON-ready results by name.

    Keys: ``run`` (``method`` marginal on cal → test, with band and validity), ``run_class``
    (class-conditional, or its error), ``calibration_size``, ``confidence_sweep``,
    ``method_comparison``, ``class_overlap``, ``hardest_cases``. The thumbnails of the hardest
    cases stay in ``test.thumbnails`` (indices in the result).
    """
    check_compatible(cal, test)
    if cal.labels is None or test.labels is None:
        raise MedsureInputError("the conformal analyses need labelled calibration and test files")
    cal_p = to_probabilities(cal, input=input, what="cal")
    test_p = to_probabilities(test, input=input, what="test")
    names = list(map(str, cal.class_names))
    results: dict[str, Any] = {}
    clf = SplitConformalClassifier(method, alpha, randomized=randomized, input="probs", seed=seed)
    clf.calibrate(cal_p, cal.labels)
    sets = clf.predict_set(test_p)
    results["run"] = analysis.evaluate(clf, sets, test.labels, delta=delta)
    try:
        clf_c = SplitConformalClassifier(method, alpha, conditional="class", randomized=randomized,
                                         input="probs", seed=seed).calibrate(cal_p, cal.labels)
        results["run_class"] = analysis.evaluate(clf_c, clf_c.predict_set(test_p), test.labels,
                                                 delta=delta)
    except MedsureInputError as exc:
        results["run_class"] = {"error": str(exc)}
    pooled_p, pooled_y = np.concatenate([cal_p, test_p]), np.concatenate([cal.labels, test.labels])
    results["calibration_size"] = analysis.calibration_size_study(
        pooled_p, pooled_y, method=method, alpha=alpha, n_repeats=n_repeats, randomized=randomized,
        seed=seed, delta=delta)
    results["confidence_sweep"] = analysis.confidence_sweep(
        cal_p, cal.labels, test_p, test.labels, method=method, randomized=randomized, seed=seed,
        delta=delta)
    results["method_comparison"] = analysis.method_comparison(
        cal_p, cal.labels, test_p, test.labels, alpha=alpha, seed=seed, delta=delta)
    results["class_overlap"] = analysis.overlap_study(sets, test.labels, names)
    results["hardest_cases"] = analysis.hardest_cases(sets, test_p, test.labels, test.ids)
    results["hardest_cases"]["class_names"] = names
    return results


def _figures(results: dict[str, Any], thumbnails: np.ndarray | None) -> dict[str, Any]:
    from medsure.conformal import plots

    names = results["class_overlap"]["class_names"]
    return {
        "run": plots.plot_set_sizes(results["run"], f"{results['run']['method']}: set sizes"),
        "calibration_size": plots.plot_calibration_size(results["calibration_size"]),
        "confidence_sweep": plots.plot_confidence_sweep(results["confidence_sweep"]),
        "method_comparison": plots.plot_method_comparison(results["method_comparison"]),
        "class_overlap": plots.plot_class_overlap(results["class_overlap"]),
        "hardest_cases": plots.plot_hardest_cases(results["hardest_cases"], thumbnails, names),
    }


def write_analysis_outputs(results: dict[str, Any], out_dir: str | Path, *,
                           thumbnails: np.ndarray | None = None,
                           report_path: str | Path | None = None) -> list[Path]:
    """Write ``<name>.json`` and ``<name>.png`` per analysis (and the HTML report if asked)."""
    from medsure.utils.io import atomic_write, write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, result in results.items():
        write_json(out_dir / f"{name}.json", result)
        written.append(out_dir / f"{name}.json")
    for name, fig in _figures(results, thumbnails).items():
        with atomic_write(out_dir / f"{name}.png", "wb") as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
        import matplotlib.pyplot as plt

        plt.close(fig)
        written.append(out_dir / f"{name}.png")
    if report_path is not None:
        report = Report(title="medsure conformal study")
        for section in sections_from_results(results, thumbnails):
            report.add(section)
        report.write(report_path)
    return written


def _status_html(result: dict[str, Any]) -> str:
    low, high = result["coverage_band"]
    cls = "flag-ok" if result["valid"] else "flag-bad"
    word = "VALID" if result["valid"] else "OUTSIDE ITS BAND"
    return (f"<p class='{cls}'>{word}: coverage {result['coverage']:.4f}, exact "
            f"{100 * (1 - result['band_delta']):g}% band [{low:.4f}, {high:.4f}] for "
            f"n_cal={result['n_cal_used']}, n_test={result['n']}.</p>"
            f"<p>{html.escape(result['band_note'])}</p>")


def sections_from_results(results: dict[str, Any], thumbnails: np.ndarray | None, *,
                          order: int = ORDER) -> list[Section]:
    """Report sections from :func:`run_all_analyses` output; each section's ``summary`` holds the
    JSON result of its analysis."""
    figs = {name: figure_to_data_uri(fig) for name, fig in _figures(results, thumbnails).items()}
    run = results["run"]
    names = results["class_overlap"]["class_names"]
    alpha = run["alpha"]
    per_class = [{"class": n, "coverage": c if c is not None else "-", "mean size": s if s is not None else "-",
                  "test samples": k}
                 for n, c, s, k in zip(names, run["per_class_coverage"], run["per_class_size"],
                                       run["per_class_count"])]
    body = (
        f"<p>Split conformal prediction sets ({html.escape(run['method'])}, "
        f"{'randomized' if run['randomized'] else 'deterministic'}) at target coverage "
        f"{1 - alpha:.3g}. Coverage of split conformal given its calibration set follows "
        "Beta(n+1-l, l), l = floor((n+1)α); the band below is the exact central interval of the "
        "observed test coverage (beta-binomial), so a correct pipeline leaves it with probability "
        f"{run['band_delta']:g}.</p>" + _status_html(run)
        + html_table([{"metric": k, "value": run[k]} for k in (
            "coverage", "mean_set_size", "median_set_size", "empty_rate", "singleton_rate",
            "coverage_gap", "worst_class_coverage")])
        + html_table(per_class) + img_tag(figs["run"], "set sizes")
    )
    run_class = results["run_class"]
    if "error" in run_class:
        body += f"<p>Class-conditional calibration not possible: {html.escape(run_class['error'])}</p>"
    else:
        body += ("<h3>Class-conditional (Mondrian)</h3>" + _status_html(run_class)
                 + html_table([{"stratum": r["stratum"], "n_cal": r["n_cal"], "n_test": r["n_test"],
                                "coverage": r["coverage"] if r["coverage"] is not None else "-",
                                "band": (f"[{r['coverage_band'][0]:.3f}, {r['coverage_band'][1]:.3f}]"
                                         if "coverage_band" in r else "-")}
                               for r in run_class["per_stratum"]]))
    sections = [Section("Conformal prediction sets", body, key="conformal", order=order,
                        summary={"marginal": run, "class_conditional": results["run_class"]})]

    cs = results["calibration_size"]
    cs_rows = [{"n_cal": r["n_cal"], "n_test": r["n_test"], "mean coverage": r["mean"], "sd": r["sd"],
                "band low": r["band"][0], "band high": r["band"][1],
                "outside band": r["fraction_outside_band"], "mean size": r["mean_set_size"]}
               for r in cs["rows"]]
    sections.append(Section(
        "Conformal: calibration-set size", "<p>Random calibration/test splits of the pooled data "
        f"({cs['n_repeats']} per size). Small calibration sets give widely varying coverage: the "
        f"band widens as n shrinks; about {100 * cs['delta']:g}% of splits should fall outside.</p>"
        + html_table(cs_rows) + img_tag(figs["calibration_size"], "calibration size study"),
        key="conformal-calsize", order=order + 1, summary=cs))

    sw = results["confidence_sweep"]
    sweep_rows = [{k: r[k] for k in ("level", "coverage", "mean_set_size", "singleton_rate", "empty_rate",
                                     "valid")} for r in sw["rows"]]
    skipped = "".join(f"<li>{s['level']}: {html.escape(s['reason'])}</li>" for s in sw["skipped"])
    sections.append(Section(
        "Conformal: confidence sweep", html_table(sweep_rows)
        + (f"<ul>{skipped}</ul>" if skipped else "") + img_tag(figs["confidence_sweep"], "sweep"),
        key="conformal-sweep", order=order + 2, summary=sw))

    mc = results["method_comparison"]
    mc_rows = []
    for r in mc["rows"]:
        if "error" in r:
            mc_rows.append({"method": r["name"], "conditional": r["conditional"], "coverage": "-",
                            "mean size": "-", "singletons": "-", "worst class": "-", "valid": r["error"]})
        else:
            mc_rows.append({"method": r["name"], "conditional": r["conditional"], "coverage": r["coverage"],
                            "mean size": r["mean_set_size"], "singletons": r["singleton_rate"],
                            "worst class": r["worst_class_coverage"],
                            "valid": "yes" if r["valid"] else f"NO ({r['band_status']} band)"})
    sections.append(Section(
        "Conformal: method comparison",
        "<p>Top-K and deterministic scores have tied scores and over-cover by design; the others "
        "should sit inside the band.</p>" + html_table(mc_rows)
        + img_tag(figs["method_comparison"], "method comparison"),
        key="conformal-methods", order=order + 3, summary=mc))

    sections.append(Section(
        "Conformal: class overlap", "<p>Row i, column j: share of true-class-i samples whose "
        "prediction set contains class j (diagonal: per-class coverage). Large off-diagonal values "
        "name the classes the model confuses.</p>" + img_tag(figs["class_overlap"], "class overlap"),
        key="conformal-overlap", order=order + 4, summary=results["class_overlap"]))

    hc_rows = [{"id": c["id"], "true": names[c["label"]], "set": ", ".join(names[j] for j in c["set"]),
                "p(true)": c["p_true"], "covered": c["covered"]} for c in results["hardest_cases"]["cases"]]
    sections.append(Section(
        "Conformal: hardest cases", "<p>Test samples with the largest prediction sets.</p>"
        + img_tag(figs["hardest_cases"], "hardest cases") + html_table(hc_rows),
        key="conformal-hardest", order=order + 5, summary=results["hardest_cases"]))
    return sections


def build_sections(cal: Predictions, test: Predictions, *, alpha: float = 0.1, seed: int = 0,
                   method: str = "aps", n_repeats: int = 50, order: int = ORDER) -> list[Section]:
    """Conformal report sections for ``medsure demo``.

    Parameters
    ----------
    cal, test : Predictions
        Labelled classification predictions (calibration and test split of the same model).
    alpha : float
        Target miscoverage.
    seed : int
        Seed of the randomization and of the random splits.
    method : str
        Score for the main run, size study, sweep, overlap and hardest cases.
    n_repeats : int
        Random splits per calibration size.
    order : int
        Report position of the first section (the others follow it).

    Returns
    -------
    list of Section (keys ``conformal``, ``conformal-calsize``, ``conformal-sweep``,
    ``conformal-methods``, ``conformal-overlap``, ``conformal-hardest``; orders ``order`` to
    ``order + 5``)
    """
    results = run_all_analyses(cal, test, method=method, alpha=alpha, seed=seed, n_repeats=n_repeats)
    return sections_from_results(results, test.thumbnails, order=order)
