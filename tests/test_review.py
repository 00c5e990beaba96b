"""The review web application through FastAPI's TestClient: token, cookies, escaping, traversal,
unknown ids, size limits, kept history, export."""

from __future__ import annotations

import csv
import io
import json
import warnings

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the review extra is not installed (pip install 'medsure[review]')")
pytest.importorskip("httpx", reason="httpx (FastAPI's TestClient) is not installed")

with warnings.catch_warnings():  # starlette would rather have httpx2; httpx is what the test extra pins
    warnings.filterwarnings("ignore", message=".*httpx2.*")
    from fastapi.testclient import TestClient

from medsure.artifact import make_predictions, save_predictions
from medsure.cli import main
from medsure.review.app import SESSION_COOKIE, create_app
from medsure.review.db import ReviewDB
from medsure.review.worklist import load_worklist

TOKEN = "test-token-0123456789abcdef"
XSS = "<script>alert(1)</script>"
NAMES = ["benign", XSS, "normal"]


def make_worklist(folder, *, n: int = 40, seed: int = 0, names=None):
    """A triaged worklist of synthetic cases (ids with a slash, a class name that is a script tag)."""
    names = names or NAMES
    rng = np.random.default_rng(seed)
    k = len(names)

    def pred(offset, labelled):
        y = rng.integers(0, k, n)
        logits = rng.normal(0, 1, (n, k)).astype(np.float32)
        logits[np.arange(n), y] += rng.uniform(0, 4, n).astype(np.float32)
        return make_predictions(
            logits,
            labels=y if labelled else None,
            ids=[f"site/{offset + i:03d}" for i in range(n)],
            class_names=names,
            thumbnails=rng.integers(0, 255, (n, 8, 8, 3), dtype=np.uint8),
        )

    folder.mkdir(parents=True, exist_ok=True)
    save_predictions(folder / "cal.npz", pred(0, True))
    save_predictions(folder / "new.npz", pred(1000, False))
    policy = folder / "policy.json"
    assert main(["policy", "fit", "--cal", str(folder / "cal.npz"), "--alpha", "0.2", "--out", str(policy)]) == 0
    wl = folder / "wl"
    args = ["triage", "--policy", str(policy), "--pred", str(folder / "new.npz"), "--out", str(wl)]
    assert main([*args, "--image-size", "16"]) == 0
    return wl


@pytest.fixture
def review(tmp_path):
    wl = make_worklist(tmp_path)
    worklist = load_worklist(wl)
    db = ReviewDB(tmp_path / "review.sqlite", worklist_id=worklist.document["policy"]["worklist_id"])
    client = TestClient(create_app(worklist, db, TOKEN), follow_redirects=False)
    return client, worklist, db, tmp_path


def _auth():
    return {"Authorization": f"Bearer {TOKEN}"}


def test_without_token_every_route_is_401(review):
    client, worklist, _db, _ = review
    case = worklist.cases[0]
    for method, url in [
        ("GET", "/"),
        ("GET", f"/case/{case['id']}"),
        ("GET", f"/{case['thumbnail']}"),
        ("GET", "/export.csv"),
        ("GET", "/static/review.js"),
        ("POST", "/api/decisions"),
        ("GET", "/?token=wrong-token"),
    ]:
        response = client.request(method, url, headers={"Authorization": "Bearer nope"})
        assert response.status_code == 401, url
    assert client.get("/", headers={"Cookie": f"{SESSION_COOKIE}={TOKEN}"}).status_code == 401  # token != session


def test_token_in_query_sets_httponly_cookie_and_leaves_the_url(review):
    client, *_ = review
    response = client.get(f"/?token={TOKEN}&decision=all")
    assert response.status_code == 303
    assert response.headers["location"] == "/?decision=all"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and TOKEN not in cookie
    page = client.get("/?decision=all")  # the client keeps the cookie
    assert page.status_code == 200 and "Review queue" in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    assert page.headers["referrer-policy"] == "no-referrer"


def test_class_names_and_ids_are_escaped(review):
    client, worklist, *_ = review
    queue = client.get("/?decision=all", headers=_auth()).text
    case = next(c for c in worklist.cases if XSS in c["prediction_set"])
    page = client.get(f"/case/{case['id']}", headers=_auth()).text
    for text in (queue, page):
        assert XSS not in text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "site/" in page


