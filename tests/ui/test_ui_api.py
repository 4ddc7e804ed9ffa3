"""The streamtrain UI app (JSON endpoints, pages, charts, auth) on synthetic model stores."""
from __future__ import annotations

import base64
import hashlib
import html
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from streamtrain_airflow.ui import app as ui_app
from streamtrain_airflow.ui import data
from trainer.hours import hour_str
from tests.ui.ui_storegen import START, expected, make_store, run_id

EVIL = "<script>alert(1)</script>"
MISSING = (5, 6)           # hour offsets recorded missing
N = 30                     # versions written; the last is rolled back and re-committed as v000031


@pytest.fixture(autouse=True)
def _fresh_caches():
    data.clear_caches()
    yield
    data.clear_caches()


@pytest.fixture
def stores(tmp_path):
    make_store(tmp_path / "demo", "demo", N, missing=MISSING, rollback_last=True)
    make_store(tmp_path / "evil", EVIL, 3)
    make_store(tmp_path / "secret", "secret", 2)
    return tmp_path


@pytest.fixture
def models(stores):
    return [data.ModelRef("demo", "demo.toml", str(stores / "demo"), "streamtrain_demo"),
            data.ModelRef(EVIL, "evil.toml", str(stores / "evil"), "streamtrain_" + EVIL),
            data.ModelRef("secret", "secret.toml", str(stores / "secret"), "streamtrain_secret"),
            data.ModelRef("broken", "broken.toml", "", "streamtrain_broken",
                          error=f"ConfigError: name: {EVIL!r} may only hold letters")]


@pytest.fixture
def client(models, auth_manager, token, monkeypatch):
    """The app mounted at /streamtrain in a parent app, as the Airflow API server does; user
    alice may read every DAG except streamtrain_secret; "now" is 40 hours after START."""
    real = auth_manager.is_authorized_dag

    def is_authorized_dag(*, method, user, access_entity=None, details=None):
        if details is not None and details.id == "streamtrain_secret":
            return False
        return real(method=method, user=user, access_entity=access_entity, details=details)

    monkeypatch.setattr(auth_manager, "is_authorized_dag", is_authorized_dag)
    monkeypatch.setattr(data, "now_hour", lambda: START + 40)
    parent = FastAPI()
    parent.mount("/streamtrain", ui_app.create_app(models=lambda: models))
    c = TestClient(parent)
    c.headers["Authorization"] = f"Bearer {token}"
    return c


def hs(offset: int) -> str:
    return hour_str(START + offset)


# ----------------------------------------------------------------------------- auth


PROTECTED = ["/streamtrain/", "/streamtrain/api/models", "/streamtrain/models/demo",
             "/streamtrain/api/models/demo/versions", "/streamtrain/models/demo/charts/quality.svg",
             "/streamtrain/runs/streamtrain_demo/x", "/streamtrain/api/openapi.json",
             "/streamtrain/docs", "/streamtrain/redoc", "/streamtrain/docs/oauth2-redirect",
             "/streamtrain/openapi.json", "/streamtrain/no/such/page"]


@pytest.mark.parametrize("path", PROTECTED)
def test_no_credentials_is_401(client, path):
    del client.headers["Authorization"]
    r = client.get(path)
    assert r.status_code == 401
    assert "v0000" not in r.text and "auc" not in r.text  # nothing of the store leaks
    assert '"paths"' not in r.text and "/api/models/{name}" not in r.text  # nor of the API


def test_openapi_schema_for_the_authenticated(client):
    schema = client.get("/streamtrain/api/openapi.json").json()
    assert schema["info"]["title"] == "streamtrain UI"
    assert "/api/models/{name}/versions" in schema["paths"]
    assert "/api/openapi.json" not in schema["paths"] and "/{path}" not in schema["paths"]
    # no documentation pages (their scripts come from a CDN): not found, once authenticated
    assert client.get("/streamtrain/docs").status_code == 404


