"""Server-rendered HTML of the review pages. Every value from a worklist, the database or a request
goes through :func:`esc` (HTML) or :func:`url_part` (URLs); nothing is trusted, not even class names.

The pages need no inline script or style (the server's Content-Security-Policy forbids them): the
keyboard handling is ``/static/review.js`` and the look ``/static/review.css``.
"""

from __future__ import annotations

import html
from typing import Any
from urllib.parse import quote, urlencode

__all__ = ["esc", "url_part", "case_url", "queue_page", "case_page", "error_page", "REVIEW_JS", "REVIEW_CSS"]


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too, so it is safe inside attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def url_part(value: Any) -> str:
    """Percent-encode one path segment (a ``/`` inside an id is encoded as well)."""
    return quote(str(value), safe="")


def case_url(case_id: str) -> str:
    return "/case/" + url_part(case_id)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _layout(title: str, body: str, *, page: str) -> str:
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{esc(title)} · medsure review</title>"
        "<link rel='stylesheet' href='/static/review.css'>"
        "<script src='/static/review.js' defer></script>"
        f"</head><body data-page='{esc(page)}'>"
        "<header><a class='brand' href='/'>medsure review</a>"
        "<nav><a href='/'>queue</a> <a href='/export.csv'>export CSV</a></nav></header>"
        f"<main>{body}</main></body></html>"
    )


def error_page(status: int, message: str) -> str:
    return _layout(f"{status}", f"<h1>{status}</h1><p>{esc(message)}</p>", page="error")


def _select(name: str, label: str, options: list[tuple[str, str]], current: str) -> str:
    items = "".join(
        f"<option value='{esc(v)}'{' selected' if v == current else ''}>{esc(text)}</option>" for v, text in options
    )
    return f"<label>{esc(label)} <select name='{esc(name)}'>{items}</select></label>"


def queue_page(
    cases: list[dict[str, Any]],
    decisions: dict[str, dict[str, Any]],
    *,
    document: dict[str, Any],
    filters: dict[str, str],
    reason_text: dict[str, str],
    total: int,
    matching: int | None = None,
    page: int = 1,
    pages: int = 1,
) -> str:
    """The queue: cases in priority order with their reasons, set and current decision (one page of them)."""
    summary = document.get("summary", {})
    guarantee = document.get("guarantee", {})
    class_names = [str(c) for c in document.get("class_names", [])]
    form = (
        "<form class='filters' method='get' action='/'>"
        + _select(
            "decision",
            "triage",
            [("review", "review"), ("auto", "auto-accepted"), ("all", "all")],
            filters["decision"],
        )
        + _select(
            "status", "status", [("all", "all"), ("pending", "pending"), ("decided", "decided")], filters["status"]
        )
        + _select("reason", "reason", [("", "any reason"), *reason_text.items()], filters["reason"])
        + _select("cls", "class", [("", "any class"), *((c, c) for c in class_names)], filters["cls"])
        + "<button type='submit'>filter</button></form>"
    )
    rows = []
    for position, case in enumerate(cases):
        decided = decisions.get(str(case["id"]))
        reasons = ", ".join(reason_text.get(r, r) for r in case.get("reasons", []))
        shown_set = ", ".join(case.get("prediction_set", []))
        rows.append(
            f"<tr data-href='{esc(case_url(case['id']))}' data-row='{position}'>"
            f"<td>{esc(case['priority'])}</td>"
            f"<td><a href='{esc(case_url(case['id']))}'>{esc(case['id'])}</a></td>"
            f"<td class='decision-{esc(case['decision'])}'>{esc(case['decision'])}</td>"
            f"<td>{esc(reasons) or '–'}</td>"
            f"<td>{esc(case.get('predicted') or '')}</td>"
            f"<td>{esc(shown_set)}</td>"
            f"<td>{esc(_fmt(case.get('confidence')))}</td>"
            f"<td class='expert'>{esc(decided['label']) if decided else ''}</td></tr>"
        )
    table = (
        "<table class='queue'><thead><tr><th>priority</th><th>case</th><th>triage</th><th>reasons</th>"
        "<th>model</th><th>set</th><th>confidence</th><th>expert</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
        if rows
        else "<p class='empty'>No case matches these filters.</p>"
    )
    statements = "".join(f"<li>{esc(s)}</li>" for s in guarantee.get("statements", []))
    assumptions = "".join(f"<li>{esc(s)}</li>" for s in guarantee.get("assumptions", []))
    head = (
        f"<h1>Review queue</h1><p class='summary'>{esc(summary.get('n_review', '?'))} of "
        f"{esc(summary.get('n_cases', '?'))} cases sent to review "
        f"(review rate {esc(_fmt(summary.get('review_rate')))}); {len(decisions)} decided; "
        f"{matching if matching is not None else len(cases)} of {total} match the filters"
        f"{f'; page {page} of {pages}' if pages > 1 else ''}.</p>"
        f"<details><summary>Guarantee and assumptions</summary><ul>{statements}</ul>"
        f"<p>Assumptions:</p><ul>{assumptions}</ul></details>"
        "<p class='keys'>Keys: <kbd>j</kbd>/<kbd>k</kbd> move, <kbd>Enter</kbd> opens the case.</p>"
    )
    nav = ""
    if pages > 1:
        links = []
        if page > 1:
            links.append(f"<a href='/?{esc(filters_query({**filters, 'page': str(page - 1)}))}'>← previous page</a>")
        if page < pages:
            links.append(f"<a href='/?{esc(filters_query({**filters, 'page': str(page + 1)}))}'>next page →</a>")
        nav = "<nav class='pages'>" + " ".join(links) + "</nav>"
    return _layout("queue", head + form + table + nav, page="queue")