def test_images_only_from_the_worklist_folder(review):
    client, worklist, _db, tmp = review
    (tmp / "secret.png").write_bytes(b"\x89PNG secret")
    ok = client.get(f"/{worklist.cases[0]['thumbnail']}", headers=_auth())
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png"
    for url in [
        "/images/..%2Fworklist.json",
        "/images/%2e%2e/%2e%2e/secret.png",
        "/images/..%2F..%2Fsecret.png",
        "/images/%2Fetc%2Fpasswd",
        "/images/nothing.png",
        "/images/../worklist.json",
    ]:
        assert client.get(url, headers=_auth()).status_code == 404, url


def test_unknown_case_is_404_and_stores_nothing(review):
    client, _worklist, db, _ = review
    assert client.get("/case/nobody", headers=_auth()).status_code == 404
    response = client.post(
        "/api/decisions", headers=_auth(), json={"case_id": "nobody", "label": "benign", "reviewer": "dr x"}
    )
    assert response.status_code == 404
    form = client.post(
        "/decide",
        headers={**_auth(), "Content-Type": "application/x-www-form-urlencoded"},
        content="case_id=nobody&label=benign&reviewer=dr",
    )
    assert form.status_code == 404
    assert db.all_decisions() == []


def test_decisions_keep_history_and_export(review):
    client, worklist, db, _ = review
    case_id = worklist.cases[0]["id"]
    first = client.post(
        "/api/decisions", headers=_auth(), json={"case_id": case_id, "label": XSS, "reviewer": "dr a", "note": "=1+2"}
    )
    assert first.status_code == 201
    second = client.post(
        "/decide",
        headers={**_auth(), "Content-Type": "application/x-www-form-urlencoded"},
        content=f"case_id={case_id.replace('/', '%2F')}&label=unsure&reviewer=dr+b&note=look+again"
        f"&next={worklist.cases[1]['id'].replace('/', '%2F')}",
    )
    assert second.status_code == 303
    assert second.headers["location"] == "/case/" + worklist.cases[1]["id"].replace("/", "%2F")
    history = client.get("/api/history", params={"case_id": case_id}, headers=_auth()).json()
    assert [h["label"] for h in history] == [XSS, "unsure"]
    assert history[1]["supersedes"] == history[0]["id"]
    page = client.get(f"/case/{case_id}", headers=_auth()).text
    assert "look again" in page and "dr a" in page  # the old decision is still shown
    rows = list(csv.DictReader(io.StringIO(client.get("/export.csv", headers=_auth()).text)))
    assert [(r["label"], r["current"]) for r in rows] == [(XSS, "0"), ("unsure", "1")]
    assert rows[0]["note"] == "'=1+2"  # no formula reaches a spreadsheet
    assert len(db.all_decisions()) == 2


def test_invalid_decisions_are_refused(review):
    client, worklist, db, _ = review
    case_id = worklist.cases[0]["id"]
    bad = [
        {"case_id": case_id, "label": "not a class", "reviewer": "dr"},
        {"case_id": case_id, "label": "benign", "reviewer": ""},
        {"case_id": case_id, "label": "benign", "reviewer": "dr", "note": "x" * 2001},
    ]
    for body in bad:
        assert client.post("/api/decisions", headers=_auth(), json=body).status_code == 422
    assert client.post("/api/decisions", headers=_auth(), content=b"{nope").status_code == 400
    assert db.all_decisions() == []


def test_request_size_limit(review):
    client, worklist, db, _ = review
    body = json.dumps({"case_id": worklist.cases[0]["id"], "label": "benign", "reviewer": "dr", "note": "x" * 70000})
    response = client.post(
        "/api/decisions", headers={**_auth(), "Content-Type": "application/json"}, content=body.encode()
    )
    assert response.status_code == 413
    assert db.all_decisions() == []


def test_queue_filters_by_reason_and_class(review):
    client, worklist, *_ = review
    cases = worklist.cases
    reason = next(r for c in cases for r in c["reasons"])
    page = client.get("/", params={"decision": "all", "reason": reason}, headers=_auth()).text
    expected = [c["id"] for c in cases if reason in c["reasons"]]
    assert page.count("data-href=") == len(expected)
    page = client.get("/", params={"decision": "all", "cls": "normal"}, headers=_auth()).text
    expected = [c for c in cases if c["predicted"] == "normal" or "normal" in c["prediction_set"]]
    assert page.count("data-href=") == len(expected)
    page = client.get("/", params={"decision": "auto"}, headers=_auth()).text
    assert page.count("data-href=") == sum(c["decision"] == "auto" for c in cases)


