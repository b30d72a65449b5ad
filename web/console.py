"""The console's pages: overview, order lineage, search, failed tasks (with retry), quarantine,
and reconciliation runs with their reports.  Server-rendered HTML with inline SVG charts: no
script, no external asset, so the console works where nothing but the server can be reached."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy import select

from chain.lineage import order_lineage, recent_quarantine
from models.reconcile import ReconcileDiff, ReconcileRun
from models.storage import Storage
from reliability.failures import list_failures, parse_failure_id, revive
from search.documents import table_columns
from search.find import find_orders
from search.query import OrderQuery, QueryError
from settings import Settings
from web.auth import authenticate, new_csrf_token

_TEMPLATES = Environment(loader=PackageLoader("web", "templates"), autoescape=select_autoescape(["j2"]),
                         trim_blocks=True, lstrip_blocks=True)
#: Rows a list page shows.
PAGE_ROWS = 200
#: The search form's fields, in the order shown, with their labels.
SEARCH_FIELDS = (("flow", "Flow"), ("order_id", "Order"), ("store_id", "Store"), ("status", "Status"),
                 ("member_id", "Member"), ("channel", "Channel"), ("sku_id", "SKU"), ("min_amount", "Amount from"),
                 ("max_amount", "Amount to"), ("date_from", "Day from"), ("date_to", "Day to"))


def render(template: str, **values: Any) -> str:
    return _TEMPLATES.get_template(template).render(**values)


def age(since: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """``3 d 4 h``, ``2 h 5 min``, ``45 s``: how long ago ``since`` (naive UTC) was."""
    if since is None:
        return ""
    seconds = int(((now or dt.datetime.now(dt.UTC).replace(tzinfo=None)) - since).total_seconds())
    if seconds < 120:
        return f"{max(0, seconds)} s"
    minutes, hours, days = seconds // 60, seconds // 3600, seconds // 86400
    if days:
        return f"{days} d {hours % 24} h"
    return f"{hours} h {minutes % 60} min" if hours else f"{minutes} min"


_TEMPLATES.filters["age"] = age


def safe_next(target: str | None) -> str:
    """Only a path of this site is followed after login (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def recent_runs(storage: Storage, limit: int = 50) -> list[dict[str, Any]]:
    runs = ReconcileRun.__table__
    with storage.dws_engine.connect() as connection:
        rows = connection.execute(select(runs).order_by(runs.c.id.desc()).limit(limit)).all()
    return [dict(row._mapping) for row in rows]


def add_pages(app: FastAPI, store: Callable[[], Storage], user_of: Callable[[Request], str],
              check_csrf: Callable[[Request, str | None], None], page: Callable[..., HTMLResponse],
              settings: Settings) -> None:
    """The console's routes on ``app`` (none of them in the OpenAPI description)."""

    @app.get("/login", include_in_schema=False)
    def login_form(request: Request, next: str = "/") -> Response:
        return page(request, "login.html.j2", next=safe_next(next), error=None)

    @app.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        form = await request.form()
        check_csrf(request, _text(form.get("csrf")))
        name, password = _text(form.get("username")) or "", _text(form.get("password")) or ""
        target = safe_next(_text(form.get("next")))
        from starlette.concurrency import run_in_threadpool

        if not await run_in_threadpool(authenticate, settings.web_users, name, password):
            response = page(request, "login.html.j2", next=target, error="Unknown user or wrong password.")
            response.status_code = 401
            return response
        request.session.clear()  # a new session on login: nothing from before it is carried over
        request.session.update(user=name, csrf=new_csrf_token())
        return RedirectResponse(target, status_code=303)

    @app.post("/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        form = await request.form()
        check_csrf(request, _text(form.get("csrf")))
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # Every page below needs a console login; without one, LoginRequired redirects to /login.
    pages = APIRouter(include_in_schema=False, dependencies=[Depends(user_of)])

    @pages.get("/")
    def overview(request: Request) -> Response:
        from web.overview import overview_charts

        return page(request, "overview.html.j2", figures=overview_charts(store()))

    @pages.get("/orders/{order_id}")
    def lineage(request: Request, order_id: str) -> Response:
        found = order_lineage(store(), order_id)
        known = any(found[part] for part in ("metadata", "tasks", "dwd_order", "quarantine", "failed"))
        response = page(request, "order.html.j2", order=found, known=known)
        if not known:
            response.status_code = 404
        return response

    @pages.get("/search")
    def search(request: Request) -> Response:
        given = {name: request.query_params.get(name, "").strip() for name, _ in SEARCH_FIELDS}
        found, error, columns, ids = None, None, [], []
        if any(given.values()) or request.query_params.get("all"):
            try:
                query = OrderQuery.parse(**given)
                document = query.document()
                found = find_orders(store(), query)
                # The columns the searched flow's document has; each row links to its entity.
                columns, ids = table_columns(document), [document.entity_id(o) for o in found.orders]
            except QueryError as problem:
                error = str(problem)
        response = page(request, "search.html.j2", fields=SEARCH_FIELDS, given=given, found=found, error=error,
                        columns=columns, ids=ids)
        if error:
            response.status_code = 422
        return response

    @pages.get("/orders")
    def order_lookup(request: Request, order_id: str = "") -> Response:
        if not order_id.strip():
            return RedirectResponse("/search", status_code=303)
        return RedirectResponse(f"/orders/{quote(order_id.strip(), safe='')}", status_code=303)

    @pages.get("/failed")
    def failed(request: Request, done: str = "") -> Response:
        entries = list_failures(store(), PAGE_ROWS)
        return page(request, "failed.html.j2", failures=entries, done=done, limit=PAGE_ROWS)

    @pages.post("/failed/retry")
    async def retry(request: Request) -> Response:
        form = await request.form()
        check_csrf(request, _text(form.get("csrf")))
        keys = []
        for value in form.getlist("failure"):
            try:
                keys.append(parse_failure_id(_text(value) or ""))
            except ValueError:
                continue
        from starlette.concurrency import run_in_threadpool

        revived, submitted = await run_in_threadpool(_retry, store(), keys)
        return RedirectResponse(f"/failed?done={quote(f'{revived} revived, {submitted} submitted')}",
                                status_code=303)

    @pages.get("/quarantine")
    def quarantine(request: Request) -> Response:
        return page(request, "quarantine.html.j2", entries=recent_quarantine(store(), PAGE_ROWS), limit=PAGE_ROWS)

    @pages.get("/reconcile")
    def runs(request: Request) -> Response:
        return page(request, "runs.html.j2", runs=recent_runs(store()))

    @pages.get("/reconcile/{run_id}")
    def run(request: Request, run_id: int) -> Response:
        storage = store()
        with storage.dws_engine.connect() as connection:
            row = connection.execute(select(ReconcileRun.__table__).where(ReconcileRun.id == run_id)).first()
            diffs = connection.execute(select(ReconcileDiff.__table__).where(ReconcileDiff.run_id == run_id)
                                       .order_by(ReconcileDiff.id).limit(PAGE_ROWS)).all()
        if row is None:
            response = page(request, "runs.html.j2", runs=[], missing=run_id)
            response.status_code = 404
            return response
        report = _report(storage, row.html_path)
        return page(request, "run.html.j2", run=dict(row._mapping), diffs=[dict(d._mapping) for d in diffs],
                    report=report, limit=PAGE_ROWS)

    app.include_router(pages)

def _retry(storage: Storage, keys: list[tuple[str, str]]) -> tuple[int, int]:
    from tasks.submit import submit_tasks

    revived = revive(storage, keys)
    return len(revived), submit_tasks(revived)


def _report(storage: Storage, html_path: str | None) -> str | None:
    """A run's HTML report when it is a file in this deployment's reports folder."""
    if not html_path:
        return None
    folder = (storage.settings.home / "reports").resolve()
    path = Path(html_path).resolve()
    if folder not in path.parents or not path.is_file():
        return None
    return path.read_text(encoding="utf-8")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
