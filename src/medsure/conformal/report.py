"""Conformal report sections and figures (outer layer: renders results, computes nothing).

Everything here takes the results of :func:`medsure.conformal.analysis.evaluate_conformal_study`
(a :class:`~medsure.conformal.analysis.ConformalStudy`); ``medsure conformal-study`` and
``medsure demo`` compute it once and hand it on.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

from medsure.report.html import Report, Section, figure_to_data_uri, html_table, img_tag

if TYPE_CHECKING:  # a results type only: this module imports no analysis code
    from medsure.conformal.analysis import ConformalStudy

ORDER = 300  # report position of the conformal sections


def figures(study: ConformalStudy) -> dict[str, Any]:
    """One matplotlib Figure per analysis (the caller saves and closes them)."""
    from medsure.conformal import plots

    results = study.analyses
    names = results["class_overlap"]["class_names"]
    figs = {
        "run": plots.plot_set_sizes(results["run"], f"{results['run']['method']}: set sizes"),
        "calibration_size": plots.plot_calibration_size(results["calibration_size"]),
        "class_coverage_stability": plots.plot_class_coverage_stability(results["calibration_size"]),
        "confidence_sweep": plots.plot_confidence_sweep(results["confidence_sweep"]),
        "method_comparison": plots.plot_method_comparison(results["method_comparison"]),
        "class_overlap": plots.plot_class_overlap(results["class_overlap"]),
        "hardest_cases": plots.plot_hardest_cases(results["hardest_cases"], study.thumbnails, names),
    }
    if results["hardest_cases"]["pairs"]:
        figs["confused_pairs"] = plots.plot_confused_pairs(results["hardest_cases"], study.thumbnails, names)
    return figs


def build_report(study: ConformalStudy, *, title: str = "medsure conformal study") -> Report:
    """The HTML report of a study (written by the caller)."""
    report = Report(title=title)
    for section in build_sections(study):
        report.add(section)
    return report


def _status_html(result: dict[str, Any]) -> str:
    low, high = result["coverage_band"]
    cls = "flag-ok" if result["valid"] else "flag-bad"
    word = "VALID" if result["valid"] else "OUTSIDE ITS BAND"
    return (
        f"<p class='{cls}'>{word}: coverage {result['coverage']:.4f}, exact "
        f"{100 * (1 - result['band_delta']):g}% band [{low:.4f}, {high:.4f}] for "
        f"n_cal={result['n_cal_used']}, n_test={result['n']}.</p>"
        f"<p>{html.escape(result['band_note'])}</p>"
    )


def _stratum_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "stratum": r["stratum"],
            "n_cal": r["n_cal"],
            "n_test": r["n_test"],
            "coverage": r["coverage"] if r["coverage"] is not None else "-",
            "band": (f"[{r['coverage_band'][0]:.3f}, {r['coverage_band'][1]:.3f}]" if "coverage_band" in r else "-"),
        }
        for r in run["per_stratum"]
    ]


def build_run_sections(
    run: dict[str, Any],
    *,
    class_run: dict[str, Any] | None = None,
    order: int = ORDER,
    set_size_figure: str | None = None,
    title: str = "Conformal prediction sets",
    class_names: list[str] | None = None,
) -> list[Section]:
    """The section of one fitted conformal run: what ``medsure conformal --report`` writes and the
    first section of the study report (``medsure conformal-study``, ``medsure demo``).

    Parameters
    ----------
    run : the JSON result of :func:`medsure.conformal.analysis.evaluate_conformal` (``run.result``);
        without test labels its coverage keys are None and only set sizes are shown
    class_run : the class-conditional run of the same data (study), or None
    order : report position
    set_size_figure : a data URI of the set-size figure already rendered, or None to draw it here
    title : section title
    class_names : names of the classes (default ``run["class_names"]``)
    """
    from medsure.conformal import plots

    alpha = run["alpha"]
    names = list(class_names if class_names is not None else run.get("class_names") or [])
    if set_size_figure is None:
        set_size_figure = figure_to_data_uri(plots.plot_set_sizes(run, f"{run['method']}: set sizes"))
    labelled = run.get("coverage") is not None
    body = (
        f"<p>Split conformal prediction sets ({html.escape(run['method'])}, "
        f"{'randomized' if run['randomized'] else 'deterministic'}) at target coverage "
        f"{1 - alpha:.3g}. Coverage of split conformal given its calibration set follows "
        "Beta(n+1-l, l), l = floor((n+1)α); the band below is the exact central interval of the "
        "observed test coverage (beta-binomial), so a correct pipeline leaves it with probability "
        f"{run.get('band_delta', 0):g}.</p>"
    )
    if labelled:
        body += (
            f"<p class='guarantee'>Realised test coverage {run['coverage']:.4f} for this one calibration "
            f"set. The promise, coverage &ge; {1 - alpha:.3g}, holds <b>on average over calibration draws</b> "
            "(exchangeable calibration and test cases): a given calibration set may land a little below it, "
            "within the band.</p>" + _status_html(run)
        )
    else:
        body += (
            "<p class='flag-bad'>The test file has no labels: prediction sets and their sizes are shown; "
            "coverage, validity and per-class coverage need labels.</p>"
        )
    keys = ["coverage", "mean_set_size", "median_set_size", "empty_rate", "singleton_rate"]
    keys += ["coverage_gap", "worst_class_coverage"] if labelled else []
    body += html_table([{"metric": k, "value": run[k] if run.get(k) is not None else "-"} for k in keys])
    if labelled and run.get("per_class_coverage") is not None:
        body += html_table(
            [
                {
                    "class": n,
                    "coverage": c if c is not None else "-",
                    "mean size": s if s is not None else "-",
                    "test samples": k,
                }
                for n, c, s, k in zip(
                    names, run["per_class_coverage"], run["per_class_size"], run["per_class_count"], strict=True
                )
            ]
        )
    if labelled and run.get("per_stratum"):
        body += "<h3>Coverage per stratum</h3>" + html_table(_stratum_rows(run))
    body += img_tag(
        set_size_figure,
        "Bar chart of the share of test cases per prediction-set size"
        + (", with the coverage of each size above its bar" if labelled else ""),
    )
    if class_run is not None:
        if "error" in class_run:
            body += f"<p>Class-conditional calibration not possible: {html.escape(class_run['error'])}</p>"
        else:
            body += (
                "<h3>Class-conditional (Mondrian)</h3>" + _status_html(class_run) + html_table(_stratum_rows(class_run))
            )
    summary = {"marginal": run, "class_conditional": class_run} if class_run is not None else {"run": run}
    return [Section(title, body, key="conformal", order=order, summary=summary)]


def build_sections(study: ConformalStudy, *, order: int = ORDER) -> list[Section]:
    """Report sections of a study; each section's ``summary`` holds the JSON result of its
    analysis.

    Parameters
    ----------
    study : ConformalStudy
    order : int
        Report position of the first section (the others follow it).

    Returns
    -------
    list of Section (keys ``conformal``, ``conformal-calsize``, ``conformal-sweep``,
    ``conformal-methods``, ``conformal-overlap``, ``conformal-hardest``; orders ``order`` to
    ``order + 5``)
    """
    results = study.analyses
    figs = {name: figure_to_data_uri(fig) for name, fig in figures(study).items()}
    names = results["class_overlap"]["class_names"]
    sections = build_run_sections(
        results["run"], class_run=results["run_class"], order=order, set_size_figure=figs["run"], class_names=names
    )

    cs = results["calibration_size"]
    cs_rows = [
        {
            "n_cal": r["n_cal"],
            "n_test": r["n_test"],
            "mean coverage": r["mean"],
            "sd": r["sd"],
            "band low": r["band"][0],
            "band high": r["band"][1],
            "outside band": r["fraction_outside_band"],
            "mean size": r["mean_set_size"],
        }
        for r in cs["rows"]
    ]
    stability = _class_stability_rows(cs)
    sections.append(
        Section(
            "Conformal: calibration-set size",
            "<p>Random calibration/test splits of the pooled data "
            f"({cs['n_repeats']} per size). Small calibration sets give widely varying coverage: the "
            f"band widens as n shrinks; about {100 * cs['delta']:g}% of splits should fall outside.</p>"
            + html_table(cs_rows)
            + img_tag(figs["calibration_size"], "Mean test coverage with its band against the calibration-set size")
            + "<h3>Per-class coverage stability</h3><p>The same splits, coverage within each true class "
            "(rarest class first). A marginal method promises nothing per class; a rare class's coverage "
            "swings most from one calibration draw to the next. Quantiles are over the splits.</p>"
            + html_table(stability)
            + img_tag(
                figs["class_coverage_stability"],
                "Per-class coverage over random splits, mean and 5-95% range, against the calibration-set size",
            ),
            key="conformal-calsize",
            order=order + 1,
            summary=cs,
        )
    )

    sw = results["confidence_sweep"]
    sweep_rows = [
        {k: r[k] for k in ("level", "coverage", "mean_set_size", "singleton_rate", "empty_rate", "valid")}
        for r in sw["rows"]
    ]
    skipped = "".join(f"<li>{s['level']}: {html.escape(s['reason'])}</li>" for s in sw["skipped"])
    sections.append(
        Section(
            "Conformal: confidence sweep",
            html_table(sweep_rows)
            + (f"<ul>{skipped}</ul>" if skipped else "")
            + img_tag(figs["confidence_sweep"], "Coverage and mean set size against the target confidence level"),
            key="conformal-sweep",
            order=order + 2,
            summary=sw,
        )
    )

    mc = results["method_comparison"]
    mc_rows = []
    for r in mc["rows"]:
        if "error" in r:
            mc_rows.append(
                {
                    "method": r["name"],
                    "conditional": r["conditional"],
                    "coverage": "-",
                    "mean size": "-",
                    "singletons": "-",
                    "worst class": "-",
                    "valid": r["error"],
                }
            )
        else:
            mc_rows.append(
                {
                    "method": r["name"],
                    "conditional": r["conditional"],
                    "coverage": r["coverage"],
                    "mean size": r["mean_set_size"],
                    "singletons": r["singleton_rate"],
                    "worst class": r["worst_class_coverage"],
                    "valid": "yes" if r["valid"] else f"NO ({r['band_status']} band)",
                }
            )
    sections.append(
        Section(
            "Conformal: method comparison",
            "<p>Top-K and deterministic scores have tied scores and over-cover by design; the others "
            "should sit inside the band.</p>"
            + html_table(mc_rows)
            + img_tag(figs["method_comparison"], "Coverage and mean set size of each conformal score"),
            key="conformal-methods",
            order=order + 3,
            summary=mc,
        )
    )

    sections.append(
        Section(
            "Conformal: class overlap",
            "<p>Row i, column j: share of true-class-i samples whose "
            "prediction set contains class j (diagonal: per-class coverage). Large off-diagonal values "
            "name the classes the model confuses.</p>"
            + img_tag(figs["class_overlap"], "Matrix of the share of true-class cases whose set contains each class"),
            key="conformal-overlap",
            order=order + 4,
            summary=results["class_overlap"],
        )
    )

    hc = results["hardest_cases"]
    hc_rows = [_case_row(c, names) for c in hc["cases"]]
    body = (
        "<p>Test samples with the largest prediction sets (then the lowest probability of the true "
        "label).</p>"
        + img_tag(figs["hardest_cases"], "Thumbnails of the test cases with the largest prediction sets")
        + html_table(hc_rows)
    )
    if hc["pairs"]:
        body += (
            "<h3>By confused class pair</h3><p>Pairs the overlap matrix finds most often in one set "
            "(strength: the larger of the two off-diagonal shares); for each, the hardest cases whose "
            "set contains both classes.</p>"
            + img_tag(figs["confused_pairs"], "Thumbnails of hard cases for each often-confused class pair")
        )
        for pair in hc["pairs"]:
            a, b = pair["classes"]
            body += (
                f"<h4>{html.escape(names[a])} / {html.escape(names[b])}: strength {pair['strength']:.3f}, "
                f"{pair['n_both']} sets contain both</h4>" + html_table([_case_row(c, names) for c in pair["cases"]])
            )
    else:
        body += "<p>No class pair shares sets often enough to list (overlap below 5%).</p>"
    sections.append(Section("Conformal: hardest cases", body, key="conformal-hardest", order=order + 5, summary=hc))
    return sections


def _case_row(case: dict[str, Any], names: list[str]) -> dict[str, Any]:
    return {
        "id": case["id"],
        "true": names[case["label"]],
        "set": ", ".join(names[j] for j in case["set"]),
        "p(true)": case["p_true"],
        "covered": case["covered"],
    }


def _class_stability_rows(cs: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per (class, calibration size), rarest class first."""
    rows = []
    order = sorted(range(len(cs["class_names"])), key=lambda j: cs["class_counts"][j])
    at = {level: i for i, level in enumerate(cs["quantile_levels"])}
    for j in order:
        for r in cs["rows"]:
            e = r["per_class"][j]
            q = e["quantiles"]
            rows.append(
                {
                    "class": e["class"],
                    "count": e["count"],
                    "n_cal": r["n_cal"],
                    "test samples (mean)": e["mean_n_test"],
                    "mean coverage": e["mean"] if e["mean"] is not None else "-",
                    "sd": e["sd"] if e["sd"] is not None else "-",
                    "5% / 50% / 95%": (
                        f"{q[at[0.05]]:.3f} / {q[at[0.5]]:.3f} / {q[at[0.95]]:.3f}" if q is not None else "-"
                    ),
                }
            )
    return rows
