"""Packaging habits: one version everywhere, a valid CITATION.cff, a changelog, licence files.

The version lives in ``src/medsure/__init__.py``; the installed metadata (pyproject reads it via
``[tool.setuptools.dynamic]``), ``medsure --version``, the latest release in CHANGELOG.md,
CITATION.cff and the provenance of the files medsure writes must all carry that same string.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest

import medsure

ROOT = Path(__file__).resolve().parents[1]
CITATION = ROOT / "CITATION.cff"
CHANGELOG = ROOT / "CHANGELOG.md"

# A release heading of Keep a Changelog: "## [1.2.3] - 2026-12-02"
RELEASE_HEADING = re.compile(
    r"^## \[(?P<version>\d+\.\d+\.\d+(?:[-.\w]*)?)\] - (?P<date>\d{4}-\d{2}-\d{2})\s*$", re.MULTILINE
)


def _cff_version_and_date() -> tuple[str, str]:
    text = CITATION.read_text(encoding="utf-8")
    version = re.search(r'^version:\s*"?([^"\n]+)"?\s*$', text, re.MULTILINE)
    date = re.search(r'^date-released:\s*"?([^"\n]+)"?\s*$', text, re.MULTILINE)
    assert version and date, "CITATION.cff needs top-level 'version' and 'date-released'"
    return version.group(1).strip(), date.group(1).strip()


def _latest_release() -> tuple[str, str]:
    releases = RELEASE_HEADING.findall(CHANGELOG.read_text(encoding="utf-8"))
    assert releases, "CHANGELOG.md has no release heading '## [x.y.z] - YYYY-MM-DD'"
    return releases[0]


def _cli() -> list[str]:
    """The installed console script beside this interpreter (the venv's), else the one on PATH."""
    beside = Path(sys.executable).with_name("medsure")
    found = str(beside) if beside.is_file() else shutil.which("medsure")
    if found is None:
        pytest.skip("the 'medsure' console script is not installed (pip install -e .)")
    return [found]


# ---- one version ----------------------------------------------------------------------------


def test_version_is_a_release_string():
    assert re.fullmatch(r"\d+\.\d+\.\d+(?:(?:a|b|rc)\d+)?(?:\.dev\d+)?", medsure.__version__), medsure.__version__


def test_pyproject_takes_the_version_from_the_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"], "pyproject.toml must not repeat the version"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "medsure.__version__"}


def test_installed_metadata_matches_the_package():
    installed = importlib.metadata.version("medsure")
    assert installed == medsure.__version__, (
        f"installed metadata says {installed}, medsure.__version__ says {medsure.__version__}: "
        "reinstall (make install, or pip install -e .)"
    )


def test_cli_version_matches_the_package():
    done = subprocess.run([*_cli(), "--version"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"medsure {medsure.__version__}"


def test_changelog_latest_release_is_the_package_version():
    version, _ = _latest_release()
    assert version == medsure.__version__


def test_citation_version_and_date_match_the_changelog():
    version, date = _latest_release()
    assert _cff_version_and_date() == (version, date)


def test_changelog_keeps_an_unreleased_section_above_the_releases():
    text = CHANGELOG.read_text(encoding="utf-8")
    unreleased = text.find("## [Unreleased]")
    first_release = RELEASE_HEADING.search(text)
    assert unreleased != -1 and first_release is not None
    assert unreleased < first_release.start()


def test_changelog_releases_are_newest_first():
    dates = [date for _, date in RELEASE_HEADING.findall(CHANGELOG.read_text(encoding="utf-8"))]
    assert dates == sorted(dates, reverse=True)


def test_saved_prediction_file_records_the_version(tmp_path):
    pred = medsure.make_predictions(
        np.array([[2.0, 0.0], [0.0, 1.0]]), ids=["a", "b"], class_names=["no", "yes"], labels=np.array([0, 1])
    )
    path = medsure.save_predictions(tmp_path / "pred.npz", pred)
    loaded = medsure.load_predictions(path)
    assert loaded.provenance.get("medsure_version") == medsure.__version__


# ---- citation -------------------------------------------------------------------------------


def _validate_cff(path: Path) -> None:
    """Validate ``path`` against the CFF schema bundled with cffconvert (no network)."""
    create_citation = pytest.importorskip("cffconvert.cli.create_citation").create_citation
    create_citation(str(path), None).validate()


def test_citation_cff_is_valid():
    _validate_cff(CITATION)


@pytest.mark.parametrize(
    "old, new",
    [
        ('date-released: "', 'date-released: "2026-13-45" #'),  # not a date
        ("license: Apache-2.0", "license: Apache-2"),  # not an SPDX identifier
        ('  - name: "The medsure maintainers"', "  - nickname: 1"),  # an author with a wrong field
    ],
)
def test_citation_validation_rejects_broken_metadata(tmp_path, old, new):
    # the validator must be live: the same file with one broken field fails
    text = CITATION.read_text(encoding="utf-8")
    assert old in text
    broken = tmp_path / "CITATION.cff"
    broken.write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(Exception, match=r"is not|does not match|not valid|Additional properties|unexpected"):
        _validate_cff(broken)


# ---- licence --------------------------------------------------------------------------------

# MD5 of https://www.apache.org/licenses/LICENSE-2.0.txt, the canonical text
APACHE_2_MD5 = "3b83ef96387f14655fc854ddc3c6bd57"


def test_license_is_the_verbatim_apache_2_text():
    assert hashlib.md5((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_MD5
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert {"LICENSE", "NOTICE"} <= set(project["license-files"])


def test_notice_attributes_every_embedded_dataset():
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    embedded = ROOT / "src" / "medsure" / "data" / "embedded"
    manifest = json.loads((embedded / "manifest.json").read_text(encoding="utf-8"))
    for name, entry in manifest.items():
        assert entry["file"] in notice, f"NOTICE does not mention {entry['file']} ({name})"
        # the licence named in the manifest appears in NOTICE (CC BY 4.0 / CC BY-SA 4.0)
        assert entry["license"] in notice, f"NOTICE does not state {entry['license']} for {name}"
        first_author = entry["citation"].split()[0].rstrip(",")
        assert first_author in notice, f"NOTICE does not cite {first_author} for {name}"


def test_readme_says_how_to_cite():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    start = readme.find("## How to cite")
    assert start != -1, "README.md has no 'How to cite' section"
    section = readme[start:]
    assert "CITATION.cff" in section
    # every paper in CITATION.cff's references is named in the README table (by its first author)
    references = CITATION.read_text(encoding="utf-8").split("\nreferences:", 1)[1].split("\n  - type: ")[1:]
    assert references, "CITATION.cff lists no references"
    first_authors = {re.search(r"family-names: (.+)", ref).group(1).strip() for ref in references}  # type: ignore[union-attr]
    missing = sorted(name for name in first_authors if name not in section)
    assert not missing, f"README 'How to cite' does not name: {missing}"