def test_segmentation_case_page_shows_three_overlays_and_mask_choices(tmp_path):
    rng = np.random.default_rng(0)

    def seg(n, labelled):
        masks = np.zeros((n, 24, 24), dtype=np.int64)
        masks[:, 6:18, 6:18] = 1
        signal = np.where(masks == 1, 2.0, -2.0) + rng.normal(0, 1.5, (n, 24, 24))
        logits = np.stack([-signal / 2, signal / 2], axis=1).astype(np.float32)
        thumbs = rng.integers(0, 255, (n, 24, 24), dtype=np.uint8)
        return make_predictions(
            logits, masks=masks if labelled else None, thumbnails=thumbs, class_names=["background", "lesion"]
        )

    save_predictions(tmp_path / "cal.npz", seg(30, True))
    save_predictions(tmp_path / "new.npz", seg(5, False))
    policy = tmp_path / "policy.json"
    assert main(["policy", "fit", "--cal", str(tmp_path / "cal.npz"), "--seg-alpha", "0.2", "--out", str(policy)]) == 0
    wl = tmp_path / "wl"
    assert main(["triage", "--policy", str(policy), "--pred", str(tmp_path / "new.npz"), "--out", str(wl)]) == 0
    worklist = load_worklist(wl)
    assert worklist.choices == ["accept", "reject", "unsure"]
    client = TestClient(create_app(worklist, ReviewDB(tmp_path / "r.sqlite"), TOKEN), follow_redirects=False)
    case = worklist.cases[0]
    page = client.get(f"/case/{case['id']}", headers=_auth()).text
    assert [o["kind"] for o in case["overlays"]] == ["mask", "uncertainty", "conformal_mask"]
    for overlay in case["overlays"]:
        assert f"src='/{overlay['file']}'" in page
        assert client.get("/" + overlay["file"], headers=_auth()).status_code == 200
    body = {"case_id": case["id"], "label": "reject", "reviewer": "dr seg"}
    assert client.post("/api/decisions", headers=_auth(), json=body).status_code == 201
    assert client.post("/api/decisions", headers=_auth(), json={**body, "label": "benign"}).status_code == 422


def test_case_page_lists_nearest_calibration_cases(tmp_path):
    wl = make_worklist(tmp_path)
    wl2 = tmp_path / "wl2"
    args = ["triage", "--policy", str(tmp_path / "policy.json"), "--pred", str(tmp_path / "new.npz")]
    assert main([*args, "--out", str(wl2), "--neighbours", str(tmp_path / "cal.npz"), "--image-size", "16"]) == 0
    assert wl.is_dir()
    worklist = load_worklist(wl2)
    client = TestClient(create_app(worklist, ReviewDB(tmp_path / "r.sqlite"), TOKEN), follow_redirects=False)
    case = worklist.cases[0]
    page = client.get(f"/case/{case['id']}", headers=_auth()).text
    assert "Nearest calibration cases" in page
    for nb in case["neighbours"]:
        assert f"src='/{nb['thumbnail']}'" in page


def test_queue_is_paged(tmp_path, monkeypatch):
    from medsure.review import app as app_module

    monkeypatch.setattr(app_module, "QUEUE_PAGE_ROWS", 7)
    wl = make_worklist(tmp_path)
    worklist = load_worklist(wl)
    client = TestClient(create_app(worklist, ReviewDB(tmp_path / "r.sqlite"), TOKEN), follow_redirects=False)
    seen = []
    for page in range(1, 7):
        text = client.get("/", params={"decision": "all", "page": page}, headers=_auth()).text
        seen += [c["id"] for c in worklist.cases if f"data-href='/case/{c['id'].replace('/', '%2F')}'" in text]
    assert seen == [c["id"] for c in worklist.cases]  # 40 cases on 6 pages of 7, in priority order, each once


def test_the_expert_decides_blind_of_a_label_in_the_file(tmp_path):
    """A prediction file that carries labels (a retrospective study) must not show them on the case
    page: the expert's label is compared with them afterwards, by the audit."""
    folder = make_worklist(tmp_path / "a")
    policy = tmp_path / "a" / "policy.json"
    wl = tmp_path / "labelled"
    args = ["triage", "--policy", str(policy), "--pred", str(tmp_path / "a" / "cal.npz"), "--out", str(wl)]
    assert main([*args, "--image-size", "16"]) == 0
    worklist = load_worklist(wl)
    assert any(case.get("label") for case in worklist.cases)  # the worklist does hold the labels
    db = ReviewDB(tmp_path / "r.sqlite", worklist_id=worklist.document["policy"]["worklist_id"])
    client = TestClient(create_app(worklist, db, TOKEN), follow_redirects=False)
    case = next(c for c in worklist.cases if c.get("label"))
    page = client.get(f"/case/{case['id']}", headers=_auth())
    assert page.status_code == 200 and folder.exists()
    assert "truth" not in page.text.lower()