def case_page(
    case: dict[str, Any],
    *,
    document: dict[str, Any],
    history: list[dict[str, Any]],
    choices: list[str],
    reason_text: dict[str, str],
    previous_id: str | None,
    next_id: str | None,
    position: int,
    total: int,
    reviewer: str,
) -> str:
    """One case: image, overlays, the set with probabilities, reasons, history and the decision form."""
    cid = str(case["id"])
    figures = []
    if case.get("thumbnail"):
        figures.append(
            f"<figure><img src='/{esc(case['thumbnail'])}' alt='case image' width='256' height='256'>"
            "<figcaption>image</figcaption></figure>"
        )
    figures += [
        f"<figure><img src='/{esc(overlay['file'])}' alt='{esc(overlay['title'])}' width='256' height='256'>"
        f"<figcaption>{esc(overlay['title'])}</figcaption></figure>"
        for overlay in case.get("overlays", [])
    ]
    images = f"<div class='images'>{''.join(figures)}</div>" if figures else "<p>No image in the worklist.</p>"
    names = [str(c) for c in document.get("class_names", [])]
    probs = dict(zip(names, case.get("probabilities") or [], strict=False))
    members = set(case.get("prediction_set", []))
    prob_rows = "".join(
        f"<tr class='{'in-set' if name in members else ''}'><td>{esc(name)}"
        f"{' ★' if name == case.get('predicted') else ''}</td><td>{float(p):.3f}</td>"
        f"<td>{'in set' if name in members else ''}</td></tr>"
        for name, p in sorted(probs.items(), key=lambda kv: -kv[1])
    )
    prob_table = (
        "<table class='probs'><thead><tr><th>class</th><th>probability</th><th>prediction set</th></tr></thead>"
        f"<tbody>{prob_rows}</tbody></table>"
        if prob_rows
        else ""
    )
    reasons = "".join(f"<li>{esc(reason_text.get(r, r))}</li>" for r in case.get("reasons", []))
    reasons_html = f"<ul class='reasons'>{reasons}</ul>" if reasons else "<p>No review reason (auto-accepted).</p>"
    scores = "".join(f"<tr><td>{esc(k)}</td><td>{esc(_fmt(v, 4))}</td></tr>" for k, v in case.get("scores", {}).items())
    if case.get("confidence") is not None:
        scores = f"<tr><td>confidence</td><td>{esc(_fmt(case['confidence'], 4))}</td></tr>" + scores
    neighbours = case.get("neighbours") or []
    neighbour_html = ""
    if neighbours:
        tiles = "".join(
            "<figure class='neighbour'>"
            + (
                f"<img src='/{esc(nb['thumbnail'])}' alt='calibration case' width='96' height='96'>"
                if nb.get("thumbnail")
                else ""
            )
            + f"<figcaption>{esc(nb['label'])}<br><small>{esc(nb['id'])} · d={esc(_fmt(nb['distance'], 2))}</small>"
            "</figcaption></figure>"
            for nb in neighbours
        )
        neighbour_html = (
            "<h2>Nearest calibration cases</h2><p class='keys'>closest predicted probabilities; true labels</p>"
            f"<div class='images'>{tiles}</div>"
        )
    current = history[-1] if history else None
    hist_rows = "".join(
        f"<tr><td>{esc(h['decided_at'])}</td><td>{esc(h['reviewer'])}</td><td>{esc(h['label'])}</td>"
        f"<td>{esc(h['note'])}</td></tr>"
        for h in reversed(history)
    )
    hist_html = (
        "<table class='history'><thead><tr><th>when (UTC)</th><th>reviewer</th><th>label</th><th>note</th></tr>"
        f"</thead><tbody>{hist_rows}</tbody></table>"
        if hist_rows
        else "<p>No decision yet.</p>"
    )
    radios = []
    for j, choice in enumerate(choices):
        key = "u" if choice == "unsure" else (str(j + 1) if j < 9 else "")
        checked = " checked" if current is not None and current["label"] == choice else ""
        radios.append(
            f"<label class='choice'><input type='radio' name='label' value='{esc(choice)}' data-key='{esc(key)}'"
            f"{checked} required> <kbd>{esc(key)}</kbd> {esc(choice)}</label>"
        )
    form = (
        "<form class='decide' method='post' action='/decide'>"
        f"<input type='hidden' name='case_id' value='{esc(cid)}'>"
        f"<input type='hidden' name='next' value='{esc(next_id or '')}'>"
        f"<fieldset><legend>Final label</legend>{''.join(radios)}</fieldset>"
        "<label>note <textarea name='note' rows='2' maxlength='2000'></textarea></label>"
        f"<label>reviewer <input type='text' name='reviewer' value='{esc(reviewer)}' maxlength='100' required></label>"
        "<button type='submit'>Save and next <kbd>Enter</kbd></button></form>"
    )
    nav = (
        "<nav class='case-nav'>"
        + (f"<a id='prev' href='{esc(case_url(previous_id))}'>← previous</a>" if previous_id is not None else "")
        + f" <span>case {position + 1} of {total}</span> "
        + (f"<a id='next' href='{esc(case_url(next_id))}'>next →</a>" if next_id is not None else "")
        + "</nav>"
    )
    # a label already in the prediction file is never shown: the expert decides blind, and the audit
    # compares the two afterwards
    body = (
        f"{nav}<h1>Case {esc(cid)}</h1>"
        f"<p class='meta'>priority {esc(case['priority'])} · triage <b>{esc(case['decision'])}</b>"
        f"{' · model: ' + esc(case['predicted']) if case.get('predicted') else ''}</p>"
        f"<div class='case'><section>{images}{neighbour_html}</section><section>"
        f"<h2>Why review</h2>{reasons_html}{prob_table}"
        f"<table class='scores'><tbody>{scores}</tbody></table>"
        f"<h2>Decision</h2>{form}<p class='keys'>Keys: <kbd>1</kbd>–<kbd>9</kbd> choose, <kbd>u</kbd> unsure, "
        "<kbd>n</kbd> note, <kbd>Enter</kbd> save and next, <kbd>j</kbd>/<kbd>k</kbd> next/previous, "
        "<kbd>q</kbd> queue.</p>"
        f"<h2>History</h2>{hist_html}</section></div>"
    )
    return _layout(f"case {cid}", body, page="case")