def test_bad_or_expired_token_is_refused(client, auth_manager):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    r = client.get("/streamtrain/api/models", headers={"Authorization": "Bearer not.a.jwt"})
    assert r.status_code == 403
    expired = auth_manager.generate_jwt(SimpleAuthManagerUser(username="alice", role="viewer"),
                                        expiration_time_in_seconds=-60)
    r = client.get("/streamtrain/api/models", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401


def test_session_cookie_is_accepted(client, token):
    del client.headers["Authorization"]
    client.cookies.set("_token", token)
    assert client.get("/streamtrain/api/models").status_code == 200


def test_html_401_offers_the_airflow_login(client):
    del client.headers["Authorization"]
    r = client.get("/streamtrain/models/demo")
    assert r.status_code == 401 and "text/html" in r.headers["content-type"]
    assert "/auth/login" in r.text


def test_dag_permission_hides_and_refuses_a_model(client):
    names = [m["name"] for m in client.get("/streamtrain/api/models").json()["models"]]
    assert "secret" not in names and "demo" in names
    assert client.get("/streamtrain/api/models/secret").status_code == 403
    assert client.get("/streamtrain/api/models/secret/versions").status_code == 403
    assert client.get("/streamtrain/models/secret/charts/auc.svg").status_code in (403, 404)
    assert client.get("/streamtrain/runs/streamtrain_secret/r").status_code == 403


# ----------------------------------------------------------------------------- JSON


def test_models_list_head_and_freshness(client):
    models = {m["name"]: m for m in client.get("/streamtrain/api/models").json()["models"]}
    demo = models["demo"]
    assert demo["versions"] == N and demo["missing"] == len(MISSING)
    head = demo["head"]
    assert head["version"] == "v000031" and head["kind"] == "delta"
    assert head["hour_str"] == hs(N + len(MISSING) - 1)   # offset 31
    assert head["metrics"]["auc"] == pytest.approx(expected(31)["auc"])
    assert demo["freshness"] == {"now_hour": START + 40, "now": hs(40), "lag_hours": 9,
                                 "state": "late"}
    assert demo["dag_url"] == "/dags/streamtrain_demo"
    assert models["broken"]["error"].startswith("ConfigError") and models["broken"]["head"] is None


def test_versions_page_values(client):
    body = client.get("/streamtrain/api/models/demo/versions?per_page=3").json()
    assert (body["total"], body["page"], body["pages"], body["per_page"]) == (N, 1, 10, 3)
    assert [v["version"] for v in body["versions"]] == ["v000031", "v000029", "v000028"]
    v = body["versions"][1]
    e = expected(29)
    assert v["hour_str"] == hs(30) and v["kind"] == "delta" and v["parent"] == "v000028"
    assert v["rows"] == {"admitted": 2900, "pending": 29, "tombstones": 4}
    assert v["bytes"] == e["bytes"] == 29 * 150
    for key in ("auc", "logloss", "pred_ctr", "actual_ctr", "copc", "ece", "rows_per_s"):
        assert v["metrics"][key] == pytest.approx(e[key])
    for key in ("rows", "table_rows", "ids_admitted", "ids_filtered", "rows_evicted"):
        assert v["metrics"][key] == e[key]
    assert v["seconds"] == {"load": 1.0, "train": 31.0, "stage": 0.5, "commit": 0.25}
    assert v["airflow"] == {"dag_id": "streamtrain_demo", "run_id": run_id(START + 30),
                            "url": "/dags/streamtrain_demo/runs/"
                                   + run_id(START + 30).replace(":", "%3A").replace("+", "%2B")}
    assert v["error"] == "" and v["rolled_back"] is False
    last = client.get("/streamtrain/api/models/demo/versions?per_page=3&page=10").json()
    assert [v["version"] for v in last["versions"]] == ["v000003", "v000002", "v000001"]
    assert last["versions"][-1]["kind"] == "full" and last["versions"][-1]["parent"] is None
    # a day boundary (hour offset 24 = version 22 after the two missing hours) is a full base
    day2 = client.get("/streamtrain/api/models/demo/versions/v000023").json()["version"]
    assert day2["hour_str"] == hs(24) and day2["kind"] == "full"


def test_page_out_of_range_is_clamped_and_bad_params_refused(client):
    assert client.get("/streamtrain/api/models/demo/versions?page=999&per_page=20").json()["page"] == 2
    assert client.get("/streamtrain/api/models/demo/versions?per_page=0").status_code == 422
    assert client.get("/streamtrain/api/models/demo/series?hours=100000").status_code == 422
    assert client.get("/streamtrain/api/models/demo/series?end=yesterday").status_code == 422
    assert client.get("/streamtrain/api/models/nope").status_code == 404


def test_version_detail_and_rolled_back_version(client):
    body = client.get("/streamtrain/api/models/demo/versions/v000030").json()
    assert body["version"]["rolled_back"] is True
    assert body["meta"]["metrics"]["rows"] == 30_000 and body["ledger"]["event"] == "commit"
    assert client.get("/streamtrain/api/models/demo/versions/v999999").status_code == 404


def test_series_window_and_missing_hours(client):
    body = client.get("/streamtrain/api/models/demo/series?hours=10").json()
    assert (body["start"], body["end"]) == (hs(22), hs(31))
    assert [p["version"] for p in body["points"]] == [f"v{i:06d}" for i in range(21, 30)] + ["v000031"]
    assert body["points"][0]["auc"] == pytest.approx(expected(21)["auc"])
    assert body["missing"] == []
    early = client.get(f"/streamtrain/api/models/demo/series?hours=8&end={hs(7)}").json()
    assert [m["hour_str"] for m in early["missing"]] == [hs(5), hs(6)]
    assert early["missing"][0]["reason"] == "partition never completed"
    assert [p["hour_str"] for p in early["points"]] == [hs(o) for o in (0, 1, 2, 3, 4, 7)]


def test_empty_hours_are_shown_as_chain_shows_them(tmp_path, auth_manager, token):
    from trainer import store
    from trainer.store.verify import settled_hours

    make_store(tmp_path / "gaps", "gaps", 6, missing=(2,), empty=(3, 4))
    store.mark_empty(tmp_path / "gaps", START + 9, "the job found 0 rows")  # the store's own path
    models = [data.ModelRef("gaps", "gaps.toml", str(tmp_path / "gaps"), "streamtrain_gaps")]
    c = TestClient(ui_app.create_app(models=lambda: models))
    c.headers["Authorization"] = f"Bearer {token}"
    want = settled_hours(tmp_path / "gaps")  # what `streamtrain chain --json` lists
    assert [h["hour_str"] for h in want["empty_hours"]] == [hs(3), hs(4), hs(9)]

    model = c.get("/api/models/gaps").json()
    assert (model["versions"], model["missing"], model["empty"]) == (6, 1, 3)
    series = c.get("/api/models/gaps/series?hours=24").json()
    assert series["empty"] == [{k: h[k] for k in ("hour", "hour_str", "reason")}
                               for h in want["empty_hours"]]
    assert series["empty"][2]["reason"] == "the job found 0 rows"
    assert [m["hour_str"] for m in series["missing"]] == [hs(2)]
    assert series["end"] == hs(9)  # an empty hour after the head still ends the window

    page = c.get("/models/gaps").text
    assert "<b>empty hours</b>3</div>" in page
    unversioned = page.split('id="unversioned"')[1].split("</table>")[0]
    empty_row = unversioned.split('<tr class="empty">')[1].split("</tr>")[0]
    assert [f'data-hour="{h["hour_str"]}"' in empty_row for h in want["empty_hours"]] == [True] * 3
    assert 'title="the job found 0 rows"' in empty_row and hs(2) not in empty_row
    assert f'data-hour="{hs(2)}"' in unversioned.split('<tr class="missing">')[1].split("</tr>")[0]
    assert "Empty hours in window:" in page
    listing = c.get("/").text.split('data-model="gaps"')[1].split("</tr>")[0]
    assert '<td class="c-empty">3</td>' in listing


def test_run_lookup(client):
    body = client.get(f"/streamtrain/api/runs/streamtrain_demo/{run_id(START + 31)}").json()
    assert body["model"] == "demo"
    # the rolled-back v000030 and its retrain v000031 were made for the same hour
    assert [(v["version"], v["rolled_back"]) for v in body["versions"]] == [
        ("v000030", True), ("v000031", False)]
    other = client.get("/streamtrain/api/runs/some_other_dag/manual__1").json()
    assert other["model"] is None and other["versions"] == []


# ----------------------------------------------------------------------------- pages


def test_model_page_shows_the_chain_and_charts(client):
    r = client.get("/streamtrain/models/demo?per_page=5&hours=48")
    assert r.status_code == 200
    page = r.text
    assert 'id="chain"' in page and page.count('data-version="') == 5
    row = page.split('data-version="v000029"')[1].split("</tr>")[0]
    assert '<td class="c-auc">0.6029</td>' in row
    assert '<td class="c-table_rows">2,900</td>' in row
    assert '<td class="c-s-train">31.00</td>' in row and '<td class="c-s-commit">0.25</td>' in row
    assert 'href="/dags/streamtrain_demo/runs/scheduled__' in row and 'target="_top"' in row
    for chart in ("quality", "calibration", "table", "throughput", "size"):
        assert f'src="/streamtrain/models/demo/charts/{chart}.svg?hours=48"' in page
    assert f'<td class="c-copc">{expected(29)["copc"]:.3f}</td>' in row
    assert "page 1 / 6" in page and "older ›" in page
    assert f"{hs(5)}</span>" in page  # missing hours of the window are listed


HTML_PAGES = ["/streamtrain/", "/streamtrain/models/demo", "/streamtrain/models/demo?page=3",
              f"/streamtrain/runs/streamtrain_demo/{run_id(START + 3)}", "/streamtrain/runs/x/y",
              "/streamtrain/models/nope", "/streamtrain/models/broken", "/streamtrain/docs"]


@pytest.mark.parametrize("path", HTML_PAGES)
@pytest.mark.parametrize("logged_in", [True, False])
def test_every_html_page_sends_a_script_free_csp(client, path, logged_in):
    if not logged_in:
        del client.headers["Authorization"]  # the 401 page is a page too
    r = client.get(path)
    assert "text/html" in r.headers["content-type"]
    csp = dict(part.strip().split(" ", 1) for part in r.headers["content-security-policy"].split(";"))
    assert csp["default-src"] == "'none'" and "script-src" not in csp  # no script may run
    assert csp["frame-ancestors"] == "'self'" and csp["base-uri"] == "'none'"
    assert csp["img-src"] == "'self'"
    assert "<script" not in r.text.lower() and not re.search(r"\son[a-z]+=", r.text)
    assert " style=" not in r.text  # inline style attributes would need 'unsafe-inline'
    # the page's one stylesheet is the one the policy's hash allows
    (css,) = re.findall(r"<style>(.*?)</style>", r.text, re.S)
    digest = base64.b64encode(hashlib.sha256(css.encode()).digest()).decode()
    assert csp["style-src"] == f"'sha256-{digest}'"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_chart_svg_marks_missing_hours(client):
    r = client.get(f"/streamtrain/models/demo/charts/quality.svg?hours=10&end={hs(9)}")
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
    svg = r.text
    assert '<g id="auc">' in svg and '<g id="logloss">' in svg
    assert f'id="missing-{START + 5}"' in svg and f'id="missing-{START + 6}"' in svg
    assert f"auc at {hs(9)} = {expected(8)['auc']:.4f}" in svg
    for chart in ("table", "throughput", "size"):
        assert client.get(f"/streamtrain/models/demo/charts/{chart}.svg").status_code == 200
    assert client.get("/streamtrain/models/demo/charts/nope.svg").status_code == 404


def test_run_page(client):
    r = client.get(f"/streamtrain/runs/streamtrain_demo/{run_id(START + 3)}")
    assert r.status_code == 200
    assert 'data-version="v000004"' in r.text and '<td class="c-auc">0.6004</td>' in r.text
    assert "not a streamtrain model" in client.get("/streamtrain/runs/x/y").text


def test_everything_shown_is_escaped(client):
    listing = client.get("/streamtrain/").text
    assert EVIL not in listing
    assert html.escape(EVIL) in listing                 # name and error message, escaped
    assert "/streamtrain/models/%3Cscript%3Ealert%281%29%3C%2Fscript%3E" in listing
    page = client.get("/streamtrain/models/" + EVIL).text
    assert EVIL not in page and html.escape(EVIL) in page
    svg = client.get("/streamtrain/models/" + EVIL + "/charts/quality.svg").text
    assert EVIL not in svg
    assert EVIL not in client.get(f"/streamtrain/runs/{EVIL}/{EVIL}").text


# ----------------------------------------------------------------------------- scale


def test_a_page_of_thousands_of_versions_reads_only_the_meta_it_shows(tmp_path, auth_manager,
                                                                      token, monkeypatch):
    """A page reads the ledger and the ``meta.json`` of the rows it shows, each once: never the
    whole chain (``bench/ui_bench.py`` times it against reading every version)."""
    from trainer import store

    n = 3000
    make_store(tmp_path / "big", "big", n, missing=(100, 2000))
    models = [data.ModelRef("big", "big.toml", str(tmp_path / "big"), "streamtrain_big")]
    c = TestClient(ui_app.create_app(models=lambda: models))
    c.headers["Authorization"] = f"Bearer {token}"
    read = []
    real_read = store.read_checked_meta
    monkeypatch.setattr(store, "read_checked_meta",
                        lambda layout, record: read.append(record.version) or real_read(layout, record))
    reads = {}
    for label, path in [("list", "/"), ("page", "/models/big"), ("page again", "/models/big"),
                        ("page 40", "/models/big?page=40"),
                        ("chart", "/models/big/charts/table.svg"),
                        ("chart again", "/models/big/charts/table.svg"),
                        ("api", "/api/models/big/versions?page=30&per_page=100")]:
        before = len(read)
        r = c.get(path)
        assert r.status_code == 200, (path, r.text[:200])
        reads[label] = len(read) - before
    body = c.get("/api/models/big/versions?page=30&per_page=100").json()
    assert body["total"] == n and body["versions"][0]["version"] == f"v{n - 2900:06d}"
    assert len(read) == len(set(read)), "a meta.json was read twice"
    # the page's table (50 rows) and chart window (168 hours) overlap: at most both
    assert 0 < reads["page"] <= ui_app.DEFAULT_PER_PAGE + ui_app.DEFAULT_HOURS, reads
    assert 0 < reads["page 40"] <= ui_app.DEFAULT_PER_PAGE, reads
    assert reads["api"] == 100 and reads["list"] <= 1, reads
    assert reads["page again"] == reads["chart"] == reads["chart again"] == 0, reads


# ----------------------------------------------------------------------------- read layer


def test_discover_models_lists_broken_configs_with_their_error(tmp_path):
    (tmp_path / "a.toml").write_text('name = "a"\nmodel_dir = "m/a"\ndata_root = "d"\n')
    (tmp_path / "b.toml").write_text(f'name = "{EVIL}"\nthis is not toml')
    (tmp_path / "notes.txt").write_text("ignored")
    found = {m.config_path.rsplit("/", 1)[1]: m for m in data.discover_models(tmp_path)}
    assert set(found) == {"a.toml", "b.toml"}
    assert found["b.toml"].error and found["b.toml"].name == "b"
    a = found["a.toml"]
    if not a.error:  # with trainer.config importable, "a" lacks required sections
        assert a.name == "a" and a.model_dir == str(tmp_path / "m" / "a")
        assert a.dag_id == "streamtrain_a"


def test_the_ui_checks_a_network_with_the_jobs_network_code(tmp_path):
    """The UI computes nothing from a model's network (its numbers are the job's, from
    meta.json); the one thing it runs is the config check, and that is the job's own
    (``trainer.network.load.build``): a user network whose apply returns the wrong shape is
    listed with the job's refusal, the example user network loads."""
    import shutil
    from pathlib import Path

    examples = Path(__file__).resolve().parents[2] / "examples"
    shutil.copytree(examples / "models", tmp_path / "models")
    text = (examples / "custom.toml").read_text()
    (tmp_path / "custom.toml").write_text(text)
    (tmp_path / "models" / "flat.py").write_text(
        "import jax.numpy as jnp\n"
        "class Flat:\n"
        "    def init(self, key):\n"
        "        return {'b': jnp.zeros((1,), jnp.float32)}\n"
        "    def apply(self, params, inputs):\n"
        "        return inputs.wide[:, None] + params['b']  # [B, 1], not [B]\n"
        "def build(spec, **options):\n"
        "    return Flat()\n")
    (tmp_path / "flat.toml").write_text(
        text.replace('name = "custom"', 'name = "flat"')
            .replace('model = "models/ipnn.py:build"', 'model = "models/flat.py:build"'))
    found = {m.name: m for m in data.discover_models(tmp_path)}
    assert found["custom"].error == ""
    assert "network.model" in found["flat"].error
    assert "apply must return float32 logits of shape" in found["flat"].error


def test_pruned_versions_leave_the_chain(tmp_path):
    events = make_store(tmp_path, "m", 4)
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"seq": %d, "event": "prune", "versions": ["v000001", "v000002"]}\n'
                % (events[-1]["seq"] + 1))
    assert [v.version for v in data.read_chain(tmp_path).versions] == ["v000003", "v000004"]


