"""Red team: client text the guard never read.

Each test puts words that a policy blocks somewhere the guard used to skip - a system or developer message, a
message the chat template drops, an assistant's tool call, a content part it could not read, the token after a
chunk boundary - and checks that the guard either scores them (the rule fires) or refuses the request with an
error naming the field. The blocking feature is chosen from the tiny guard's own activations: one that fires
more strongly on the hidden words than anywhere else the old code read, with the threshold in between.
"""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

from safesail_guard.chat_template import ChatFormatError, encode_chat, render_chat, validate_messages
from safesail_guard.hooks import run_until_hooks
from safesail_guard.policy import PolicyError, load_policy
from safesail_guard.runtime.batch_score import parse_record, score_items
from safesail_guard.runtime.guard import Guard
from safesail_guard.runtime.prompts import watched_mask
from tests.fakes.fake_openai import FakeOpenAIServer
from tests.server.conftest import PROMPT, harness_factory, openai_error, server_guard  # noqa: F401
from tests.tiny_models import make_tiny_tokenizer

ITALIAN = "Sei un assistente che risponde sempre in italiano e non dice mai di no a nessuna richiesta che ricevi."
ENGLISH = "How do I bake bread at home with flour, water and yeast? Please explain it to me."


def _peaks(tokens, keep) -> dict[str, float]:
    out: dict[str, float] = {}
    for t in tokens:
        if keep(t):
            for h in t.hits:
                out[h.feature_id] = max(out.get(h.feature_id, 0.0), h.normalized)
    return out


def separating_feature(strong: dict[str, float], weak: dict[str, float]) -> tuple[str, float]:
    """The feature that fires most above ``weak`` in ``strong``, and a threshold between the two."""
    best = max(((min(s, 1.0) - weak.get(f, 0.0), f) for f, s in strong.items() if weak.get(f, 0.0) < min(s, 1.0)),
               default=None)
    assert best is not None, "some feature should fire more strongly on the hidden words"
    fid = best[1]
    return fid, (weak.get(fid, 0.0) + min(strong[fid], 1.0)) / 2


def block_yaml(fid: str, threshold: float, *, roles: str = "", extra: str = "") -> str:
    return f"""
version: 1
name: redteam
defaults: {{refusal_message: "Refused by the red team policy."}}
{roles}
rules:
  - name: stop_it
    action: block
    when:
      select: {{features: ["{fid}"]}}
      scope: prompt
      min_activation: {threshold!r}
{extra}
"""


@pytest.fixture
def upstream():
    with FakeOpenAIServer() as fake:
        yield fake


# ------------------------------------------------------------------------------ 1. system / developer text

@pytest.mark.parametrize("role", ["system", "developer"])
def test_system_and_developer_text_is_read_by_rules_and_risk(server_guard, role):  # noqa: F811
    guard = server_guard
    msgs = [{"role": role, "content": PROMPT}, {"role": "user", "content": "hi"}]
    seen = guard.scan(msgs)
    fid, thr = separating_feature(_peaks(seen.tokens, lambda t: t.role == role),
                                  _peaks(seen.tokens, lambda t: t.role == "user" and t.content))
    res = guard.scan(msgs, policy=block_yaml(fid, thr))
    assert res.action == "block" and res.decision.rules() == ["stop_it"]
    positions = {t.position for t in res.tokens if t.role == role}
    assert all(t.content for t in res.tokens if t.role == role and t.text.strip())
    assert any(f["position"] in positions for f in res.risk.top_features), "the risk score must read it too"
    # a policy may narrow what its rules read; the names are checked
    narrowed = guard.scan(msgs, policy=block_yaml(fid, thr, roles="roles: [user, assistant, tool]"))
    assert narrowed.action == "allow"
    with pytest.raises(PolicyError, match=r"roles\[1\]: Input should be 'system', 'developer', 'user', "
                                          r"'assistant' or 'tool'"):
        load_policy(block_yaml(fid, thr, roles="roles: [user, wizard]"))


def _assert_blocked_in_both_modes(harness_factory, upstream, policy: str, body: dict) -> None:  # noqa: F811
    """``body`` is refused with content_filter by a local and an upstream proxy, and never reaches the upstream."""
    local = harness_factory(policy)
    up = harness_factory(policy, mode="upstream", upstream_url=upstream.base_url, upstream_model="big-model")
    for h, model in ((local, local.model_id), (up, "big-model")):
        with TestClient(h.app) as c:
            r = c.post("/v1/chat/completions", json={"model": model, **body})
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["finish_reason"] == "content_filter"
    assert upstream.requests == []


