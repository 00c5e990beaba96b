"""The review web application (FastAPI, server-rendered HTML).

Security (what a hospital's IT will ask)
----------------------------------------
* every request needs the access token: ``Authorization: Bearer TOKEN``, or a session cookie that
  ``?token=TOKEN`` sets once (HttpOnly, SameSite=Strict; the token is then removed from the URL by a
  redirect); anything else gets 401;
* images are served only from the worklist's ``images/`` folder (anything resolving outside it: 404);
* every value shown is HTML-escaped; a Content-Security-Policy forbids inline scripts and styles
  and any other origin; no framing; no referrer (tokens must not leak through it);
* request bodies over ``max_body`` bytes are refused with 413 (and bodies without a length with 411);
* SQL is parameterised (:mod:`medsure.review.db`); a decision for an unknown case id is a 404 and
  stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response

from medsure.review.db import ReviewDB, decisions_csv
from medsure.review.pages import REVIEW_CSS, REVIEW_JS, case_page, case_url, error_page, queue_page
from medsure.review.worklist import Worklist

__all__ = ["create_app", "SESSION_COOKIE", "MAX_BODY_BYTES"]

SESSION_COOKIE = "medsure_review_session"
REVIEWER_COOKIE = "medsure_reviewer"
MAX_BODY_BYTES = 64 * 1024
QUEUE_PAGE_ROWS = 200  # a queue of 100,000 cases is shown a page at a time
MAX_NOTE = 2000
MAX_REVIEWER = 100
_SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; "
        b"frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def session_value(token: str) -> str:
    """The cookie value of a session: an HMAC of the token (the cookie never holds the token itself)."""
    return hmac.new(token.encode(), b"medsure-review-session", hashlib.sha256).hexdigest()


class _Guard:
    """ASGI middleware: security headers, body size limit and token authentication."""

    def __init__(self, app: ASGIApp, token: str, max_body: int) -> None:
        self.app = app
        self.token = token
        self.session = session_value(token)
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + _SECURITY_HEADERS
            await send(message)

        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        if scope["method"] in ("POST", "PUT", "PATCH"):
            length = headers.get("content-length")
            if length is None:
                await _plain(send_secured, 411, "a request body needs a Content-Length header")
                return
            if not length.isdigit() or int(length) > self.max_body:
                await _plain(send_secured, 413, f"request body over {self.max_body} bytes")
                return
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        if "token" in query:
            if len(query["token"]) == 1 and hmac.compare_digest(query["token"][0].encode(), self.token.encode()):
                rest = {k: v for k, v in query.items() if k != "token"}
                location = scope.get("root_path", "") + scope["path"]
                if rest:
                    location += "?" + urlencode(rest, doseq=True)
                await send_secured(
                    {
                        "type": "http.response.start",
                        "status": 303,
                        "headers": [
                            (b"location", _header_safe(location)),
                            (
                                b"set-cookie",
                                f"{SESSION_COOKIE}={self.session}; HttpOnly; SameSite=Strict; Path=/".encode(),
                            ),
                            (b"content-length", b"0"),
                        ],
                    }
                )
                await send_secured({"type": "http.response.body", "body": b""})
                return
            await _plain(send_secured, 401, "wrong access token")
            return
        if not self._authorised(headers):
            await _plain(
                send_secured,
                401,
                "access token required: open the link printed by `medsure serve` (…/?token=TOKEN) "
                "or send 'Authorization: Bearer TOKEN'",
                extra=[(b"www-authenticate", b"Bearer")],
            )
            return
        await self.app(scope, receive, send_secured)

    def _authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and hmac.compare_digest(auth[7:].strip().encode(), self.token.encode()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == SESSION_COOKIE and hmac.compare_digest(value.encode(), self.session.encode()):
                return True
        return False


def _header_safe(location: str) -> bytes:
    from urllib.parse import quote

    return quote(location, safe="/?&=%:;,+@!$'()*~._-").encode("latin-1")


async def _plain(send: Send, status: int, text: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (f"{status}: {text}\n").encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                *(extra or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def create_app(worklist: Worklist, db: ReviewDB, token: str, *, max_body: int = MAX_BODY_BYTES) -> Any:
    """The review application for one worklist and its database, guarded by ``token``.

    Returns an ASGI application (the FastAPI app wrapped in the security middleware).
    """
    if len(token) < 16:
        raise ValueError("the access token must have at least 16 characters")  # checked by the CLI first
    app = FastAPI(title="medsure review", docs_url=None, redoc_url=None, openapi_url=None)
    cases = worklist.cases  # sorted by priority
    index = worklist.case_index()
    choices = worklist.choices
    reason_text = dict(worklist.document.get("reason_text", {}))
    images_dir = (worklist.folder / "images").resolve()
    total = len(cases)

    def html(text: str, status: int = 200) -> HTMLResponse:
        return HTMLResponse(text, status_code=status)

    def not_found(message: str) -> HTMLResponse:
        return html(error_page(404, message), 404)

    @app.get("/", response_class=HTMLResponse)
    def queue(
        request: Request,
        decision: str = "review",
        status: str = "all",
        reason: str = "",
        cls: str = "",
        page: int = 1,
    ) -> HTMLResponse:
        filters = {
            "decision": decision if decision in ("review", "auto", "all") else "review",
            "status": status if status in ("all", "pending", "decided") else "all",
            "reason": reason if reason in reason_text else "",
            "cls": cls if cls in worklist.document.get("class_names", []) else "",
        }
        current = db.current()
        shown = []
        for case in cases:
            if filters["decision"] != "all" and case["decision"] != filters["decision"]:
                continue
            decided = str(case["id"]) in current
            if (filters["status"] == "pending" and decided) or (filters["status"] == "decided" and not decided):
                continue
            if filters["reason"] and filters["reason"] not in case.get("reasons", []):
                continue
            if (
                filters["cls"]
                and filters["cls"] != case.get("predicted")
                and filters["cls"] not in case.get("prediction_set", [])
            ):
                continue
            shown.append(case)
        pages = max(1, -(-len(shown) // QUEUE_PAGE_ROWS))
        page = min(max(page, 1), pages)
        rows = shown[(page - 1) * QUEUE_PAGE_ROWS : page * QUEUE_PAGE_ROWS]
        return html(
            queue_page(
                rows,
                current,
                document=worklist.document,
                filters=filters,
                reason_text=reason_text,
                total=total,
                matching=len(shown),
                page=page,
                pages=pages,
            )
        )

    @app.get("/case/{case_id:path}", response_class=HTMLResponse)
    def case_view(request: Request, case_id: str) -> HTMLResponse:
        j = index.get(case_id)
        if j is None:
            return not_found("no case with this id in the worklist")
        return html(
            case_page(
                cases[j],
                document=worklist.document,
                history=db.history(case_id),
                choices=choices,
                reason_text=reason_text,
                previous_id=str(cases[j - 1]["id"]) if j > 0 else None,
                next_id=str(cases[j + 1]["id"]) if j + 1 < total else None,
                position=j,
                total=total,
                reviewer=request.cookies.get(REVIEWER_COOKIE, "")[:MAX_REVIEWER],
            )
        )

    def _checked_decision(fields: dict[str, Any]) -> tuple[dict[str, str] | None, Response | None]:
        case_id = fields.get("case_id")
        label = fields.get("label")
        reviewer = str(fields.get("reviewer") or "").strip()
        note = str(fields.get("note") or "")
        if not isinstance(case_id, str) or case_id not in index:
            return None, JSONResponse({"error": "unknown case id"}, status_code=404)
        if label not in choices:
            return None, JSONResponse({"error": "label must be one of the choices", "choices": choices}, 422)
        if not reviewer or len(reviewer) > MAX_REVIEWER:
            return None, JSONResponse({"error": f"reviewer name of 1 to {MAX_REVIEWER} characters required"}, 422)
        if len(note) > MAX_NOTE:
            return None, JSONResponse({"error": f"note longer than {MAX_NOTE} characters"}, 422)
        return {"case_id": case_id, "label": str(label), "reviewer": reviewer, "note": note}, None

    @app.post("/decide")
    async def decide_form(request: Request) -> Response:
        body = (await request.body()).decode("utf-8", errors="replace")
        form = {k: v[0] for k, v in parse_qs(body, keep_blank_values=True).items()}
        checked, problem = _checked_decision(form)
        if problem is not None or checked is None:
            if problem is not None and problem.status_code == 404:
                return not_found("no case with this id in the worklist: nothing was stored")
            detail = json.loads(bytes(problem.body)) if problem is not None else {}
            return html(error_page(422, str(detail.get("error", "invalid decision"))), 422)
        db.add_decision(checked["case_id"], checked["label"], checked["reviewer"], checked["note"])
        target = form.get("next", "")
        location = case_url(target) if target in index else "/"
        response = RedirectResponse(location, status_code=303)
        response.set_cookie(REVIEWER_COOKIE, checked["reviewer"], httponly=True, samesite="strict")
        return response

    @app.post("/api/decisions")
    async def decide_api(request: Request) -> Response:
        try:
            fields = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(fields, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        checked, problem = _checked_decision(fields)
        if problem is not None or checked is None:
            return problem or JSONResponse({"error": "invalid"}, 422)
        row = db.add_decision(checked["case_id"], checked["label"], checked["reviewer"], checked["note"])
        return JSONResponse(row, status_code=201)

    @app.get("/api/history")
    def history(case_id: str) -> Response:
        if case_id not in index:
            return JSONResponse({"error": "unknown case id"}, status_code=404)
        return JSONResponse(db.history(case_id))

    @app.get("/export.csv")
    def export() -> Response:
        return PlainTextResponse(
            decisions_csv(db.all_decisions()),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": "attachment; filename=decisions.csv"},
        )

    @app.get("/images/{name:path}")
    def image(name: str) -> Response:
        if "\x00" in name:
            return not_found("no such image")
        try:
            path = (images_dir / name).resolve()
        except (OSError, ValueError):
            return not_found("no such image")
        if not path.is_relative_to(images_dir) or path.suffix != ".png" or not path.is_file():
            return not_found("no such image")
        return FileResponse(Path(path), media_type="image/png")

    @app.get("/static/review.js")
    def script() -> Response:
        return Response(REVIEW_JS, media_type="text/javascript; charset=utf-8")

    @app.get("/static/review.css")
    def style() -> Response:
        return Response(REVIEW_CSS, media_type="text/css; charset=utf-8")

    return _Guard(app, token, max_body)
