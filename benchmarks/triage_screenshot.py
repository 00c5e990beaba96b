"""The README's picture of the review page: docs/review_page.png (1280 x 800).

BUSI breast ultrasound (CC BY 4.0, redistributable; the embedded copy) through the small CNN that
``tests/realpreds.py`` trains and caches: a policy fitted on its calibration split, the test split
triaged with a Grad-CAM map per candidate label (``medsure explain --classes ...``) and the nearest
calibration cases, served by the
review application and photographed by Chromium through Playwright on the first review case.

    .venv/bin/python benchmarks/triage_screenshot.py     # needs the review and test extras and chromium
"""

from __future__ import annotations

import json
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))

from medsure.artifact import save_predictions  # noqa: E402
from medsure.cli import main as medsure  # noqa: E402

OUT = REPO / "docs" / "review_page.png"
TOKEN = "screenshot-token-0123456789"


def main() -> int:
    import uvicorn
    from playwright.sync_api import sync_playwright

    from medsure.review.app import create_app
    from medsure.review.db import ReviewDB
    from medsure.review.worklist import load_worklist

    import realpreds

    cal, test = realpreds.classification_predictions("busi")
    with tempfile.TemporaryDirectory(prefix="medsure-shot-") as tmp:
        work = Path(tmp)
        save_predictions(work / "cal.npz", cal)
        save_predictions(work / "test.npz", test)
        policy = work / "policy.json"
        assert medsure(["policy", "fit", "--cal", str(work / "cal.npz"), "--alpha", "0.1", "--out", str(policy)]) == 0
        probe = work / "probe"
        assert medsure(["triage", "--policy", str(policy), "--pred", str(work / "test.npz"), "--out", str(probe)]) == 0
        first = [c["id"] for c in json.loads((probe / "worklist.json").read_text())["cases"][:3]]
        # Grad-CAM of every class for those cases (what `medsure explain --classes ...` writes to cams.npz)
        import numpy as np

        from medsure.predict import predict_cams

        names = [str(c) for c in cal.class_names]
        cams = predict_cams(
            realpreds.trained_run("busi"),
            realpreds.split_datasets("busi")["test"],
            first,
            targets=[list(range(len(names)))] * len(first),
        )
        (work / "cams").mkdir()
        np.savez(work / "cams" / "cams.npz", allow_pickle=False, **cams.to_npz_arrays())
        wl = work / "wl"
        triage = ["triage", "--policy", str(policy), "--pred", str(work / "test.npz"), "--out", str(wl)]
        extras = ["--cam", str(work / "cams" / "cams.npz"), "--neighbours", str(work / "cal.npz")]
        assert medsure([*triage, *extras]) == 0
        worklist = load_worklist(wl)
        db = ReviewDB(work / "review.sqlite")
        db.add_decision(worklist.cases[0]["id"], worklist.choices[0], "dr demo", "margins irregular; biopsy advised")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        server = uvicorn.Server(
            uvicorn.Config(create_app(worklist, db, TOKEN), host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.05)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/?token={TOKEN}")
            page.goto(f"http://127.0.0.1:{port}/case/" + worklist.cases[0]["id"].replace("/", "%2F"))
            OUT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(OUT))
            browser.close()
        server.should_exit = True
        thread.join(timeout=10)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