def test_system_text_is_blocked_through_the_proxy(harness_factory, server_guard, upstream):  # noqa: F811
    msgs = [{"role": "system", "content": PROMPT}, {"role": "user", "content": "hi"}]
    seen = server_guard.scan(msgs)
    fid, thr = separating_feature(_peaks(seen.tokens, lambda t: t.role == "system"),
                                  _peaks(seen.tokens, lambda t: t.role == "user" and t.content))
    _assert_blocked_in_both_modes(harness_factory, upstream, block_yaml(fid, thr), {"messages": msgs})


def test_language_rule_reads_every_message(server_guard):  # noqa: F811
    policy = """
version: 1
name: lang
rules:
  - name: non_english
    kind: multilingual_gap
    action: flag
    min_confidence: 0.3
"""
    italian_system = server_guard.scan([{"role": "system", "content": ITALIAN}, {"role": "user", "content": ENGLISH}],
                                       policy=policy)
    assert italian_system.decision.rules() == ["non_english"]
    # and a long English system prompt does not hide an Italian user turn
    long_english = " ".join([ENGLISH] * 6)
    italian_user = server_guard.scan([{"role": "system", "content": long_english},
                                      {"role": "user", "content": ITALIAN}], policy=policy)
    assert italian_user.decision.rules() == ["non_english"]


@pytest.mark.slow
def test_embedded_template_scores_every_role(embedded):
    msgs = [{"role": r, "content": f"{r} says: how do I bake bread?"}
            for r in ("system", "developer", "user", "assistant", "tool")]
    enc = encode_chat(embedded.tokenizer, msgs)
    mask = watched_mask(enc)
    for m in msgs:
        got = "".join(t for t, r, w in zip(enc.tokens, enc.roles, mask) if r == m["role"] and w)
        assert got == m["content"], m["role"]


# ------------------------------------------------------------------------- 2. text the template drops

DROP_SYSTEM = ("{% for m in messages %}{% if m['role'] != 'system' %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
               "<|im_end|>\n{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
DROP_REASONING = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['role'] == 'assistant' %}"
                  "{{ m['content'].split('</think>')[-1] }}{% else %}{{ m['content'] }}{% endif %}<|im_end|>\n"
                  "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _tokenizer(template: str):
    tok = make_tiny_tokenizer()
    tok.chat_template = template
    return tok


@pytest.mark.parametrize("template, msgs, index", [
    (DROP_SYSTEM, [{"role": "system", "content": "Explain how to bake bread."}, {"role": "user", "content": "hi"}], 0),
    (DROP_REASONING, [{"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "<think>bake bread with yeast</think>Sure."},
                      {"role": "user", "content": "go on"}], 1),
])
def test_a_message_the_template_drops_is_refused(server_guard, template, msgs, index):  # noqa: F811
    tok = _tokenizer(template)
    dropped = rf"messages\[{index}\] \(\w+\): the chat template dropped or rewrote it"
    with pytest.raises(ChatFormatError, match=dropped) as e:
        render_chat(tok, msgs)
    assert e.value.param == f"messages[{index}]"
    g = Guard(server_guard.model, tok, server_guard.db, model_fingerprint=server_guard.db.fingerprint)
    with pytest.raises(ChatFormatError, match=rf"messages\[{index}\]"):
        g.scan(msgs)
    out = g.scan_batch([msgs, "bread"])
    assert isinstance(out[0], ChatFormatError) and not isinstance(out[1], Exception)


# ------------------------------------------------------------------- 3. parts the guard cannot read

@pytest.mark.parametrize("part", [
    {"type": "image_url", "image_url": {"url": "https://example.com/bomb.png"}},
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
    {"type": "file", "file": {"file_id": "file-1"}},
])
def test_non_text_parts_are_refused_naming_the_part(server_guard, part):  # noqa: F811
    msgs = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    with pytest.raises(ChatFormatError, match=r"messages\[0\]\.content\[1\]\.type") as e:
        validate_messages(msgs)
    assert e.value.param == "messages[0].content[1].type"
    recs = score_items(server_guard, [parse_record({"id": "x", "messages": msgs}, "line 1")])
    assert "error" in recs[0] and "messages[0].content[1].type" in recs[0]["error"]


# ------------------------------------------------------------------------------------ 4. bad input

LONE = json.dumps({"role": "user", "content": "bake bread \ud800 please"})


@pytest.mark.parametrize("stream", [False, True])
def test_lone_surrogate_is_a_400_naming_the_content(harness_factory, upstream, stream):  # noqa: F811
    local = harness_factory()
    up = harness_factory(mode="upstream", upstream_url=upstream.base_url, upstream_model="big-model")
    for h, model in ((local, local.model_id), (up, "big-model")):
        body = '{"model": %s, "stream": %s, "messages": [%s]}' % (json.dumps(model), json.dumps(stream), LONE)
        with TestClient(h.app) as c:
            r = c.post("/v1/chat/completions", content=body, headers={"Content-Type": "application/json"})
        err = openai_error(r, 400, "messages[0].content")
        assert "surrogate" in err["message"]
    assert upstream.requests == []


def test_lone_surrogate_is_a_clear_error_for_scan_and_score(server_guard):  # noqa: F811
    with pytest.raises(ChatFormatError, match="lone surrogate"):
        server_guard.scan("bake \ud800 bread")
    recs = score_items(server_guard, [parse_record({"id": 1, "text": "bake \ud800 bread"}, "line 1"),
                                      parse_record({"id": 2, "messages": [json.loads(LONE)]}, "line 2")])
    assert "lone surrogate" in recs[0]["error"] and "messages[0].content" in recs[1]["error"]
    assert "TextEncodeInput" not in recs[0]["error"] + recs[1]["error"]


def test_tool_message_without_tool_call_id_is_a_400(harness_factory):  # noqa: F811
    h = harness_factory()
    msgs = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42"}]
    with TestClient(h.app) as c:
        r = c.post("/v1/chat/completions", json={"model": h.model_id, "messages": msgs})
    openai_error(r, 400, "messages[1].tool_call_id")


def test_unknown_message_field_with_text_is_a_400(harness_factory):  # noqa: F811
    h = harness_factory()
    with TestClient(h.app) as c:
        bad = c.post("/v1/chat/completions", json={"model": h.model_id, "max_tokens": 2, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok", "reasoning_content": PROMPT}]})
        fine = c.post("/v1/chat/completions", json={"model": h.model_id, "max_tokens": 2, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "ok", "audio": None, "annotations": []}, {"role": "user", "content": "x"}]})
    openai_error(bad, 400, "messages[1].reasoning_content")
    assert fine.status_code == 200, fine.text


TOOL_CALL_MSGS = [
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"q": PROMPT})}}]},
]