def filters_query(filters: dict[str, str]) -> str:
    return urlencode({k: v for k, v in filters.items() if v})


REVIEW_CSS = """
*{box-sizing:border-box}body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{display:flex;gap:1.5em;align-items:center;padding:.5em 1em;background:#1d3557;color:#fff}
header a{color:#fff;margin-right:1em}.brand{font-weight:bold}main{padding:.5em 1em}
h1{font-size:1.3em;margin:.3em 0}h2{font-size:1.05em;margin:.6em 0 .3em}
table{border-collapse:collapse;background:#fff}td,th{padding:.2em .5em;border-bottom:1px solid #dde;text-align:left}
tr.selected{outline:2px solid #e76f51}.queue tr:hover{background:#eef}.decision-review{color:#b5172b;font-weight:bold}
.decision-auto{color:#2a7d3b}.filters{margin:.5em 0;display:flex;gap:1em;flex-wrap:wrap}
.case{display:grid;grid-template-columns:430px 1fr;gap:1em}.images{display:flex;flex-wrap:wrap;gap:.5em}
figure{margin:0;background:#fff;padding:4px}figure img{width:200px;height:200px;image-rendering:pixelated;display:block}
figcaption{font-size:.85em;text-align:center}figure.neighbour img{width:96px;height:96px}
figure.neighbour{max-width:120px;overflow-wrap:anywhere}
.in-set{background:#e8f4ea}kbd{border:1px solid #99a;border-radius:3px;
padding:0 .3em;font-size:.85em;background:#fff}.choice{display:inline-block;margin:.2em .8em .2em 0}
form.decide label{display:block;margin:.3em 0}textarea{width:100%}fieldset{border:1px solid #ccd}
.case-nav{display:flex;gap:1em}.keys{color:#556;font-size:.9em}button{padding:.3em 1em}
"""

