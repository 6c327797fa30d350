"""The StarMap dashboard in a real headless Chromium (Debian's /usr/bin/chromium, driven by playwright) against a
real uvicorn server over the tiny random Llama: chat tokens, neuron map, trajectory, steering, audit, API keys.

The page exposes read-only test hooks: ``window.__starmap`` (what the map canvas holds and where each point is on
the page) and ``window.__safesail.store`` (the page's state). Set ``SAFESAIL_UI_SCREENSHOTS=<dir>`` to keep
screenshots of each view there.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from tests.server.conftest import (  # noqa: F401 - fixtures
    ALLOW_POLICY, PROMPT, Harness, block_policy, prompt_feature, server_guard,
)
from tests.server.live import LiveServer

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 800}
BACKGROUND = (7, 11, 20)  # the map canvas's background (#070b14)


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}: install Debian's chromium package to run the dashboard tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def live(server_guard, tmp_path_factory):
    h = Harness(server_guard, tmp_path_factory.mktemp("ui_live"), ALLOW_POLICY)
    with LiveServer(h.app) as s:
        yield SimpleNamespace(h=h, url=s.url)
    h.audit.close()


def _open(browser, url: str, *, wait_ready: bool = True) -> tuple[Any, list[Any]]:
    """A fresh page at /ui/ that records console errors, page errors, failed and non-2xx requests, and any
    request that leaves the server."""
    page = browser.new_context(viewport=VIEWPORT).new_page()
    problems: list[Any] = []
    page.on("console", lambda m: m.type in ("error", "warning") and problems.append(("console", m.type, m.text)))
    page.on("pageerror", lambda e: problems.append(("pageerror", str(e))))
    page.on("requestfailed", lambda r: problems.append(("failed", r.url, r.failure)))
    page.on("response", lambda r: r.status >= 400 and problems.append(("status", r.status, r.url)))
    page.on("request", lambda r: r.url.startswith(url) or r.url.startswith("data:") or
            problems.append(("external", r.url)))
    page.goto(f"{url}/ui/")
    if wait_ready:
        page.wait_for_function("() => window.__safesail && window.__safesail.store.info !== null")
    return page, problems


def _shot(page, name: str) -> None:
    folder = os.environ.get("SAFESAIL_UI_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"dashboard_{name}.png"
        page.screenshot(path=str(path))
        assert path.stat().st_size < 150_000, f"{path} is {path.stat().st_size} bytes"


def _user_run(tokens: list[dict]) -> list[dict]:
    """The prompt tokens of the last user message (what the chat shows for the query)."""
    prompt = [t for t in tokens if t["scope"] == "prompt"]
    idx = [i for i, t in enumerate(prompt) if t["role"] == "user" and t["content"]]
    end = idx[-1]
    start = end
    while start > 0 and prompt[start - 1]["role"] == "user" and prompt[start - 1]["content"]:
        start -= 1
    return prompt[start:end + 1]


def _ranked(token: dict) -> list[str]:
    hits = sorted(token["hits"], key=lambda h: (-h["normalized"], h["feature_id"]))
    return [h["feature_id"] for h in hits]


@pytest.fixture(scope="module")
def session(browser, live):
    """One page with one chat sent (PROMPT, 8 tokens, greedy), the API's answer and the database's map."""
    page, problems = _open(browser, live.url)
    page.fill("#opt-max-tokens", "8")
    with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as resp:
        page.fill("#chat-input", PROMPT)
        page.press("#chat-input", "Enter")
    body = resp.value.json()
    page.wait_for_selector(".msg.assistant")
    fmap = httpx.get(f"{live.url}/v1/safesail/map").json()
    tokens = body["safesail"]["tokens"]
    yield SimpleNamespace(page=page, problems=problems, body=body, url=live.url, h=live.h, tokens=tokens,
                          user=_user_run(tokens), response=[t for t in tokens if t["scope"] == "response"],
                          map=fmap, features={f["id"]: f for f in fmap["data"]})
    page.context.close()


# ------------------------------------------------------------------------------------------------- tests


def test_page_loads_with_no_errors_and_only_local_requests(browser, live):
    page, problems = _open(browser, live.url)
    page.wait_for_function("() => document.querySelector('#status').textContent.startsWith('ready')")
    assert live.h.model_id in page.text_content("#summary") and "12 features" in page.text_content("#summary")
    assert page.get_attribute("#tab-chat", "aria-selected") == "true" and page.is_hidden("#key-form")
    page.keyboard.press("Tab")  # the skip link, then the tabs are reachable by keyboard
    page.focus("#tab-chat")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-map", "aria-selected") == "true" and page.is_visible("#map-canvas")
    assert problems == []
    page.context.close()


def test_chat_tokens_are_clickable_and_show_their_features(session):
    page, s = session.page, session
    user_btns = page.locator(".msg.user .tok")
    assert user_btns.count() == len(s.user) > 0
    assert [int(x) for x in user_btns.evaluate_all("els => els.map(e => e.dataset.pos)")] == \
        [t["position"] for t in s.user]
    if s.body["choices"][0]["finish_reason"] != "content_filter":
        assert page.locator(".msg.assistant .tok").count() == len(s.response)
    # tint: the domain of each token's strongest feature
    domains = user_btns.evaluate_all("els => els.map(e => e.dataset.domain)")
    for tok, dom in zip(s.user, domains, strict=True):
        assert dom == (s.features[_ranked(tok)[0]]["domain"] or "" if tok["hits"] else "")
    # the token with the most features: the inspector lists them strongest first, with explanation and CorrScore
    i = max(range(len(s.user)), key=lambda j: len(s.user[j]["hits"]))
    tok = s.user[i]
    assert tok["hits"], "some user token should have a firing feature"
    user_btns.nth(i).click()
    page.wait_for_selector("#token-features")
    listed = page.locator("#token-features > li").evaluate_all("els => els.map(e => e.dataset.featureId)")
    assert listed == _ranked(tok)
    first = page.locator("#token-features > li").first.text_content()
    top = s.features[listed[0]]
    assert top["explanation"] in first and "CorrScore" in first and top["concepts"][0] in first
    assert user_btns.nth(i).get_attribute("aria-pressed") == "true"
    # a token without features says so
    quiet = [j for j, t in enumerate(s.user) if not t["hits"]]
    if quiet:
        user_btns.nth(quiet[0]).click()
        page.wait_for_selector("#insp-empty")
    # keyboard: arrows move between tokens, Enter picks
    user_btns.nth(0).focus()
    page.keyboard.press("ArrowRight")
    assert page.evaluate("document.activeElement.dataset.pos") == str(s.user[1]["position"])
    page.keyboard.press("Enter")
    assert page.get_attribute(f'.msg.user .tok[data-pos="{s.user[1]["position"]}"]', "aria-pressed") == "true"
    # the guard's decision and rules per message
    final = s.body["safesail"]["final"]
    head = page.locator(".msg.assistant .msg-head")
    assert head.locator(".badge").first.text_content() == final["decision"]
    assert set(head.locator(".rule").evaluate_all("els => els.map(e => e.dataset.rule)")) == \
        {r["rule"] for r in final["rules"]}
    prompt_head = page.locator(".msg.user .msg-head")
    assert prompt_head.locator(".badge").first.text_content() == s.body["safesail"]["prompt"]["decision"]
    user_btns.nth(i).click()
    _shot(page, "chat")
    assert session.problems == []


def test_map_draws_every_positioned_feature_and_search_highlights(session):
    page, s = session.page, session
    page.click("#tab-map")
    positioned = {f["id"] for f in s.map["data"] if f["x"] is not None}
    assert len(positioned) == s.map["positioned"] == 11
    page.wait_for_function(f"() => window.__starmap.drawn === {len(positioned)}")
    assert set(page.evaluate("window.__starmap.points")) == positioned
    # every point is painted: the canvas is not background at its position
    pixels = page.evaluate("""() => {
        const c = document.querySelector('#map-canvas'), ctx = c.getContext('2d'), r = c.getBoundingClientRect();
        const k = c.width / r.width, img = ctx.getImageData(0, 0, c.width, c.height);  // one readback
        return window.__starmap.points.map(id => {
            const p = window.__starmap.screenOf(id);
            const i = 4 * (Math.round((p.y - r.top) * k) * c.width + Math.round((p.x - r.left) * k));
            return Array.from(img.data.slice(i, i + 4));
        });
    }""")
    assert all(tuple(px[:3]) != BACKGROUND for px in pixels)
    # features active in the conversation are ringed
    fired = {h["feature_id"] for t in s.user + s.response for h in t["hits"]}
    assert set(page.evaluate("window.__starmap.active")) == fired
    # search: the database's full-text hits are highlighted and listed
    found = httpx.get(f"{s.url}/v1/safesail/features", params={"q": "weapons", "limit": 50}).json()["data"]
    want = [f["id"] for f in found]
    assert want
    page.fill("#map-search", "weapons")
    page.press("#map-search", "Enter")
    page.wait_for_function(f"() => document.querySelectorAll('#map-results li').length === {len(want)}")
    assert set(page.evaluate("window.__starmap.highlighted")) == set(want)
    assert page.locator("#map-results button").evaluate_all("els => els.map(e => e.dataset.featureId)") == want
    _shot(page, "map")
    page.click("#map-clear")
    assert page.evaluate("window.__starmap.highlighted") == []
    # wheel zooms around the cursor, drag pans
    box = page.locator("#map-canvas").bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, -400)
    page.wait_for_function("() => window.__starmap.zoom > 1.5")
    some = sorted(positioned)[0]
    before = page.evaluate(f"window.__starmap.screenOf('{some}')")
    page.mouse.move(box["x"] + 40, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 100, box["y"] + 70, steps=5)
    page.mouse.up()
    after = page.evaluate(f"window.__starmap.screenOf('{some}')")
    assert after["x"] - before["x"] == pytest.approx(60, abs=1) and after["y"] - before["y"] == pytest.approx(30, abs=1)
    page.click("#map-reset")
    page.wait_for_function("() => window.__starmap.zoom === 1")
    assert session.problems == []


def test_clicking_a_point_opens_its_feature_card(session):
    page, s = session.page, session
    page.click("#tab-map")
    fid = next(f["id"] for f in s.map["data"] if f["x"] is not None and f["explanation"])
    page.wait_for_function("() => window.__starmap.drawn > 0")
    pos = page.evaluate(f"window.__starmap.screenOf('{fid}')")
    page.mouse.click(pos["x"], pos["y"])
    card = page.wait_for_selector(f'#feature-card[data-feature-id="{fid}"]')
    assert s.features[fid]["explanation"] in card.text_content()
    assert page.locator("#feature-card .context").count() >= 1
    assert page.evaluate("window.__starmap.selected") == fid
    assert session.problems == []


def test_trajectory_grid_has_layers_by_tokens_coloured_by_the_strongest_feature(session):
    page, s = session.page, session
    page.click("#tab-chat")
    page.click(".msg.assistant button.link")  # "trajectory" of this answer
    page.wait_for_selector("#view-trajectory:not([hidden])")
    layers = s.map["layers"]
    cols = s.user + s.response
    grid = page.locator("#traj-grid")
    assert grid.get_attribute("data-layers") == str(len(layers)) and grid.get_attribute("data-tokens") == str(len(cols))
    assert page.locator("#traj-grid tbody tr").count() == len(layers)
    assert page.locator("#traj-grid thead th.tok-col").count() == len(cols)
    got = page.evaluate("""() => Array.from(document.querySelectorAll('#traj-grid tbody tr')).map(tr =>
        Array.from(tr.querySelectorAll('td:not(.sep)')).map(td =>
            td.querySelector('button')?.dataset.featureId ?? null))""")
    want = []
    for layer in layers:
        row = []
        for t in cols:
            ids = [f for f in _ranked(t) if s.features[f]["layer"] == layer]
            row.append(ids[0] if ids else None)
        want.append(row)
    assert got == want
    assert any(x for row in got for x in row) and any(x is None for row in got for x in row)
    cell = page.locator("#traj-grid tbody td button").first
    fid = cell.get_attribute("data-feature-id")
    assert fid in cell.get_attribute("title")
    cell.click()
    page.wait_for_selector(f'#feature-card[data-feature-id="{fid}"]')
    _shot(page, "trajectory")
    assert session.problems == []


def test_steering_shows_steered_and_unsteered_answers_side_by_side(session, server_guard):
    page, s = session.page, session
    fid = next(iter(server_guard.catalog))
    page.click("#tab-steering")
    page.fill("#steer-add", fid)
    page.press("#steer-add", "Enter")
    page.wait_for_selector(f'#steer-rows tr[data-feature-id="{fid}"]')
    page.select_option(f'#steer-rows tr[data-feature-id="{fid}"] .steer-op', "add")
    page.fill(f'#steer-rows tr[data-feature-id="{fid}"] .steer-value', "200")
    page.press(f'#steer-rows tr[data-feature-id="{fid}"] .steer-value', "Tab")
    is_steered = lambda r: r.url.endswith("/v1/chat/completions") and "steer" in (r.post_data or "")  # noqa: E731
    with page.expect_request(is_steered) as req:
        page.click("#steer-run")
    sent = req.value.post_data_json
    assert sent["safesail"] == {"tokens": True, "steer": [{"feature_id": fid, "op": "add", "value": 200}]}
    assert sent["messages"] == [{"role": "user", "content": PROMPT}]
    page.wait_for_selector("#steer-diff[data-differs]")
    plain = page.text_content("#steer-plain .answer-text")
    steered = page.text_content("#steer-steered .answer-text")
    assert plain == s.body["choices"][0]["message"]["content"]  # same request as the chat: same greedy answer
    assert steered != plain and page.get_attribute("#steer-diff", "data-differs") == "true"
    assert f"{fid} add 200.00" in page.text_content("#steer-steered")
    assert "no steering" in page.text_content("#steer-plain")
    for col in ("#steer-plain", "#steer-steered"):
        assert page.locator(f"{col} h3 .badge").text_content() in ("allow", "log", "steer", "flag", "block")
    _shot(page, "steering")
    assert session.problems == []


def test_audit_view_lists_the_decisions_just_made(session):
    page, s = session.page, session
    page.click("#tab-audit")
    page.wait_for_selector("#audit-rows tr")
    rows = page.locator("#audit-rows tr")
    rids = rows.evaluate_all("els => els.map(e => e.dataset.requestId)")
    chat_rid = s.body["safesail"]["request_id"]
    assert rids.count(chat_rid) == 2  # its prompt and final verdicts
    api = httpx.get(f"{s.url}/v1/safesail/audit").json()["data"]
    assert rids == [r["request_id"] for r in api]  # newest first, as the log says
    times = page.locator("#audit-rows time").evaluate_all("els => els.map(e => Date.parse(e.getAttribute('datetime')))")
    assert times == sorted(times, reverse=True)
    page.select_option("#audit-stage", "prompt")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#audit-rows tr')].every(r => r.dataset.stage === 'prompt')")
    assert rows.count() == sum(r["stage"] == "prompt" for r in api)
    page.select_option("#audit-action", "block")
    page.wait_for_function("() => document.querySelectorAll('#audit-rows tr').length === 0")
    assert page.text_content("#audit-count").startswith("0 decisions")
    _shot(page, "audit")
    assert session.problems == []


def test_api_key_is_asked_for_and_kept_for_the_session(browser, server_guard, tmp_path_factory):
    from safesail_guard.server.auth import KeyStore

    key = "sk-dashboard-0123456789abcdef"
    keys = KeyStore.load(None, "K", {"K": key})
    h = Harness(server_guard, tmp_path_factory.mktemp("ui_keys"), ALLOW_POLICY, keys=keys)
    with LiveServer(h.app) as srv:
        page, problems = _open(browser, srv.url, wait_ready=False)
        page.wait_for_selector("#key-form:not([hidden])")
        assert "needs an API key" in page.text_content("#key-msg")
        page.fill("#api-key", "sk-wrong-0123456789abcdef")
        page.press("#api-key", "Enter")
        page.wait_for_function("() => document.querySelector('#key-msg').textContent.includes('refused')")
        page.fill("#api-key", key)
        page.press("#api-key", "Enter")
        page.wait_for_function("() => window.__safesail.store.info !== null && window.__starmap.points.length > 0")
        assert page.is_hidden("#key-form")
        assert page.evaluate("sessionStorage.getItem('safesail.apiKey')") == key
        page.reload()
        page.wait_for_function("() => window.__safesail.store.info !== null")
        assert page.is_hidden("#key-form")
        assert {p[1] for p in problems if p[0] == "status"} == {401}  # only the two refused attempts
        page.context.close()
    h.audit.close()


def test_upstream_mode_chat_tokens_and_steering_refusal(browser, server_guard, tmp_path_factory):
    from tests.fakes.fake_openai import FakeOpenAIServer

    with FakeOpenAIServer() as upstream:  # echoes the last user message
        h = Harness(server_guard, tmp_path_factory.mktemp("ui_upstream"), ALLOW_POLICY, mode="upstream",
                    upstream_url=upstream.base_url, upstream_model="big-model")
        with LiveServer(h.app) as srv:
            page, problems = _open(browser, srv.url)
            page.fill("#chat-input", "hello there")
            page.press("#chat-input", "Enter")
            page.wait_for_selector(".msg.assistant")
            assert "hello there" in page.text_content(".msg.assistant")
            assert page.locator(".msg.assistant .tok").count() > 0  # the local scorer's tokens of the reply
            assert page.locator(".msg.assistant .badge").count() >= 1
            page.click("#tab-steering")
            assert "upstream mode" in page.text_content("#steer-last")
            fid = next(iter(server_guard.catalog))
            page.fill("#steer-add", fid)
            page.press("#steer-add", "Enter")
            page.click("#steer-run")
            page.wait_for_function("() => document.querySelector('#steer-error').textContent.includes('upstream mode')")
            assert "hello there" in page.text_content("#steer-plain .answer-text")
            assert "upstream mode" in page.text_content("#steer-steered .error")
            assert [p[:2] for p in problems if p[0] == "status"] == [("status", 400)]  # the refused steering only
            page.context.close()
        h.audit.close()


def test_a_blocked_prompt_shows_the_refusal_and_where_the_guard_stopped(browser, server_guard, prompt_feature,
                                                                        tmp_path_factory):
    h = Harness(server_guard, tmp_path_factory.mktemp("ui_block"), block_policy(prompt_feature))
    with LiveServer(h.app) as srv:
        page, problems = _open(browser, srv.url)
        with page.expect_response(lambda r: r.url.endswith("/v1/chat/completions")) as resp:
            page.fill("#chat-input", PROMPT)
            page.press("#chat-input", "Enter")
        body = resp.value.json()
        page.wait_for_selector(".msg.assistant")
        assert body["choices"][0]["finish_reason"] == "content_filter"
        assert page.text_content(".msg.assistant .msg-text") == "Refused by the test policy."
        assert page.locator(".msg.user .badge").first.text_content() == "block"
        assert page.locator(".msg.assistant .rule").first.get_attribute("data-rule") == "stop_it"
        read = "".join(t["text"] for t in _user_run(body["safesail"]["tokens"]))
        assert len(read) < len(PROMPT)  # the guard stopped at the token that fired
        assert page.locator(".msg.user .tok").count() == len(_user_run(body["safesail"]["tokens"]))
        assert read + page.text_content(".msg.user .unread") == PROMPT
        assert problems == []
        page.context.close()
    h.audit.close()
