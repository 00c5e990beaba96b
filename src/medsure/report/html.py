"""A minimal, dependency-free HTML report: sections in order, images inlined as data URIs.

Feature modules build a :class:`Section` (title + HTML body) and the demo or CLI adds it with
:meth:`Report.add`. The written file has no external references, so it can be mailed or archived.
"""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np

from medsure import __version__
from medsure.utils.io import atomic_write_text


@dataclass
class Section:
    """One report section.

    ``order`` sorts sections (lower first); ``key`` is a stable anchor id.
    """

    title: str
    body_html: str
    key: str = ""
    order: int = 100
    summary: dict[str, Any] = field(default_factory=dict)

    def anchor(self) -> str:
        # only [a-z0-9-] reach id="..." and href="#...", whatever the key or title holds
        return "".join(c if c.isalnum() or c == "-" else "-" for c in (self.key or self.title.lower()))


@dataclass
class Report:
    title: str = "medsure report"
    sections: list[Section] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, section: Section) -> None:
        self.sections.append(section)

    def render(self) -> str:
        ordered = sorted(self.sections, key=lambda s: s.order)
        toc = "".join(f'<li><a href="#{s.anchor()}">{html.escape(s.title)}</a></li>' for s in ordered)
        body = "".join(
            f'<section id="{s.anchor()}"><h2>{html.escape(s.title)}</h2>{s.body_html}</section>' for s in ordered
        )
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.notes)
        stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        return _TEMPLATE.format(
            title=html.escape(self.title),
            toc=toc,
            body=body,
            stamp=stamp,
            version=html.escape(__version__),
            notes=f"<ul class='notes'>{notes}</ul>" if notes else "",
        )

    def write(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.render())


def figure_to_data_uri(fig, dpi: int = 110) -> str:
    """Render a matplotlib figure to a PNG data URI and close it."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def image_to_data_uri(image: np.ndarray) -> str:
    """Encode a uint8 image ``(H, W)`` or ``(H, W, 3|4)`` as a PNG data URI."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def img_tag(uri: str, alt: str = "", width: int | None = None) -> str:
    w = f' width="{width}"' if width else ""
    return f'<img src="{uri}" alt="{html.escape(alt)}"{w}>'


def html_table(
    rows: Sequence[dict[str, Any]] | Iterable[Sequence[Any]],
    header: Sequence[str] | None = None,
    float_format: str = "{:.4f}",
) -> str:
    """Render rows (dicts, or sequences with ``header``) as an HTML table."""
    table: list[Any] = list(rows)
    if table and isinstance(table[0], dict):
        header = list(header or table[0].keys())
        table = [[r.get(h, "") for h in header] for r in table]

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return html.escape(float_format.format(float(v)))
        return html.escape(str(v))

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in (header or []))
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in r) + "</tr>" for r in table)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ border-bottom: 2px solid #446; }} h2 {{ color: #335; border-bottom: 1px solid #ccd; }}
table {{ border-collapse: collapse; margin: .6em 0; font-size: 90%; }}
th, td {{ border: 1px solid #ccd; padding: 3px 8px; text-align: right; }}
th {{ background: #eef; }} img {{ max-width: 100%; }}
.flag-bad {{ color: #b00; font-weight: bold; }} .flag-ok {{ color: #070; font-weight: bold; }}
.gallery {{ display: flex; flex-wrap: wrap; gap: 8px; }} .gallery figure {{ margin: 0; font-size: 75%; }}
.notes {{ color: #555; font-size: 90%; }}
</style></head><body>
<h1>{title}</h1><p>Generated {stamp} by medsure.</p>{notes}
<nav><ol>{toc}</ol></nav>
{body}
<footer class="notes"><p>medsure {version}</p></footer>
</body></html>
"""
