"""The import rules of ARCHITECTURE.md, checked on the source text (parsed with ``ast``, nothing imported).

Layers (imports only run downwards):

0. foundation: ``errors``, ``validation``, ``core.*``, ``utils.random``, ``utils.progress``
1. artifact: ``artifact``, ``utils.io`` (and the ``medsure`` and ``medsure.utils`` package files)
2. analyses: ``conformal``, ``calibration``, ``failure``, ``segmentation``, ``explain``, ``evaluation``,
   ``tta`` — without their ``plots`` and ``report`` modules
3. models and data: ``data``, ``models``, ``training``, ``predict``
4. outer: ``report.*``, every ``*.plots`` and ``*.report`` module, ``cli.*``, ``demo``, ``__main__``

Function-level (deferred) imports count like module-level ones: they run all the same. Imports under
``if TYPE_CHECKING:`` are skipped (they never run). Every violation is listed as
``module -> imported (rule)``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "medsure"

ANALYSES = (
    "conformal",
    "calibration",
    "failure",
    "segmentation",
    "explain",
    "evaluation",
    "tta",
    "certify",
    "evidential",
    "handoff",
)
MODELS_AND_DATA = ("data", "models", "training", "predict", "denoise")
FOUNDATION = ("errors", "validation", "core", "utils.random", "utils.progress")
ARTIFACT = ("artifact", "shards", "utils.io", "utils")
# what a report or plot module may import from medsure (besides other report/plot modules and results types)
PRESENTATION_ALLOWED = ("errors", "validation", "utils", "artifact", "report")
PLOTTING_LIBRARIES = ("matplotlib",)


@dataclass(frozen=True)
class Import:
    """One import statement's target: a module, or a name imported from a module."""

    module: str  # the importing module
    target: str  # the module imported (dotted), resolved against the package
    name: str | None  # the name taken from ``target`` when it is not itself a module
    line: int

    @property
    def shown(self) -> str:
        return f"{self.target}.{self.name}" if self.name else self.target


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


MODULE_FILES = {_module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULE_FILES.get(module, Path()).name == "__init__.py"


def _resolve_relative(module: str, level: int, target: str | None) -> str:
    base = module.split(".")
    if not _is_package(module):
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else None
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def imports_of(module: str) -> list[Import]:
    """Every import in ``module``'s source, module-level and deferred alike."""
    tree = ast.parse(MODULE_FILES[module].read_text(encoding="utf-8"))
    skipped = _type_checking_nodes(tree)
    found = []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, None, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, node.level, node.module) if node.level else node.module
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if full in MODULE_FILES:  # "from medsure.conformal import plots" imports a module
                    found.append(Import(module, full, None, node.lineno))
                else:
                    found.append(Import(module, base, alias.name, node.lineno))
    return found


def _internal(target: str) -> bool:
    return target == PACKAGE or target.startswith(PACKAGE + ".")


def _relative(target: str) -> str:
    """``medsure.conformal.plots`` -> ``conformal.plots``; ``medsure`` -> ``""``."""
    return target[len(PACKAGE) + 1 :] if target != PACKAGE else ""


def _within(rel: str, prefixes: tuple[str, ...]) -> bool:
    return any(rel == p or rel.startswith(p + ".") for p in prefixes)


def is_presentation(module: str) -> bool:
    """report.*, *.plots, *.report."""
    rel = _relative(module)
    last = rel.rsplit(".", 1)[-1]
    return _within(rel, ("report",)) or last in ("plots", "report")


def layer(module: str) -> int:
    rel = _relative(module)
    if is_presentation(module) or _within(rel, ("cli", "demo", "__main__", "review")):
        return 4
    if _within(rel, FOUNDATION):
        return 0
    if rel == "" or _within(rel, ARTIFACT):
        return 1
    if _within(rel, ANALYSES):
        return 2
    if _within(rel, MODELS_AND_DATA):
        return 3
    raise AssertionError(f"{module} is in no layer of ARCHITECTURE.md: add it to the table and to this test")


