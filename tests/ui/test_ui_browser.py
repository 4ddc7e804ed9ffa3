"""End to end: a real Airflow API server (SQLite, SimpleAuthManager, the repo's plugins folder)
on loopback, driven by a real headless Chromium (Debian's ``chromium``) that logs in through
Airflow's login page and reads the streamtrain pages. Screenshots go to ``test-artifacts/``."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.ui.ui_cdp import Chromium, chromium_path
from tests.ui.ui_storegen import START, expected, make_store, run_id
from trainer.hours import hour_str

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
USER, PASSWORD = "alice", "alice-pw-" + uuid.uuid4().hex[:8]
N = 60  # versions; hour offsets 5 and 6 missing; the last one rolled back and retrained (v000061)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server():
    """Base URL of a fresh Airflow API server with the streamtrain plugin and one model."""
    work = REPO / "var" / "test-ui" / uuid.uuid4().hex[:8]
    home, dags, configs = work / "airflow_home", work / "dags", work / "configs"
    for d in (home, dags, configs):
        d.mkdir(parents=True)
    demo = (REPO / "examples" / "demo.toml").read_text().splitlines()
    demo = ['data_root = "../data"' if line.startswith("data_root") else
            'model_dir = "../model"' if line.startswith("model_dir") else line for line in demo]
    (configs / "demo.toml").write_text("\n".join(demo) + "\n")
    make_store(work / "model", "demo", N, missing=(5, 6), rollback_last=True)
    (work / "passwords.json").write_text(f'{{"{USER}": "{PASSWORD}"}}\n')
    port = _free_port()
    env = {**os.environ,
           "AIRFLOW_HOME": str(home),
           "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
           "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
           "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
           "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
           "AIRFLOW__CORE__AUTH_MANAGER":
               "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
           "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(work / "passwords.json"),
           "AIRFLOW__API_AUTH__JWT_SECRET": uuid.uuid4().hex * 2,
           "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
           "STREAMTRAIN_CONFIG_DIR": str(configs),
           "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO),
                                          os.environ.get("PYTHONPATH", "")])}
    airflow = str(Path(sys.executable).with_name("airflow"))
    subprocess.run([airflow, "db", "migrate"], env=env, check=True, timeout=300,
                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    log = open(work / "api-server.log", "wb")
    proc = subprocess.Popen([airflow, "api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("api-server did not start:\n"
                                   + (work / "api-server.log").read_text()[-3000:])
            time.sleep(0.5)
        yield base
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        server_log = (work / "api-server.log").read_text(errors="replace")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "ui-api-server.log").write_text(server_log)
        shutil.rmtree(work, ignore_errors=True)


def test_plugin_loads_without_import_errors(server):
    token = httpx.post(f"{server}/auth/token", json={"username": USER, "password": PASSWORD})
    auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
    plugins = httpx.get(f"{server}/api/v2/plugins", headers=auth).json()
    (plugin,) = [p for p in plugins["plugins"] if p["name"] == "streamtrain"]
    assert {v["destination"] for v in plugin["external_views"]} == {"nav", "dag_run"}
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/streamtrain"
    errors = httpx.get(f"{server}/api/v2/plugins/importErrors", headers=auth).json()
    assert errors["total_entries"] == 0, errors


@pytest.mark.parametrize("path", ["/streamtrain/", "/streamtrain/models/demo",
                                  "/streamtrain/api/models", "/streamtrain/api/models/demo/versions",
                                  "/streamtrain/models/demo/charts/quality.svg",
                                  "/streamtrain/runs/streamtrain_demo/x"])
def test_unauthenticated_access_is_refused(server, path):
    assert httpx.get(server + path).status_code == 401
    assert httpx.get(server + path, cookies={"_token": "forged"}).status_code in (401, 403)
    assert httpx.get(server + path, headers={"Authorization": "Bearer forged"}).status_code == 403


FRAME = "document.querySelector('iframe').contentDocument"


def log_in(page, server: str) -> None:
    """Through Airflow's own login form, landing on the plugin's nav entry (its models list in
    Airflow's frame)."""
    page.goto(f"{server}/auth/login?next=/plugin/streamtrain")
    page.wait_for("document.querySelector('input[name=password]') !== null")
    page.type_into("input[name=username]", USER)
    page.type_into("input[name=password]", PASSWORD)
    page.wait_for("!document.querySelector('button[type=submit]').disabled")
    page.eval("document.querySelector('button[type=submit]').click()")
    page.wait_for("location.pathname === '/plugin/streamtrain'")
    wait_in_frame(page, "#models tbody tr")


def wait_in_frame(page, selector: str) -> None:
    page.wait_for(f"(() => {{ try {{ return {FRAME}.querySelectorAll({selector!r}).length; }}"
                  f" catch (e) {{ return 0; }} }})()")


@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_browser_logs_in_and_reads_the_chain_and_charts(server):
    ARTIFACTS.mkdir(exist_ok=True)
    head = expected(N + 1)
    with Chromium() as browser:
        page = browser.new_page(width=1600, height=1000)

        # not logged in: the plugin page itself refuses, and points at Airflow's login
        page.goto(f"{server}/streamtrain/models/demo")
        assert page.eval("document.querySelector('h1').innerText") == "401"
        assert page.eval("document.querySelector('a[href*=\"/auth/login\"]') !== null")
        assert page.eval("document.body.innerText.includes('v0000')") is False

        # log in through Airflow's own login page, landing on the plugin's nav entry
        log_in(page, server)
        row = page.eval(f"{FRAME}.querySelector('#models tr[data-model=demo]').innerText")
        assert "v000061" in row and f"{head['auc']:.4f}" in row and "60" in row
        nav = page.eval("Array.from(document.querySelectorAll('nav a, a')).map(a => a.innerText)"
                        ".join('|')")
        assert "streamtrain" in nav
        time.sleep(0.5)
        page.screenshot(str(ARTIFACTS / "ui-models-in-airflow.png"), full_page=False)

        # the model page: chain table with the right numbers, five charts rendered
        page.goto(f"{server}/streamtrain/models/demo?per_page=20&hours=72")
        page.wait_for("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert page.eval("document.images.length") == 5
        calibration = page.eval("(() => { const i = document.querySelector("
                                "'#chart-calibration img'); return [i.naturalWidth, i.src]; })()")
        assert calibration[0] > 0
        svg = page.eval(f"fetch('{calibration[1]}').then(r => r.text())")
        assert '<g id="pred_ctr">' in svg and '<g id="actual_ctr">' in svg
        assert f"actual_ctr at {hour_str(START + N + 1)} = {head['actual_ctr']:.4f}" in svg
        assert page.eval("document.querySelectorAll('#chain tbody tr').length") == 20
        cells = page.eval("Object.fromEntries(Array.from(document.querySelectorAll("
                          "'#chain tr[data-version=v000059] td')).map(td => [td.className, td.innerText]))")
        e = expected(59)
        assert cells["c-auc"] == f"{e['auc']:.4f}" and cells["c-logloss"] == f"{e['logloss']:.4f}"
        assert cells["c-table_rows"] == f"{e['table_rows']:,}"
        assert cells["c-ids_admitted"] == str(e["ids_admitted"])
        assert cells["c-rows_evicted"] == str(e["rows_evicted"])
        assert cells["c-s-train"] == "61.00"
        link = page.eval("document.querySelector('#chain tr[data-version=v000059] a').href")
        assert link.startswith(f"{server}/dags/streamtrain_demo/runs/scheduled__")
        svg = page.eval("fetch(document.querySelector('#chart-quality img').src).then(r => r.text())")
        assert '<g id="auc">' in svg and f"auc at {hour_str(START + N + 1)} = {head['auc']:.4f}" in svg
        early = page.eval(f"fetch('{server}/streamtrain/models/demo/charts/table.svg?hours=12"
                          f"&end={hour_str(START + 11)}').then(r => r.text())")
        assert f'id="missing-{START + 5}"' in early and f'id="missing-{START + 6}"' in early
        page.screenshot(str(ARTIFACTS / "ui-model-demo.png"))

        # the per-run view (what the "streamtrain" tab of a DAG run shows)
        page.goto(f"{server}/streamtrain/runs/streamtrain_demo/{run_id(START + 40)}")
        auc = page.eval("document.querySelector('#run-versions td.c-auc').innerText")
        assert auc == f"{expected(39)['auc']:.4f}"  # hour offset 40 = version 39 (2 missing)
        page.screenshot(str(ARTIFACTS / "ui-run-view.png"))


#: every table of a page: the box it is shown in (its ``.scroll`` wrapper, else itself), how far
#: it reaches past that box, how many cells hide text, and how far the page reaches past the window.
TABLE_FIT = """(doc => { const view = doc.defaultView;
  return Array.from(doc.querySelectorAll('table')).map(t => {
    const wrap = t.closest('.scroll'), box = (wrap || t).getBoundingClientRect();
    const cells = Array.from(t.querySelectorAll('th, td'));
    return {id: t.id, right: box.right, left: box.left, viewport: view.innerWidth,
            overflow: wrap ? wrap.scrollWidth - wrap.clientWidth : 0,
            clipped: cells.filter(c => c.scrollWidth > c.clientWidth + 1).length,
            page_overflow: doc.documentElement.scrollWidth - doc.documentElement.clientWidth};
  }); })(DOC)"""


def assert_tables_fit(page, doc: str, where: str) -> list[dict]:
    """Nothing of any table is cut at this window width: each table lies inside the viewport,
    the page itself does not scroll sideways (in Airflow's frame a wider page is cut off),
    no cell hides text, and no column hides behind the table's own sideways scroll (whose bar
    sits under the last of 50 rows, out of sight)."""
    tables = page.eval(TABLE_FIT.replace("DOC", doc))
    assert tables, where
    for t in tables:
        assert t["page_overflow"] <= 0, (where, t)
        assert 0 <= t["left"] and t["right"] <= t["viewport"], (where, t)
        assert t["clipped"] == 0, (where, t)
        assert t["overflow"] <= 0, (where, t)
    return tables


CSP_PROBE = ("window.__csp = []; document.addEventListener('securitypolicyviolation',"
             " e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI));")


@pytest.mark.skipif(chromium_path() is None, reason="Debian's chromium is not installed")
def test_tables_fit_a_1280_px_window_and_the_csp_holds(server):
    """At a 1,280 px window, in Airflow's frame and on their own: the models list, the chain
    table (with its "Airflow run" column) and the run view fit; the pages work under their
    Content-Security-Policy (styles and charts load, nothing is reported) and an injected
    inline script is refused by the browser."""
    ARTIFACTS.mkdir(exist_ok=True)
    with Chromium() as browser:
        page = browser.new_page(width=1280, height=900)
        page.on_new_document(CSP_PROBE)
        log_in(page, server)
        assert_tables_fit(page, FRAME, "models list in Airflow's frame")

        # the model page inside Airflow's frame, as a user reaches it from the list
        page.eval(f"{FRAME}.querySelector('#models a[href*=\"/models/demo\"]').click()")
        wait_in_frame(page, "#chain tbody tr")
        page.wait_for(f"Array.from({FRAME}.images).every(i => i.complete && i.naturalWidth > 0)")
        fit = {t["id"]: t for t in assert_tables_fit(page, FRAME, "model page in Airflow's frame")}
        assert {"chain", "unversioned"} <= set(fit)
        run_link = page.eval(f"(() => {{ const a = {FRAME}.querySelector('#chain tbody tr a');"
                             " const r = a.getBoundingClientRect(); return [r.width, r.height]; })()")
        assert run_link[0] > 0 and run_link[1] > 0
        time.sleep(0.5)
        page.screenshot(str(ARTIFACTS / "ui-model-in-airflow-1280.png"), full_page=False)

        for path, where in [("/streamtrain/", "models list"),
                            ("/streamtrain/models/demo?per_page=50", "model page"),
                            (f"/streamtrain/runs/streamtrain_demo/{run_id(START + 40)}", "run view")]:
            page.goto(server + path)
            page.wait_for("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
            assert_tables_fit(page, "document", where)
            # the hashed stylesheet applies (a CSP refusing it would leave the defaults)
            assert page.eval("getComputedStyle(document.querySelector('th')).backgroundColor") \
                == "rgb(247, 250, 252)", where
            assert page.eval("window.__csp") == [], where
        page.screenshot(str(ARTIFACTS / "ui-run-view-1280.png"))

        # the policy is really in force: an inline script put into the page does not run
        ran = page.eval("(() => { const s = document.createElement('script');"
                        " s.textContent = 'window.__ran = true'; document.body.appendChild(s);"
                        " return window.__ran === true; })()")
        assert ran is False
        page.wait_for("window.__csp.length > 0")
        assert page.eval("window.__csp")[0].startswith("script-src")