REVIEW_JS = """
(function () {
  function typing(e) {
    var t = e.target.tagName;
    return t === 'TEXTAREA' || (t === 'INPUT' && e.target.type === 'text') || t === 'SELECT';
  }
  function go(id) { var a = document.getElementById(id); if (a) { window.location.href = a.href; } }
  document.addEventListener('keydown', function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) { return; }
    var page = document.body.dataset.page;
    if (typing(e)) { if (e.key === 'Escape') { e.target.blur(); } return; }
    if (page === 'case') {
      var radios = document.querySelectorAll('input[name=label]');
      for (var i = 0; i < radios.length; i++) {
        if (radios[i].dataset.key && radios[i].dataset.key === e.key) {
          radios[i].checked = true; e.preventDefault(); return;
        }
      }
      if (e.key === 'Enter') {
        var form = document.querySelector('form.decide');
        if (form && form.querySelector('input[name=label]:checked')) { e.preventDefault(); form.requestSubmit(); }
        return;
      }
      if (e.key === 'n') { e.preventDefault(); document.querySelector('textarea[name=note]').focus(); return; }
      if (e.key === 'j' || e.key === 'ArrowRight') { go('next'); return; }
      if (e.key === 'k' || e.key === 'ArrowLeft') { go('prev'); return; }
      if (e.key === 'q') { window.location.href = '/'; return; }
    }
    if (page === 'queue') {
      var rows = document.querySelectorAll('table.queue tbody tr');
      if (!rows.length) { return; }
      var cur = document.querySelector('table.queue tr.selected');
      var idx = cur ? parseInt(cur.dataset.row, 10) : -1;
      if (e.key === 'j' || e.key === 'ArrowDown') { idx = Math.min(rows.length - 1, idx + 1); }
      else if (e.key === 'k' || e.key === 'ArrowUp') { idx = Math.max(0, idx - 1); }
      else if (e.key === 'Enter') { window.location.href = (cur || rows[0]).dataset.href; return; }
      else { return; }
      e.preventDefault();
      if (cur) { cur.classList.remove('selected'); }
      rows[idx].classList.add('selected');
      rows[idx].scrollIntoView({block: 'nearest'});
    }
  });
})();
"""
