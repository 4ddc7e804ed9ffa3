"""The streamtrain UI: a FastAPI app the plugin mounts at ``/streamtrain`` in the Airflow API server.

HTML pages (server-rendered, Jinja2 with autoescape, charts as matplotlib SVG) and the same data
as JSON under ``/api/`` (documented in ``docs/ui.md``). Every route requires an authenticated
Airflow user (:mod:`.auth`), the OpenAPI schema included, and so does every other path (an
unknown one answers 404 only once the user is known); every model-specific route also requires
read access to the model's DAG. Every HTML page carries a Content-Security-Policy that allows no
script at all, only the page's own stylesheet (pinned by its hash) and same-origin images.

``create_app(models=...)`` takes the model source as a callable so tests can serve a store
without config files; the default lists the DAG file's config folder (:func:`.data.discover_models`).
"""
from __future__ import annotations

import base64
import hashlib
import math
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Callable
from urllib.parse import quote, urlencode

from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from . import charts, data
from .auth import can_read_dag, current_user, login_url, require_dag

#: where the plugin mounts this app in the Airflow API server (``plugin.py``).
URL_PREFIX = "/streamtrain"
DEFAULT_HOURS = 168        # chart window: one week of data hours
MAX_HOURS = 24 * 92        # a quarter
DEFAULT_PER_PAGE = 50      # chain table rows per page
MAX_PER_PAGE = 500
WINDOWS = (24, 72, 168, 720, 2160)

_TEMPLATES = Path(__file__).with_name("templates")
#: the pages' one stylesheet, inlined in ``base.html`` and allowed by its hash
_CSS = (_TEMPLATES / "ui.css").read_text()


def content_security_policy(css: str = _CSS) -> str:
    """The CSP of every HTML page: nothing runs (no script source at all), the only style is
    `css` (by its sha256), images (the charts) and fetches come from this origin only, and only
    the Airflow UI on the same origin may frame the page."""
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    return ("default-src 'none'; "
            f"style-src 'sha256-{digest}'; "
            "img-src 'self'; connect-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'self'")


HTML_HEADERS = {"Cache-Control": "no-store", "Content-Security-Policy": content_security_policy(),
                "X-Content-Type-Options": "nosniff"}


# --------------------------------------------------------------------------- formatting