def _is_results_type(imp: Import) -> bool:
    return imp.name is not None and (imp.name.endswith("Result") or imp.name.endswith("Results"))


def violations_of(module: str) -> list[str]:
    """The broken rules of one module, as ``module -> imported (rule)``."""
    out = []
    own = layer(module)
    rel_module = _relative(module)
    for imp in imports_of(module):
        if imp.target.split(".")[0] in PLOTTING_LIBRARIES and own in (0, 1, 2, 3):
            out.append(f"{module} -> {imp.shown} (layer-{own} modules import no matplotlib; figures live in *.plots)")
            continue
        if not _internal(imp.target):
            continue
        target_layer = layer(imp.target)
        rel = _relative(imp.target)
        if target_layer > own:
            out.append(
                f"{module} -> {imp.shown} (layer {own} imports layer {target_layer}: imports only run downwards)"
            )
        elif own == 2 and (_within(rel, MODELS_AND_DATA) or _within(rel, ("report", "cli", "demo"))):
            out.append(f"{module} -> {imp.shown} (analyses import no data, training, report, cli or demo)")
        allowed_in_presentation = (
            is_presentation(imp.target) or _within(rel, PRESENTATION_ALLOWED) or rel == "" or _is_results_type(imp)
        )
        if is_presentation(module) and not allowed_in_presentation:
            out.append(
                f"{module} -> {imp.shown} (report and plot modules import no fitting code: only "
                "errors, validation, utils, artifact, report.*, plots/report modules and *Result(s) "
                "types)"
            )
        if own == 0 and _within(rel_module, FOUNDATION) and not _within(rel, FOUNDATION):
            out.append(f"{module} -> {imp.shown} (layer-0 modules import only layer 0)")
    return sorted(set(out))


