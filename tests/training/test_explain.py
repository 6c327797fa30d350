"""Tests for `safesail_training.explain`: the offline explainer, the LLM explainer (fake OpenAI server) and the
reply parser. Also home of the synthetic-feature builders and fake embedder the simulate/spscore tests import."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import pytest
import torch

from safesail_guard.llm_client import LLMClient
from safesail_guard.llm_config import LLMClientConfig
from safesail_neuron_db.records import ActivationExample, ConceptHit, Explanation, FeatureRecords, quantize
from safesail_training.explain import (
    Explainer,
    OfflineExplainer,
    OpenAIExplainer,
    build_explain_messages,
    escape_text,
    parse_explanation,
    peak_window,
    strip_reasoning,
)
from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body, error_body, last_user_text
from tests.fakes.fixtures import clean_llm_env  # noqa: F401  (autouse fixture)

# -- builders shared with test_simulate / test_spscore ------------------------------------------------------------


def example(spec: str, *, kind: str = "top", feature_max: float = 10.0, source: str = "test") -> ActivationExample:
    """An example from ``"a man used a knife=8 to stab=10 him"``: whitespace-separated tokens (each but the
    first gets a leading space), ``=x`` gives the token's true activation (0 otherwise)."""
    tokens: list[str] = []
    acts: list[float] = []
    for i, word in enumerate(spec.split(" ")):
        text, _, act = word.partition("=")
        tokens.append(text if i == 0 else " " + text)
        acts.append(float(act) if act else 0.0)
    levels = quantize(acts, feature_max)
    peak = max(acts)
    return ActivationExample(tokens, acts, levels, peak, kind, max(levels), source)


def feature(
    *specs: str | ActivationExample,
    fid: str = "14_4828",
    concepts: Sequence[tuple[str, str]] = (("violence", "physical assault"),),
    quiet: Sequence[str] = (),
    level: Sequence[str] = (),
) -> FeatureRecords:
    """A feature whose top examples are ``specs``, then ``level`` examples, then ``quiet`` (no firing) ones."""
    examples = [s if isinstance(s, ActivationExample) else example(s) for s in specs]
    examples += [example(s, kind="level") for s in level]
    examples += [example(s, kind="quiet") for s in quiet]
    layer, latent = (int(x) for x in fid.split("_"))
    hits = [ConceptHit(l0, l1, 0.9, 0.3, 20, 6, 0) for l0, l1 in concepts]
    peak = max((e.max_act for e in examples), default=0.0)
    return FeatureRecords(fid, layer, latent, hits, peak, 0.01, examples)


def ok_explanation(fid: str, text: str) -> Explanation:
    return Explanation(fid, text, "ok", "offline")


class FakeEmbedder:
    """Deterministic bag-of-words embedder with the SentenceEmbedder interface: each lower-cased word adds 1 to a
    hashed coordinate; rows are L2-normalised (blank text -> zero row)."""

    name = "fake-bow"

    def __init__(self, dim: int = 512) -> None:
        self.dim = dim
        self.calls: list[list[str]] = []

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        out = torch.zeros(len(texts), self.dim)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                out[row, int(hashlib.md5(word.encode()).hexdigest(), 16) % self.dim] += 1.0
        return torch.nn.functional.normalize(out, dim=1)


def make_client(server: FakeOpenAIServer, **overrides) -> LLMClient:
    settings = {"base_url": server.base_url, "model": "sim-m", "timeout_s": 5.0, "max_retries": 2,
                "backoff_s": 0.01, "backoff_max_s": 0.02, "concurrency": 4} | overrides
    return LLMClient(LLMClientConfig(**settings))


@pytest.fixture
def server():
    with FakeOpenAIServer() as fake:
        yield fake


KNIFE = feature(
    "a man used a knife=6 to stab=10 his neighbour",
    "they attacked=9 him with a knife=7 at night",
    "police said the stab=8 wound was deep",
    quiet=["the weather was sunny and warm today"],
    level=["he picked up the knife=3 slowly"],
)

# -- offline explainer ----------------------------------------------------------------------------------------


def test_offline_explanation_names_strongest_words_concepts_and_context() -> None:
    result = OfflineExplainer().explain(KNIFE)
    assert result.status == "ok" and result.method == "offline" and result.feature_id == "14_4828"
    assert result.text == (
        'Fires on "stab", "knife", "attacked" in violence / physical assault contexts, '
        'e.g. "a man used a knife to stab his neighbour"'
    )


