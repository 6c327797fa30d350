"""The dashboard's server side: static files at /ui and the read-only /v1/safesail/... APIs (TestClient)."""

from __future__ import annotations

import posixpath
import re
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.server.conftest import openai_error as _err
from tests.server.conftest import PROMPT, harness_factory, server_guard  # noqa: F401 - fixtures

STATIC = resources.files("safesail_guard.ui").joinpath("static")




def _static_files() -> list[str]:
    out = []

    def walk(node, prefix=""):
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            else:
                out.append(prefix + child.name)

    walk(STATIC)
    return sorted(out)


# ------------------------------------------------------------------------------------------------ static


def test_ui_is_served_with_module_types_and_a_self_only_csp(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        r = c.get("/ui", follow_redirects=False)
        assert r.status_code == 307 and r.headers["location"] == "/ui/"
        index = c.get("/ui/")
        assert index.status_code == 200 and index.headers["content-type"].startswith("text/html")
        csp = index.headers["content-security-policy"]
        assert "default-src 'self'" in csp and "script-src 'self'" in csp and "http" not in csp
        assert c.get("/ui/index.html").text == index.text
        js = c.get("/ui/app.js")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
        assert c.get("/ui/style.css").headers["content-type"].startswith("text/css")
        for bad in ("/ui/nope.js", "/ui/js/", "/ui/.hidden", "/ui/js/../../server/app.py", "/ui/%2e%2e/secret.js",
                    "/ui/..%2f..%2fpyproject.toml", "/ui/__init__.py", "/ui/js\\api.js"):
            _err(c.get(bad), 404)


def test_every_referenced_file_exists_and_nothing_is_external(harness_factory):
    """index.html's src/href and every ES-module import resolve to files this server serves; no URL leaves it."""
    files = _static_files()
    assert {"index.html", "app.js", "style.css"} <= set(files)
    h = harness_factory()
    with TestClient(h.app) as c:
        for name in files:
            text = STATIC.joinpath(*name.split("/")).read_text(encoding="utf-8")
            if name.endswith(".svg"):
                text = text.replace('xmlns="http://www.w3.org/2000/svg"', "")
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", text, re.I), f"{name} names an external URL"
            base = name.rsplit("/", 1)[0] + "/" if "/" in name else ""
            refs = re.findall(r'(?:src|href)="([^"#]+)"', text) if name.endswith(".html") else []
            refs += re.findall(r'(?:from|import)\s+"(\.{1,2}/[^"]+)"', text)
            for ref in refs:
                path = posixpath.normpath(base + ref)
                assert path in files, f"{name} references {ref}, which is not a static file"
                assert c.get(f"/ui/{path}").status_code == 200


def test_the_wheel_ships_every_static_file():
    """pyproject's package-data globs for safesail_guard.ui match every file of the static folder."""
    import tomllib

    root = Path(__file__).resolve().parents[2]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for name in _static_files():
        assert any(_glob_match(f"static/{name}", p) for p in globs["safesail_guard.ui"]), f"static/{name} not packaged"


def _glob_match(path: str, pattern: str) -> bool:
    """setuptools-style glob: '*' never crosses a '/'."""
    return re.fullmatch("[^/]*".join(re.escape(x) for x in pattern.split("*")), path) is not None


# ------------------------------------------------------------------------------------------------ map


def test_map_returns_every_feature_with_position_concepts_and_corrscore(harness_factory, server_guard):
    h = harness_factory()
    db = server_guard.db
    with TestClient(h.app) as c:
        body = c.get("/v1/safesail/map").json()
    assert body["object"] == "safesail.map" and body["layers"] == db.layers == [0, 2]
    assert body["count"] == len(body["data"]) == len(db) == 12
    assert [f["id"] for f in body["data"]] == db.feature_ids()
    positioned = 0
    for f in body["data"]:
        view = db.get(f["id"])
        assert (f["layer"], f["latent"], f["domain"]) == (view.layer, view.latent, view.domain)
        assert f["concepts"] == [f"{x.level0}/{x.level1}" for x in view.concepts]
        assert f["explanation"] == view.explanation and f["corr"] == view.token_corr
        if view.map_x is None:
            assert f["x"] is None and f["y"] is None
        else:
            positioned += 1
            assert f["x"] == pytest.approx(view.map_x) and f["y"] == pytest.approx(view.map_y)
    assert body["positioned"] == positioned == 11  # the factory leaves one feature without a map position
    assert set(body["domains"]) == {d for f in body["data"] for d in f["domains"]}


def test_info_summarises_model_policy_and_database(harness_factory, server_guard):
    h = harness_factory()
    with TestClient(h.app) as c:
        info = c.get("/v1/safesail/info").json()
    assert info["model"] == h.model_id and info["mode"] == "local" and info["steering"] is True
    assert info["policy"]["name"] == "watch" and info["policy"]["rules"][0] == {
        "name": "any_feature", "action": "log", "description": ""}
    assert info["database"]["layers"] == [0, 2] and info["database"]["features"] == 12
    assert len(info["domains"]) == 10 and "self_harm" in info["domains"]
    assert info["model_layers"] == server_guard.model.config.num_hidden_layers


def test_info_says_upstream_mode_cannot_steer(harness_factory):
    h = harness_factory(mode="upstream", upstream_url="http://127.0.0.1:9/v1", upstream_model="big")
    with TestClient(h.app) as c:
        info = c.get("/v1/safesail/info").json()
    assert info["mode"] == "upstream" and info["steering"] is False and info["model"] == "big"


# ---------------------------------------------------------------------------------------------- search


def test_search_finds_explanations_and_concepts(harness_factory, server_guard):
    h = harness_factory()
    db = server_guard.db
    with TestClient(h.app) as c:
        body = c.get("/v1/safesail/features", params={"q": "weapons"}).json()
        ids = [f["id"] for f in body["data"]]
        assert ids and ids == [x.id for x in db.search("weapons", limit=20)]
        for f in body["data"]:
            assert "weapons" in (f["explanation"] or "").lower() + " ".join(f["concepts"])
            assert f["score"] > 0 and "x" in f and "corr" in f
        one = c.get("/v1/safesail/features", params={"q": "weapons phishing", "limit": 1}).json()
        assert len(one["data"]) == 1
        layer2 = c.get("/v1/safesail/features", params={"q": "weapons", "layer": 2}).json()["data"]
        assert layer2 and all(f["layer"] == 2 for f in layer2)
        by_domain = c.get("/v1/safesail/features", params={"q": "weapons phishing", "domain": "fraud"}).json()["data"]
        assert by_domain and all("fraud" in f["domains"] for f in by_domain)
        assert c.get("/v1/safesail/features", params={"q": "zzzqqq"}).json()["data"] == []
        assert c.get("/v1/safesail/features", params={"q": '"*) OR ^'}).json()["data"] == []  # operators are literal


@pytest.mark.parametrize("params,param", [
    ({}, "q"), ({"q": "   "}, "q"), ({"q": "x" * 501}, "q"), ({"q": "a", "limit": "0"}, "limit"),
    ({"q": "a", "limit": "many"}, "limit"), ({"q": "a", "limit": "100000"}, "limit"),
    ({"q": "a", "layer": "7"}, "layer"),
    ({"q": "a", "domain": "astrology"}, "domain"), ({"q": "a", "sort": "x"}, "sort"), ({"q": "a\x00b"}, "q"),
])
def test_search_bad_params_are_400_naming_them(harness_factory, params, param):
    h = harness_factory()
    with TestClient(h.app) as c:
        _err(c.get("/v1/safesail/features", params=params), 400, param)


# ------------------------------------------------------------------------------------------------ card


def test_feature_card_has_explanation_scores_and_top_contexts(harness_factory, server_guard):
    h = harness_factory()
    fid = server_guard.db.feature_ids()[3]
    view = server_guard.db.get(fid)
    with TestClient(h.app) as c:
        card = c.get(f"/v1/safesail/features/{fid}").json()
        two = c.get(f"/v1/safesail/features/{fid}", params={"examples": 2}).json()
        _err(c.get(f"/v1/safesail/features/{fid}", params={"examples": "-1"}), 400, "examples")
    assert card["object"] == "safesail.feature" and card["id"] == fid and card["layer"] == view.layer
    assert card["explanation"] == view.explanation and card["corr"] == view.token_corr
    assert card["segment_corr"] == view.segment_corr and card["max_act"] == pytest.approx(view.max_act)
    assert [(x["level0"], x["level1"]) for x in card["concepts"]] == [(x.level0, x.level1) for x in view.concepts]
    kinds = [e["kind"] for e in card["examples"]]
    assert kinds and kinds[0] == "top" and "quiet" not in kinds and kinds == sorted(kinds, key=["top", "level"].index)
    assert card["examples"][0]["tokens"] == view.top[0].tokens
    assert len(two["examples"]) == 2 and two["examples_total"] == card["examples_total"]


@pytest.mark.parametrize("fid", ["9_999", "0_1", "nonsense", "x" * 300, "ü_é", "0_162 OR 1=1"])
def test_unknown_feature_is_404_without_server_paths(harness_factory, server_guard, fid):
    h = harness_factory()
    with TestClient(h.app) as c:
        err = _err(c.get(f"/v1/safesail/features/{fid}"), 404, "feature_id")
    assert err["code"] == "feature_not_found" and str(server_guard.db.path) not in err["message"]


# ----------------------------------------------------------------------------------------------- audit


def test_audit_lists_decisions_newest_first_with_filters(harness_factory):
    h = harness_factory()
    with TestClient(h.app) as c:
        ids = []
        for _ in range(2):
            r = c.post("/v1/chat/completions", json=h.chat(max_tokens=3, temperature=0))
            ids.append(r.json()["safesail"]["request_id"])
        rows = c.get("/v1/safesail/audit").json()
        assert rows["object"] == "list" and len(rows["data"]) == 4 and rows["has_more"] is False
        assert [r["request_id"] for r in rows["data"]] == [ids[1], ids[1], ids[0], ids[0]]
        assert [r["stage"] for r in rows["data"]] == ["final", "prompt", "final", "prompt"]
        times = [r["time"] for r in rows["data"]]
        assert times == sorted(times, reverse=True)
        assert rows["data"][1]["text"] == PROMPT and rows["data"][0]["rules"] == ["any_feature"]
        get = lambda **p: c.get("/v1/safesail/audit", params=p).json()  # noqa: E731
        assert {r["stage"] for r in get(stage="prompt")["data"]} == {"prompt"}
        assert len(get(action="log")["data"]) == 4 and get(action="block")["data"] == []
        assert len(get(action="block,log")["data"]) == 4
        assert [r["request_id"] for r in get(request_id=ids[0])["data"]] == [ids[0], ids[0]]
        assert len(get(since="1h")["data"]) == 4 and get(since="2099-01-01")["data"] == []
        assert get(until="1h")["data"] == []
        one = get(limit=1)
        assert len(one["data"]) == 1 and one["has_more"] is True
        assert get(limit=2, offset=2)["data"][0]["request_id"] == ids[0]
        concepts = rows["data"][1]["concepts"]
        hot = max(concepts, key=concepts.get)
        if concepts[hot] >= 0.5:
            hits = get(concept=hot)["data"]
            assert hits and all(r["concepts"].get(hot, 0) >= 0.5 for r in hits)
        cold = [d for d in ("astrology",) if d not in concepts]
        assert get(concept=cold[0])["data"] == []


@pytest.mark.parametrize("params,param", [
    ({"action": "explode"}, "action"), ({"action": ","}, "action"), ({"stage": "middle"}, "stage"),
    ({"since": "yesterday"}, "since"), ({"since": "1e300"}, "since"), ({"until": "-5"}, "until"),
    ({"since": "9999-99-99"}, "since"), ({"limit": "0"}, "limit"), ({"limit": "501"}, "limit"),
    ({"offset": "-1"}, "offset"), ({"who": "me"}, "who"),
])
def test_audit_bad_params_are_400_naming_them(harness_factory, params, param):
    h = harness_factory()
    with TestClient(h.app) as c:
        _err(c.get("/v1/safesail/audit", params=params), 400, param)


# ------------------------------------------------------------------------------------------------ keys


def test_apis_need_the_key_but_the_static_page_does_not(harness_factory):
    from safesail_guard.server.auth import KeyStore

    key = "sk-dashboard-0123456789abcdef"
    h = harness_factory(keys=KeyStore.load(None, "K", {"K": key}))
    routes = ["/v1/safesail/info", "/v1/safesail/map", "/v1/safesail/features?q=weapons",
              "/v1/safesail/features/0_162", "/v1/safesail/audit"]
    with TestClient(h.app) as c:
        assert c.get("/ui/").status_code == 200 and c.get("/ui/app.js").status_code == 200
        for route in routes:
            assert _err(c.get(route), 401)["code"] == "invalid_api_key"
            _err(c.get(route, headers={"Authorization": "Bearer sk-wrong-0123456789abcdef"}), 401)
            # the key is checked before the parameters
            bad = {"Authorization": "Bearer nope-nope-nope-nope"}
            _err(c.get(route.split("?")[0] + "?limit=zero", headers=bad), 401)
            ok = c.get(route, headers={"Authorization": f"Bearer {key}"})
            assert ok.status_code in (200, 404), (route, ok.text)  # 0_162 may not exist in this random db


def test_hostile_query_strings_never_get_a_5xx(harness_factory):
    h = harness_factory()
    junk = ["%00", "%ff%fe", "q=%F0%9F%92%A3&limit=1", "q=" + "a%20" * 300, "q=NEAR(a b)", "q=a&q=b",
            "limit=1e3", "since=nan", "since=inf", "since=-1w", "action=LOG", "concept=" + "x" * 500]
    with TestClient(h.app) as c:
        for path in ("/v1/safesail/features", "/v1/safesail/audit", "/v1/safesail/map", "/v1/safesail/info"):
            for q in junk:
                r = c.get(f"{path}?{q}")
                assert r.status_code < 500, (path, q, r.text)
                if r.status_code >= 400:
                    assert r.json()["error"]["message"]