def _fmt_num(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _fmt_bytes(value) -> str:
    if value is None:
        return "–"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def _fmt_rate(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _env() -> Environment:
    env = Environment(loader=FileSystemLoader(_TEMPLATES),
                      autoescape=select_autoescape(["html", "svg", "xml"], default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters.update(num=_fmt_num, bytes=_fmt_bytes, rate=_fmt_rate,
                       q=lambda s: quote(str(s), safe=""))
    return env


# --------------------------------------------------------------------------- app


def create_app(models: Callable[[], list[data.ModelRef]] | None = None,
               mount_prefix: str = URL_PREFIX) -> FastAPI:
    """Build the app. `models` returns the current models (default: the config directory,
    re-listed on each request so a new config file shows without a restart)."""
    list_models = models or data.discover_models
    env = _env()
    svg_cache: "OrderedDict[tuple, str]" = OrderedDict()
    svg_lock = threading.Lock()

    app = FastAPI(title="streamtrain UI", version="1",
                  description="Model chains, per-hour metrics and charts of streamtrain models. "
                              "See docs/ui.md.",
                  dependencies=[Depends(current_user)],
                  # no Swagger/ReDoc pages: they load scripts from a CDN, which the CSP
                  # forbids; the schema is served below, behind the same authentication
                  docs_url=None, redoc_url=None, openapi_url=None)

    # -- helpers -----------------------------------------------------------------------

    def root(request: Request) -> str:
        return request.scope.get("root_path", "").rstrip("/")

    def airflow_base(request: Request) -> str:
        r = root(request)
        return r[: -len(mount_prefix)] if mount_prefix and r.endswith(mount_prefix) else ""

    def run_url(request: Request, airflow: dict) -> str | None:
        if not airflow.get("dag_id") or not airflow.get("run_id"):
            return None
        return (f"{airflow_base(request)}/dags/{quote(str(airflow['dag_id']), safe='')}"
                f"/runs/{quote(str(airflow['run_id']), safe='')}")

    def visible_models(request: Request) -> list[data.ModelRef]:
        user = request.state.streamtrain_user
        return [m for m in list_models() if can_read_dag(user, m.dag_id)]

    def model_by_name(request: Request, name: str) -> data.ModelRef:
        for m in list_models():
            if m.name == name:
                require_dag(request.state.streamtrain_user, m.dag_id)
                if m.error:
                    raise HTTPException(409, f"model {name!r}: config does not load: {m.error}")
                return m
        raise HTTPException(404, f"no model named {name!r}")

    def chain_of(m: data.ModelRef) -> data.Chain:
        try:
            return data.read_chain(m.model_dir)
        except data.StoreReadError as err:
            raise HTTPException(500, str(err)) from None

    def with_links(request: Request, row: dict) -> dict:
        row["airflow"]["url"] = run_url(request, row["airflow"])
        return row

    def summary(request: Request, m: data.ModelRef) -> dict:
        out = {"name": m.name, "dag_id": m.dag_id, "config_path": m.config_path,
               "model_dir": m.model_dir, "error": m.error, "versions": 0, "missing": 0,
               "empty": 0, "head": None, "freshness": data.freshness(None),
               "dag_url": f"{airflow_base(request)}/dags/{quote(m.dag_id, safe='')}"}
        if m.error:
            return out
        try:
            chain = data.read_chain(m.model_dir)
        except data.StoreReadError as err:
            out["error"] = str(err)
            return out
        out["versions"], out["missing"] = len(chain.versions), len(chain.missing)
        out["empty"] = len(chain.unversioned["empty_hours"])
        if chain.head is not None:
            out["head"] = with_links(request, data.version_row(m.model_dir, chain.head))
            out["freshness"] = data.freshness(chain.head.hour)
        return out

    def window(chain: data.Chain, hours: int, end: str | None) -> dict:
        end_hour = None
        if end:
            from trainer.hours import hour_index
            try:
                end_hour = hour_index(end)
            except ValueError as err:
                raise HTTPException(422, f"end: {err}") from None
        return data.series(chain, hours, end_hour)

    def page_json(request: Request, m: data.ModelRef, page: int, per_page: int) -> dict:
        chain = chain_of(m)
        versions, pages = data.page_of(chain, page, per_page)
        page = min(max(1, page), pages)
        return {"model": m.name, "total": len(chain.versions), "page": page, "pages": pages,
                "per_page": per_page, "order": "newest first",
                "versions": [with_links(request, data.version_row(m.model_dir, v))
                             for v in versions]}

    def html(template: str, request: Request, status_code: int = 200, **ctx) -> HTMLResponse:
        ctx.update(root=root(request), airflow_base=airflow_base(request))
        ctx.update(css=Markup(_CSS))
        return HTMLResponse(env.get_template(template).render(**ctx), status_code=status_code,
                            headers=HTML_HEADERS)

    # -- errors: HTML pages get an HTML error (with the login link on 401) -----------------

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException):
        path, prefix = request.scope.get("path", ""), root(request)
        rel = path[len(prefix):] if prefix and path.startswith(prefix) else path
        if rel.startswith("/api/") or rel.endswith(".svg"):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        return html("error.html", request, status_code=exc.status_code,
                    status=exc.status_code, detail=str(exc.detail),
                    login=login_url(request) if exc.status_code in (401, 403) else None)

    # -- JSON --------------------------------------------------------------------------

    # FastAPI's own schema route is a bare Starlette route that skips the app's dependencies
    @app.get("/api/openapi.json", include_in_schema=False)
    def api_openapi():
        return app.openapi()

    @app.get("/api/models", summary="All models the user may read, with head and freshness")
    def api_models(request: Request):
        return {"models": [summary(request, m) for m in visible_models(request)]}

    @app.get("/api/models/{name:path}/versions/{version}", summary="One version: row + meta.json")
    def api_version(request: Request, name: str, version: str):
        m = model_by_name(request, name)
        chain = chain_of(m)
        v = chain.find(version)
        if v is None:
            raise HTTPException(404, f"model {name!r} has no version {version!r}")
        rolled_back = v not in chain.versions
        row = with_links(request, data.version_row(m.model_dir, v, rolled_back=rolled_back))
        return {"model": m.name, "version": row, "meta": data.read_meta(m.model_dir, version),
                "ledger": v.event}

    @app.get("/api/models/{name:path}/versions", summary="The chain, newest first, paginated")
    def api_versions(request: Request, name: str, page: int = Query(1, ge=1),
                     per_page: int = Query(DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE)):
        return page_json(request, model_by_name(request, name), page, per_page)

    @app.get("/api/models/{name:path}/series", summary="Per-hour metrics of a window of hours")
    def api_series(request: Request, name: str,
                   hours: int = Query(DEFAULT_HOURS, ge=1, le=MAX_HOURS),
                   end: str | None = Query(None, description="last data hour, YYYY-MM-DDTHH")):
        m = model_by_name(request, name)
        return {"model": m.name, "hours": hours, **window(chain_of(m), hours, end)}

    @app.get("/api/models/{name:path}", summary="One model: head, freshness, counts")
    def api_model(request: Request, name: str):
        return summary(request, model_by_name(request, name))

    @app.get("/api/runs/{dag_id}/{run_id:path}", summary="What one Airflow DAG run committed")
    def api_run(request: Request, dag_id: str, run_id: str):
        return run_json(request, dag_id, run_id)

    def run_json(request: Request, dag_id: str, run_id: str) -> dict:
        require_dag(request.state.streamtrain_user, dag_id)
        for m in list_models():
            if m.dag_id == dag_id and not m.error:
                versions, missing = data.find_run(m, dag_id, run_id)
                return {"dag_id": dag_id, "run_id": run_id, "model": m.name,
                        "versions": [with_links(request, r) for r in versions],
                        "missing": missing}
        return {"dag_id": dag_id, "run_id": run_id, "model": None, "versions": [], "missing": []}

    # -- charts ------------------------------------------------------------------------

    @app.get("/models/{name:path}/charts/{chart}.svg", summary="A chart as SVG",
             response_class=Response)
    def chart_svg(request: Request, name: str, chart: str,
                  hours: int = Query(DEFAULT_HOURS, ge=1, le=MAX_HOURS),
                  end: str | None = None):
        if chart not in charts.CHARTS:
            raise HTTPException(404, f"no chart {chart!r}; charts: {sorted(charts.CHARTS)}")
        m = model_by_name(request, name)
        chain = chain_of(m)
        key = (m.model_dir, chain.stamp, chart, hours, end)
        with svg_lock:
            svg = svg_cache.get(key)
        if svg is None:
            svg = charts.render(chart, window(chain, hours, end),
                                title=f"{m.name}: {charts.CHARTS[chart]}")
            with svg_lock:
                svg_cache[key] = svg
                while len(svg_cache) > 256:
                    svg_cache.popitem(last=False)
        return Response(svg, media_type="image/svg+xml",
                        headers={"Cache-Control": "private, max-age=30",
                                 "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})

    # -- HTML --------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse, summary="Models list")
    def page_models(request: Request):
        return html("models.html", request, models=[summary(request, m)
                                                    for m in visible_models(request)])

    @app.get("/models/{name:path}", response_class=HTMLResponse, summary="One model's chain")
    def page_model(request: Request, name: str, page: int = Query(1, ge=1),
                   per_page: int = Query(DEFAULT_PER_PAGE, ge=1, le=MAX_PER_PAGE),
                   hours: int = Query(DEFAULT_HOURS, ge=1, le=MAX_HOURS),
                   end: str | None = None):
        m = model_by_name(request, name)
        listing = page_json(request, m, page, per_page)
        win = window(chain_of(m), hours, end)
        base = f"{root(request)}/models/{quote(m.name, safe='')}"

        def link(**kw):
            params = {"page": listing["page"], "per_page": per_page, "hours": hours}
            if end:
                params["end"] = end
            params.update(kw)
            return f"{base}?{urlencode(params)}"

        chart_q = urlencode({"hours": hours, **({"end": end} if end else {})})
        return html("model.html", request, model=summary(request, m), listing=listing,
                    unversioned=chain_of(m).unversioned,
                    window=win, hours=hours, windows=WINDOWS, link=link,
                    charts=[(c, t, f"{base}/charts/{c}.svg?{chart_q}")
                            for c, t in charts.CHARTS.items()],
                    phases=_phases(listing["versions"]))

    @app.get("/runs/{dag_id}/{run_id:path}", response_class=HTMLResponse,
             summary="One DAG run's hour (the per-run view in the Airflow UI)")
    def page_run(request: Request, dag_id: str, run_id: str):
        info = run_json(request, dag_id, run_id)
        return html("run.html", request, run=info, phases=_phases(info["versions"]))

    # last: any other path (``/docs`` included) authenticates first, then is not found
    @app.get("/{path:path}", include_in_schema=False)
    def not_found(path: str):
        raise HTTPException(404, f"no page {'/' + path!r}")

    return app


def _phases(rows: list[dict]) -> list[str]:
    seen: list[str] = []
    for r in rows:
        for p in r["seconds"]:
            if p not in seen:
                seen.append(p)
    return seen


#: the app the plugin mounts (models: the DAG file's config folder).
app = create_app()
