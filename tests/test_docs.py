"""The documentation site (``mkdocs.yml``, ``docs/``): it builds with ``--strict``, its code runs,
and the generated references (CLI, Python API) cover every command and public module.

Code blocks of a page run in order, in one fresh temporary folder per page, so a block may use the
files and names of the blocks before it:

- ```` ```python ```` blocks run unless the line just before the fence is
  ``<!-- docs-test: skip <reason> -->`` (the reason is required);
- ```` ```bash ```` blocks run only after ``<!-- docs-test: run -->``, and then every command in
  them must be a ``medsure ...`` command (run in-process through :func:`medsure.cli.main`, which
  must return 0).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_MARKER = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<action>\w+)\s*(?P<reason>.*?)\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced code block of a page."""

    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    action: str  # "run" or "skip"
    reason: str


def code_blocks(text: str, page: str = "<page>") -> list[Block]:
    """The fenced blocks of a Markdown text with what the test does with each.

    Raises
    ------
    ValueError
        A marker other than ``run`` / ``skip``, a skip without its reason, a ``run`` marker on a
        block of another language than python or bash, or a fence that is never closed.
    """
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening["indent"], opening["fence"], opening["lang"].lower()
        body = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j][len(indent) :] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        if j == len(lines):
            raise ValueError(f"{page}:{i + 1}: code fence {fence} is never closed")
        k = i - 1
        while k >= 0 and not lines[k].strip():
            k -= 1
        marker = _MARKER.match(lines[k]) if k >= 0 else None
        action = "run" if lang in ("python", "py") else "skip"
        reason = "" if action == "run" else f"{lang or 'plain'} blocks run only when marked"
        if marker:
            action, reason = marker["action"], marker["reason"]
            if action not in ("run", "skip"):
                raise ValueError(f"{page}:{k + 1}: docs-test marker {action!r}; expected 'run' or 'skip'")
            if action == "skip" and not reason:
                raise ValueError(f"{page}:{k + 1}: 'docs-test: skip' needs a reason: why may this block not run?")
            if action == "run" and lang not in ("python", "py", "bash", "sh", "console"):
                raise ValueError(f"{page}:{k + 1}: 'docs-test: run' on a {lang or 'plain'} block")
        blocks.append(Block(page, i + 1, lang, "\n".join(body) + "\n", action, reason))
        i = j + 1
    return blocks


def shell_commands(code: str) -> list[str]:
    """The commands of a bash block: comments dropped, backslash continuations joined."""
    commands, current = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if current == "" and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        commands.append((current + line).strip())
        current = ""
    if current:
        commands.append(current.strip())
    return commands