def package_of(module: str) -> str:
    """The unit of the cycle check: a sub-package (``medsure.conformal``) or a top-level module."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else module


def package_cycles() -> list[list[str]]:
    """Strongly connected groups of more than one package in the package import graph."""
    graph: dict[str, set[str]] = {package_of(m): set() for m in MODULE_FILES}
    for module in MODULE_FILES:
        for imp in imports_of(module):
            if _internal(imp.target) and imp.target != PACKAGE:
                a, b = package_of(module), package_of(imp.target)
                if a != b and a != PACKAGE:  # medsure/__init__ re-exports; it is not a package edge
                    graph[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


def _cycle_edges(group: list[str]) -> list[str]:
    members = set(group)
    edges = {
        f"{module} -> {imp.shown} (import cycle between packages {', '.join(group)})"
        for module in MODULE_FILES
        if package_of(module) in members
        for imp in imports_of(module)
        if _internal(imp.target) and package_of(imp.target) in members - {package_of(module)}
    }
    return sorted(edges)


# ---- the checker checks itself on small sources -------------------------------------------------


def test_every_module_has_a_layer():
    assert len(MODULE_FILES) > 30
    for module in MODULE_FILES:
        layer(module)  # raises naming a module outside the table


def test_layer_table_matches_architecture_md():
    assert layer("medsure.errors") == layer("medsure.validation") == layer("medsure.utils.random") == 0
    assert layer("medsure.artifact") == layer("medsure.utils.io") == 1
    assert layer("medsure.conformal.classifier") == layer("medsure.evaluation") == layer("medsure.tta") == 2
    assert layer("medsure.training.trainer") == layer("medsure.predict") == 3
    assert layer("medsure.conformal.plots") == layer("medsure.report.html") == layer("medsure.cli") == 4


def test_import_resolution(tmp_path, monkeypatch):
    """Relative, deferred and from-imports resolve to the module or name they take."""
    root = tmp_path / "src" / PACKAGE
    (root / "sub").mkdir(parents=True)
    (root / "__init__.py").write_text("")
    (root / "sub" / "__init__.py").write_text("")
    (root / "sub" / "plots.py").write_text("")
    (root / "sub" / "report.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from . import plots\n"
        "from .fit import Estimator, FitResults\n"
        "if TYPE_CHECKING:\n    from medsure.other import Hidden\n"
        "def f():\n    import matplotlib.pyplot as plt\n    from ..errors import MedsureInputError\n"
    )
    monkeypatch.setitem(MODULE_FILES, "medsure.sub.report", root / "sub" / "report.py")
    monkeypatch.setitem(MODULE_FILES, "medsure.sub.plots", root / "sub" / "plots.py")
    monkeypatch.setitem(MODULE_FILES, "medsure.sub", root / "sub" / "__init__.py")
    shown = {i.shown for i in imports_of("medsure.sub.report")}
    assert shown == {
        "typing.TYPE_CHECKING",
        "medsure.sub.plots",
        "medsure.sub.fit.Estimator",
        "medsure.sub.fit.FitResults",
        "matplotlib.pyplot",
        "medsure.errors.MedsureInputError",
    }


def test_rules_flag_what_they_should(monkeypatch):
    fake = {
        "medsure.validation": "from medsure.artifact import Predictions\n",
        "medsure.conformal.classifier": "def f():\n    import matplotlib\n    from medsure.report.html import Report\n",
        "medsure.conformal.report": (
            "from medsure.conformal.analysis import ConformalResults, evaluate_conformal\n"
            "from medsure.conformal import plots\nfrom medsure.report.html import Report\n"
        ),
    }
    monkeypatch.setattr(sys.modules[__name__], "imports_of", lambda m: _parse_fake(m, fake[m]) if m in fake else [])
    assert violations_of("medsure.validation") == [
        "medsure.validation -> medsure.artifact.Predictions (layer 0 imports layer 1: imports only run downwards)",
        "medsure.validation -> medsure.artifact.Predictions (layer-0 modules import only layer 0)",
    ]
    flagged = violations_of("medsure.conformal.classifier")
    assert any("-> matplotlib (layer-2" in v for v in flagged)
    assert any("-> medsure.report.html.Report (layer 2 imports layer 4" in v for v in flagged)
    assert violations_of("medsure.conformal.report") == [
        "medsure.conformal.report -> medsure.conformal.analysis.evaluate_conformal (report and plot modules "
        "import no fitting code: only errors, validation, utils, artifact, report.*, plots/report modules and "
        "*Result(s) types)"
    ]


def test_package_cycles_are_found(monkeypatch):
    # segmentation.report -> report.html -> evaluation -> segmentation.metrics: the loop of issue 10
    fake = {
        "medsure.segmentation.report": "from medsure.report.html import Report\n",
        "medsure.report.html": "def f():\n    from medsure.evaluation import summary\n",
        "medsure.evaluation": "from medsure.segmentation.metrics import dice\n",
    }
    monkeypatch.setattr(sys.modules[__name__], "imports_of", lambda m: _parse_fake(m, fake[m]) if m in fake else [])
    groups = package_cycles()
    assert groups == [["medsure.evaluation", "medsure.report", "medsure.segmentation"]]
    assert (
        "medsure.report.html -> medsure.evaluation.summary (import cycle between packages medsure.evaluation, "
        "medsure.report, medsure.segmentation)" in _cycle_edges(groups[0])
    )


def _parse_fake(module: str, source: str) -> list[Import]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [Import(module, a.name, None, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                full = f"{node.module}.{a.name}"
                found.append(
                    Import(module, full, None, node.lineno)
                    if full in MODULE_FILES
                    else Import(module, node.module, a.name, node.lineno)
                )
    return found


# ---- the rules on the real tree ------------------------------------------------------------------


def all_violations() -> list[str]:
    found = [v for module in MODULE_FILES for v in violations_of(module)]
    for group in package_cycles():
        found += _cycle_edges(group)
    return found


def test_imports_follow_the_layers():
    found = all_violations()
    assert not found, f"{len(found)} import rule violation(s):\n" + "\n".join(found)


if __name__ == "__main__":  # pragma: no cover - `python tests/test_architecture.py` lists violations
    print("\n".join(all_violations()) or "no violations")
    pytest.main([__file__, "-q"])