def test_offline_explainer_is_deterministic_and_merges_subword_tokens() -> None:
    pieces = ActivationExample([" he", " st", "ab", "bed", " me"], [0, 4, 9, 2, 0], [0, 4, 9, 2, 0], 9, "top", 9)
    feat = feature(pieces, "then he stabbed=9 me again", concepts=())
    first = OfflineExplainer().explain(feat)
    assert first == OfflineExplainer().explain(feat)
    assert first.text is not None and first.text.startswith('Fires on "stabbed"')  # pieces joined to the word
    assert " in " not in first.text.split(", e.g.")[0]  # no concept tags -> no "in ... contexts"


def test_offline_explainer_skips_feature_without_firing_examples() -> None:
    feat = feature(quiet=["nothing happens here", "still nothing"])
    result = OfflineExplainer().explain(feat)
    assert result.status == "skipped" and result.text is None and "no firing examples" in result.detail
    empty = FeatureRecords("3_1", 3, 1, [], 0.0, 0.0, [])
    assert OfflineExplainer().explain(empty).status == "skipped"


def test_offline_explain_many_order_and_on_result() -> None:
    feats = [KNIFE, feature(quiet=["calm text"], fid="2_7")]
    seen: list[Explanation] = []
    explainer: Explainer = OfflineExplainer()
    results = explainer.explain_many(feats, progress=False, on_result=seen.append)
    assert [r.feature_id for r in results] == ["14_4828", "2_7"]
    assert [r.status for r in results] == ["ok", "skipped"] and seen == results


def test_offline_explainer_escapes_whitespace_tokens_and_quotes() -> None:
    ex = ActivationExample(['He said "no"', "\n", " ok"], [0.0, 5.0, 0.0], [0, 10, 0], 5.0, "top", 10)
    text = OfflineExplainer().explain(feature(ex, concepts=())).text
    assert text is not None and '"\\n"' in text and '""' not in text.replace('"\\n"', "")


def test_offline_explainer_survives_empty_and_edge_tokens() -> None:
    ex = ActivationExample(["", "knife", ""], [3.0, 9.0, 4.0], [3, 10, 4], 9.0, "top", 10)
    text = OfflineExplainer().explain(feature(ex, concepts=())).text
    assert text == 'Fires on "knife", e.g. "knife"'


def test_peak_window_marks_and_cuts() -> None:
    ex = example("one two three four five six seven eight nine ten=5 eleven twelve thirteen fourteen")
    assert peak_window(ex, 2, 1) == "...eight nine ten eleven..."
    assert peak_window(ex, 2, 1, mark=True) == "...eight nine [[ten]] eleven..."
    assert peak_window(ex, 2, 1, ellipsis=False) == "eight nine ten eleven"
    assert escape_text("a\tb\nc\x07") == "a\\tb\\nc\\x07"


# -- prompt ----------------------------------------------------------------------------------------------------


def test_explain_prompt_groups_examples_by_level_and_lists_firing_tokens() -> None:
    messages = build_explain_messages(KNIFE, max_examples=10)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.index("== Peak level 10 ==") < user.index("== Peak level 8 ==") < user.index("== Peak level 3 ==")
    assert " stab\t10" in user and " knife\t3" in user and " man\t" not in user  # only firing tokens listed
    assert "== Silent" in user and "the weather was sunny" in user
    assert user.rstrip().endswith('"Explanation:".')
    assert len(re.findall(r"^Example \d+:", build_explain_messages(KNIFE, max_examples=2)[1]["content"], re.M)) == 2


# -- parser ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("Explanation: the word knife", "the word knife"),
        ("explanation:   mentions of stabbing  ", "mentions of stabbing"),
        ("<think>Maybe knives? Explanation: not this</think>\nExplanation: weapons used to cut", "weapons used to cut"),
        ("reasoning the server cut</think>Explanation: blades", "blades"),
        ("```\nExplanation: knife attacks\n```", "knife attacks"),
        ("Looking at the examples, they are violent.\n\n**Explanation:** stabbing and knives", "stabbing and knives"),
        ('Explanation: "violent verbs like stab"', "violent verbs like stab"),
        ('Explanation: "stab" or "knife"', '"stab" or "knife"'),
        ("Explanation:\nverbs of cutting", "verbs of cutting"),
        ("Explanation: first guess\nExplanation: final answer", "final answer"),
        ("the word knife", "the word knife"),
        ("- Explanation: weapons", "weapons"),
        ("", None),
        ("   \n", None),
        ("Explanation:", None),
        ("Explanation: " + "x " * 300, None),
        ("I'm sorry, but I can't help with that.", None),
        ("Explanation: I cannot determine this.", None),
        ("Explanation: N/A", None),
        ("two lines\nwithout a label", None),
        ("<think>I never finish thinking", None),
    ],
)
def test_parse_explanation(reply: str, expected: str | None) -> None:
    assert parse_explanation(reply) == expected


