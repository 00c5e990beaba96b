"""The review server live: `medsure serve` in a subprocess, 50 concurrent decisions from threads, and
a real browser (Playwright driving Debian's Chromium) using the page with the keyboard."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the review extra is not installed (pip install 'medsure[review]')")
pytest.importorskip("uvicorn", reason="the review extra is not installed (pip install 'medsure[review]')")

from test_review import XSS, make_worklist

TOKEN = "live-token-abcdefghijklmnop"
CHROMIUM = Path("/usr/bin/chromium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _request(url: str, *, data: bytes | None = None, token: str | None = TOKEN, timeout: float = 30.0):
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`medsure serve` on a free port with a known token; yields (base url, worklist folder, db path)."""
    tmp = tmp_path_factory.mktemp("live")
    wl = make_worklist(tmp, n=30)
    db = tmp / "review.sqlite"
    port = _free_port()
    env = {**os.environ, "MEDSURE_REVIEW_TOKEN": TOKEN}
    process = subprocess.Popen(
        [sys.executable, "-m", "medsure", "serve", "--worklist", str(wl), "--db", str(db), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"medsure serve exited: {process.stdout.read() if process.stdout else ''}")
            try:
                if _request(base + "/", timeout=2)[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("medsure serve did not answer within 60 s")
            time.sleep(0.2)
        yield base, wl, db
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_fifty_concurrent_decisions_none_lost_none_duplicated(server):
    base, wl, _db = server
    cases = [c["id"] for c in json.loads((wl / "worklist.json").read_text())["cases"]][:10]
    jobs = [(cases[i % 10], ["benign", "normal", "unsure"][i % 3], f"reviewer {i}") for i in range(50)]
    barrier = threading.Barrier(50)
    answers: list[tuple[int, bytes] | None] = [None] * 50

    def post(i: int) -> None:
        case_id, label, reviewer = jobs[i]
        body = json.dumps({"case_id": case_id, "label": label, "reviewer": reviewer, "note": f"job {i}"}).encode()
        barrier.wait()
        answers[i] = _request(base + "/api/decisions", data=body, timeout=60)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(a is not None and a[0] == 201 for a in answers), [a[0] if a else None for a in answers]
    stored = [json.loads(a[1]) for a in answers if a is not None]
    ids = [s["decision_id"] for s in stored]
    assert len(set(ids)) == 50
    status, body = _request(base + "/export.csv")
    assert status == 200
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    mine = [r for r in rows if r["note"].startswith("job ")]
    assert sorted(int(r["decision_id"]) for r in mine) == sorted(ids)  # none lost, none duplicated
    assert sorted(r["note"] for r in mine) == sorted(f"job {i}" for i in range(50))
    for case_id in cases:  # the history of each case is one unbroken chain
        chain = sorted((int(r["decision_id"]), r["supersedes"]) for r in rows if r["case_id"] == case_id)
        previous = [""] + [str(d) for d, _ in chain[:-1]]
        assert [s for _, s in chain] == previous, case_id
        assert sum(r["current"] == "1" for r in rows if r["case_id"] == case_id) == 1


def _browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (test extra)")
    if not CHROMIUM.exists() and shutil.which("chromium") is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return sync_api


def test_browser_keyboard_review_reload_export_and_escaping(server, tmp_path):
    sync_api = _browser()
    base, wl, _db = server
    doc = json.loads((wl / "worklist.json").read_text())
    cases = doc["cases"]
    target = next(c for c in cases[10:] if XSS in c["prediction_set"] or c["predicted"] == XSS)
    position = cases.index(target)
    dialogs: list[str] = []
    executable = str(CHROMIUM) if CHROMIUM.exists() else shutil.which("chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            # without the token: 401
            anonymous = browser.new_context()
            response = anonymous.new_page().goto(base + "/")
            assert response is not None and response.status == 401
            anonymous.close()

            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
            page.goto(f"{base}/?token={TOKEN}&decision=all")
            assert "token=" not in page.url
            assert page.locator("table.queue tbody tr").count() == len(cases)
            page.goto(f"{base}/case/{target['id'].replace('/', '%2F')}")
            # the script-tag class name is shown as text, never run
            assert page.locator("table.probs td", has_text=XSS).count() == 1
            assert page.locator("script").count() == 1  # only /static/review.js
            # choose the second choice with the keyboard, type a note, save with Enter
            page.keyboard.press("2")
            assert page.locator("input[name=label]:checked").get_attribute("value") == doc["choices"][1]
            page.fill("input[name=reviewer]", "dr keyboard")
            page.keyboard.press("Escape")  # leave the text field: keys are commands again
            page.keyboard.press("n")
            page.keyboard.type("checked by keyboard")
            page.keyboard.press("Escape")
            with page.expect_navigation():
                page.keyboard.press("Enter")
            assert page.url.endswith("/case/" + cases[position + 1]["id"].replace("/", "%2F"))
            # back with the keyboard, reload: the decision is kept and shown
            with page.expect_navigation():
                page.keyboard.press("k")
            page.reload()
            history = page.locator("table.history")
            cells = history.locator("tbody tr").first.locator("td").all_inner_texts()
            assert cells[1:] == ["dr keyboard", doc["choices"][1], "checked by keyboard"]
            assert page.locator("input[name=label]:checked").get_attribute("value") == doc["choices"][1]
            # the export holds it (the session cookie authorises the download)
            exported = context.request.get(base + "/export.csv")
            assert exported.status == 200
            rows = list(csv.DictReader(io.StringIO(exported.text())))
            assert any(r["case_id"] == target["id"] and r["note"] == "checked by keyboard" for r in rows)
            # the page works at 1280x800: the decision form is reachable, the image is on screen
            page.screenshot(path=str(tmp_path / "case.png"))
            assert page.locator("form.decide button").is_visible()
            box = page.locator("figure img").first.bounding_box()
            assert box is not None and box["x"] + box["width"] <= 1280
            context.close()
        finally:
            browser.close()
    assert dialogs == []