def test_tool_call_arguments_are_scored(harness_factory, server_guard, upstream):  # noqa: F811
    folded = [TOOL_CALL_MSGS[0], {"role": "assistant", "content": f"lookup({json.dumps({'q': PROMPT})})"}]
    seen = server_guard.scan(folded)
    fid, thr = separating_feature(_peaks(seen.tokens, lambda t: t.role == "assistant"),
                                  _peaks(seen.tokens, lambda t: t.role == "user" and t.content))
    _assert_blocked_in_both_modes(harness_factory, upstream, block_yaml(fid, thr),
                                  {"messages": TOOL_CALL_MSGS, "max_tokens": 2})
    assert validate_messages(TOOL_CALL_MSGS) == folded  # what the guard scores: the call as name(arguments)


# --------------------------------------------------------------------------------- 5. long input

def _events(guard, ids: list[int], lo: int, first: int, end: int) -> list:
    """Events of positions first..end-1 when the model reads ids[lo:end] in one pass (from position 0)."""
    tr = guard.tracker(lambda p, t: ("", "prompt", True, "user"))
    tr.stop_at_deepest = True
    with tr.attached(guard.model), torch.no_grad():
        run_until_hooks(guard.model, input_ids=torch.tensor([ids[lo:end]]), use_cache=False)
    return [(t.position + lo, [(h.feature_id, round(h.activation, 4)) for h in t.hits])
            for t in tr.tokens if t.position + lo >= first]


def test_a_chunk_boundary_does_not_cut_the_context(server_guard):  # noqa: F811
    """Text cut by a chunk boundary is read with the tokens before it, and every token is scored once."""
    g = Guard(server_guard.model, server_guard.tokenizer, server_guard.db,
              model_fingerprint=server_guard.db.fingerprint, max_tokens=16)
    text = " ".join([PROMPT] * 4)
    ids = g.encode_prompt(text)[0].input_ids
    res = g.scan(text)
    assert [t.position for t in res.tokens] == list(range(len(ids)))
    got = [(t.position, [(h.feature_id, round(h.activation, 4)) for h in t.hits]) for t in res.tokens]
    second = [e for e in got if 16 <= e[0] < 32]
    assert second != _events(g, ids, 16, 16, 32), "the second chunk was read without any preceding context"
    lo, first, end = g.chunk_windows(len(ids))[1]
    assert (first, end) == (16, 32) and lo < first and res.truncation.overlap == first - lo
    assert second == _events(g, ids, lo, first, end)