def test_strip_reasoning_variants() -> None:
    assert strip_reasoning("<think>a</think>b<THINK>c</THINK>d") == "bd"
    assert strip_reasoning("  <think>reasoning that never ends") == ""
    assert strip_reasoning("a\t0\n<think>\t0\nb\t3") == "a\t0\n<think>\t0\nb\t3"  # an echoed token stays
    assert strip_reasoning("thoughts</think>answer") == "answer"


# -- LLM explainer ---------------------------------------------------------------------------------------------


def responder_by_feature(request) -> Reply:
    user = last_user_text(request)
    if "BROKEN" in user:
        return Reply(json=chat_body("I looked at the data but I will not summarise.\nNo label here.",
                                    prompt_tokens=40, completion_tokens=9))
    if "DENIED" in user:
        return Reply(status=400, json=error_body("content policy violation"))
    return Reply(json=chat_body("<think>knives everywhere</think>\nExplanation: knife violence",
                                prompt_tokens=100, completion_tokens=20))


def test_openai_explainer_statuses_tokens_and_on_result(server: FakeOpenAIServer) -> None:
    server.responder = responder_by_feature
    feats = [
        KNIFE,
        feature("BROKEN reply=5 here", fid="1_1"),
        feature("DENIED request=5 here", fid="1_2"),
        feature(quiet=["nothing"], fid="1_3"),
    ]
    explainer = OpenAIExplainer(make_client(server), max_examples=4, max_tokens=300)
    seen: list[Explanation] = []
    results = explainer.explain_many(feats, progress=False, on_result=seen.append)
    assert explainer.name == "openai:sim-m"
    assert [r.feature_id for r in results] == ["14_4828", "1_1", "1_2", "1_3"]
    ok, broken, denied, quiet = results
    assert ok.status == "ok" and ok.text == "knife violence" and ok.method == "openai:sim-m"
    assert (ok.prompt_tokens, ok.completion_tokens) == (100, 20)
    assert broken.status == "unparseable" and broken.text is None and "will not summarise" in broken.detail
    assert (broken.prompt_tokens, broken.completion_tokens) == (40, 9)
    assert denied.status == "failed" and "content policy violation" in denied.detail
    assert quiet.status == "skipped"
    assert len(server.requests) == 3  # no request for the silent feature
    assert sorted(r.feature_id for r in seen) == sorted(r.feature_id for r in results) and len(seen) == 4
    assert all(r.body["max_tokens"] == 300 for r in server.requests)


def test_openai_explainer_retries_then_succeeds(server: FakeOpenAIServer) -> None:
    server.script(Reply(status=500, json=error_body("boom")), Reply(status=429, headers={"Retry-After": "0"}))
    server.responder = lambda body: Reply(json=chat_body("Explanation: knives"))
    (result,) = OpenAIExplainer(make_client(server)).explain_many([KNIFE], progress=False)
    assert result.status == "ok" and result.text == "knives" and len(server.requests) == 3


def test_openai_explainer_permanent_failure_is_a_status(server: FakeOpenAIServer) -> None:
    server.responder = lambda body: Reply(status=503, json=error_body("overloaded"))
    (result,) = OpenAIExplainer(make_client(server, max_retries=1)).explain_many([KNIFE], progress=False)
    assert result.status == "failed" and result.text is None and "overloaded" in result.detail


def test_openai_explainer_truncated_reply_is_unparseable(server: FakeOpenAIServer) -> None:
    server.script(
        Reply(json=chat_body("Explanation: knife vio", finish_reason="length")),
        Reply(json=chat_body("Explanation: knives\nMore words that got cu", finish_reason="length")),
    )
    explainer = OpenAIExplainer(make_client(server))
    cut, complete = explainer.explain_many([KNIFE, KNIFE], progress=False)
    assert {cut.status, complete.status} == {"unparseable", "ok"}
    bad = cut if cut.status == "unparseable" else complete
    assert "max_tokens" in bad.detail