def load_hooks() -> ModuleType:
    """``scripts/docs_hooks.py``, the generator of the CLI and API reference pages."""
    spec = importlib.util.spec_from_file_location("medsure_docs_hooks", ROOT / "scripts" / "docs_hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- the block extractor itself (hand-made pages) -----------------------------------------------


def test_code_blocks_reads_markers_and_languages():
    text = "\n".join(
        [
            "```python",
            "a = 1",
            "```",
            "<!-- docs-test: skip needs a GPU -->",
            "```python",
            "b = 2",
            "```",
            "```bash",
            "make demo",
            "```",
            "<!-- docs-test: run -->",
            "",
            "```bash",
            "medsure --version  # a comment",
            "```",
            "!!! note",
            "    ```python",
            "    c = 3",
            "    ```",
        ]
    )
    blocks = code_blocks(text)
    assert [(b.lang, b.action) for b in blocks] == [
        ("python", "run"),
        ("python", "skip"),
        ("bash", "skip"),
        ("bash", "run"),
        ("python", "run"),
    ]
    assert blocks[1].reason == "needs a GPU"
    assert blocks[4].code == "c = 3\n"  # an indented block (inside an admonition) is dedented
    assert shell_commands("# title\nmedsure a \\\n  --b 1\n\nmedsure c\n") == ["medsure a    --b 1", "medsure c"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("<!-- docs-test: skip -->\n```python\nx\n```\n", "needs a reason"),
        ("<!-- docs-test: maybe -->\n```python\nx\n```\n", "expected 'run' or 'skip'"),
        ("<!-- docs-test: run -->\n```text\nx\n```\n", "'docs-test: run' on a text block"),
        ("```python\nx\n", "never closed"),
    ],
)
def test_code_blocks_refuses_unclear_markers(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        code_blocks(text)


# ---- the pages' code runs -----------------------------------------------------------------------


def _run_block(block: Block, namespace: dict) -> None:
    where = f"{block.page}:{block.line}"
    if block.lang in ("python", "py"):
        exec(compile(block.code, where, "exec"), namespace)
        return
    from medsure.cli import main

    for command in shell_commands(block.code):
        argv = shlex.split(command, comments=True)
        assert argv and argv[0] == "medsure", f"{where}: only medsure commands run in the docs test, got {command!r}"
        try:
            code = main(argv[1:])
        except SystemExit as exc:  # argparse refusals exit instead of returning
            code = exc.code
        assert code == 0, f"{where}: `{command}` exited with {code}"


@pytest.fixture
def one_torch_thread():
    """Run torch on one thread while a page runs: on a busy 2-core machine torch's default of one
    thread per core makes the small training of own-model.md take a minute instead of seconds
    (the threads wait on each other); the pages' results do not depend on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("page", PAGES)
@pytest.mark.usefixtures("one_torch_thread")
def test_page_code_runs(page, tmp_path, monkeypatch):
    blocks = [b for b in code_blocks((DOCS / page).read_text(encoding="utf-8"), page) if b.action == "run"]
    if not blocks:
        pytest.skip(f"{page} has no code block to run")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDSURE_NO_PROGRESS", "1")
    namespace: dict = {"__name__": f"docs_{Path(page).stem}"}
    for block in blocks:
        _run_block(block, namespace)


# ---- the site builds, and its references are complete -------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The site built with --strict (any warning fails), into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")  # Material's end-of-life banner
    command = [sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml")]
    proc = subprocess.run(
        [*command, "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stderr[-4000:]}"
    return out


def test_site_builds_offline(site):
    index = (site / "index.html").read_text(encoding="utf-8")
    # nothing is fetched from a CDN or a font service when the pages are opened
    for page in site.rglob("*.html"):
        text = page.read_text(encoding="utf-8")
        assert "fonts.googleapis.com" not in text, page
        assert not re.search(r"<(?:script|link)[^>]+(?:src|href)=\"https?://", text), page
    assert (site / "report.png").exists()  # the picture in docs/ is kept and published
    assert "own-model.html" in index  # directory URLs off: links work from file://


def test_every_page_is_in_the_navigation():
    import yaml

    def pages_in(nav) -> set[str]:
        found: set[str] = set()
        for entry in nav:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            found |= pages_in(value) if isinstance(value, list) else {value}
        return found

    config = yaml.load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=yaml.BaseLoader)
    assert sorted(set(PAGES) - pages_in(config["nav"])) == []


def test_cli_reference_lists_every_subcommand_and_option(site):
    from medsure.cli import build_parser

    hooks = load_hooks()
    commands = hooks.subcommands(build_parser())
    assert {"conformal", "calibration", "failure", "predict", "train"} <= set(commands)
    markdown = hooks.cli_reference_markdown(build_parser())
    html = (site / "cli.html").read_text(encoding="utf-8")
    for name, parser in commands.items():  # nested commands too ("review export")
        assert re.search(rf"^#{{2,3}} medsure {name}$", markdown, flags=re.MULTILINE), name
        anchor = "medsure-" + name.replace(" ", "-")
        assert f'id="{anchor}"' in html, f"medsure {name} is missing from the built cli.html"
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):  # -h/--help: on every command, not listed
                continue
            for option in action.option_strings:
                assert f"`{option}`" in markdown, f"medsure {name} {option}"
    assert hooks.CLI_MARKER not in html


def test_cli_reference_of_a_hand_made_parser():
    """Every kind of option becomes the row a reader expects; nested commands get their own heading."""
    hooks = load_hooks()
    parser = argparse.ArgumentParser(prog="medsure")
    commands = parser.add_subparsers(dest="command")
    fit = commands.add_parser("fit", help="fit | things", description="Fit <things> on CAL.")
    fit.add_argument("--cal", required=True, help="calibration file")
    fit.add_argument("--method", choices=("a", "b"), default="a", help="method (default %(default)s)")
    fit.add_argument("--quick", action="store_true", help="small run")
    fit.add_argument("--randomized", action=argparse.BooleanOptionalAction, default=True, help="randomize")
    fit.add_argument("--seed", type=int, default=None)
    tool = commands.add_parser("tool", help="tools")
    tool.add_subparsers(dest="action").add_parser("export", help="export it")

    assert list(hooks.subcommands(parser)) == ["fit", "tool", "tool export"]
    markdown = hooks.cli_reference_markdown(parser)
    assert "## medsure fit\n" in markdown and "### medsure tool export\n" in markdown
    assert "*fit \\| things*" in markdown  # a table-breaking | is escaped
    assert "Fit &lt;things&gt; on CAL." in markdown  # no raw HTML from help texts
    assert "| `--cal` | `CAL` | **required** | calibration file |" in markdown
    assert "| `--method` | one of `a`, `b` | `a` | method (default a) |" in markdown
    assert "| `--quick` |  | off | small run |" in markdown
    assert "| `--randomized`, `--no-randomized` |  | on | randomize |" in markdown
    assert "| `--seed` | `SEED` | - |  |" in markdown
    assert "Subcommands: `medsure tool export`." in markdown


def test_only_docstring_style_findings_are_demoted():
    """With MEDSURE_DOCS_LENIENT_DOCSTRINGS=1 the hook lowers docstring-style findings to INFO; any
    other warning (a broken link, a missing page, an unknown object) stays a warning, so --strict
    still fails on it. By default (make docs, this test module's build) nothing is lowered."""
    import logging

    demote = load_hooks()._DocstringFindingsAsInfo()

    def level_after(message: str) -> int:
        record = logging.LogRecord("mkdocs.plugins.griffe", logging.WARNING, __file__, 1, message, (), None)
        demote.filter(record)
        return record.levelno

    assert level_after("griffe: src/medsure/x.py:12: Parameter 'Use' does not appear in the signature") == logging.INFO
    assert level_after("Doc file 'a.md' contains a link 'b.md', but the target is not found") == logging.WARNING
    assert level_after("griffe: could not find cross-reference target 'medsure.nothing'") == logging.WARNING


def test_api_reference_has_a_page_per_public_module(site):
    hooks = load_hooks()
    modules = hooks.api_modules()
    assert {"artifact", "conformal", "calibration", "failure", "segmentation"} <= set(modules)
    assert not set(modules) & {"cli", "report", "demo"}
    for module in modules:
        page = site / "api" / f"{module}.html"
        assert page.exists(), page
        # mkdocstrings rendered the module (its object heading), not an empty page
        assert f'id="medsure.{module}"' in page.read_text(encoding="utf-8"), module
    artifact = (site / "api" / "artifact.html").read_text(encoding="utf-8")
    assert 'id="medsure.artifact.save_predictions"' in artifact