def test_a_meta_json_the_ledger_does_not_pin_is_refused_naming_it(tmp_path):
    make_store(tmp_path, "m", 3)
    meta = tmp_path / "versions" / "v000002" / "meta.json"
    meta.write_text(meta.read_text() + "\n")  # still JSON, no longer the bytes committed
    chain = data.read_chain(tmp_path)
    with pytest.raises(data.StoreReadError, match=r"v000002.*meta.json sha256 differs from the ledger"):
        data.read_meta(tmp_path, "v000002")
    row = data.version_row(str(tmp_path), chain.find("v000002"))
    assert row["metrics"]["auc"] is None and "sha256 differs" in row["error"]
    assert data.read_meta(tmp_path, "v000003")["metrics"]["auc"] == expected(3)["auc"]
    assert data.read_meta(tmp_path, "v000009") is None  # never committed


def test_torn_last_ledger_line_is_ignored_and_a_corrupt_one_named(tmp_path):
    make_store(tmp_path, "m", 3)
    with open(tmp_path / "ledger.jsonl", "a") as f:
        f.write('{"seq": 4, "event": "comm')
    assert [v.version for v in data.read_chain(tmp_path).versions] == ["v000001", "v000002", "v000003"]
    lines = (tmp_path / "ledger.jsonl").read_text().splitlines()
    (tmp_path / "ledger.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:3]]) + "\n")
    with pytest.raises(data.StoreReadError, match=r"ledger.jsonl: line 2 is not JSON"):
        data.read_chain(tmp_path)


def test_freshness_states():
    assert data.freshness(None, now=10)["state"] == "empty"
    assert data.freshness(9, now=10) == {"now_hour": 10, "now": hour_str(10), "lag_hours": 1,
                                         "state": "fresh"}
    assert data.freshness(0, now=10)["state"] == "late"
    assert data.freshness(0, now=100)["state"] == "stale"


def test_calibration_chart_draws_predicted_and_actual_ctr(client):
    svg = client.get(f"/streamtrain/models/demo/charts/calibration.svg?hours=10&end={hs(9)}").text
    for gid in ("pred_ctr", "actual_ctr", "copc"):
        assert f'<g id="{gid}">' in svg
    e = expected(8)  # hour offset 9 = version 8 (hours 5 and 6 missing)
    assert f"pred_ctr at {hs(9)} = {e['pred_ctr']:.4f}" in svg
    assert f"copc at {hs(9)} = {e['copc']:.3f}" in svg
    assert f'id="missing-{START + 5}"' in svg
