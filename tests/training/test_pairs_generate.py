"""Tests for de-concept twin generation (`safesail_training.pairs_generate`) and `safesail pairs generate`.

The LLM is the in-process fake OpenAI server; the CLI runs through typer's CliRunner.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from safesail_guard.cli.pairs import EXIT_SOME_FAILED, app
from safesail_training.pairs_generate import (
    TwinRejected,
    build_messages,
    errors_path_for,
    extract_twin,
    read_concept_queries,
)
from tests.fakes.fake_openai import FakeOpenAIServer, Reply, chat_body, error_body, last_user_text

HAVE_TAXONOMY = importlib.util.find_spec("safesail_training.corpus.pairs") is not None


def valid_levels() -> tuple[str, str]:
    """A (level0, level1) the taxonomy accepts (any pair when the taxonomy module is absent)."""
    if not HAVE_TAXONOMY:
        return "violence", "insult"
    from safesail_training.corpus.pairs import load_taxonomy

    taxonomy = load_taxonomy()
    level0 = list(taxonomy.level0s)[0]
    return level0, list(taxonomy.level1s(level0))[0]


L0, L1 = valid_levels()


def query_of(body) -> str:
    """The query text the client embedded in the user message."""
    return last_user_text(body).split("Query:\n", 1)[1]


def scripted_twins(body) -> Reply:
    """Fake LLM: FENCED -> reasoning + ```text block, PLAIN -> bare reply, SAME -> the query unchanged."""
    query = query_of(body)
    if query.startswith("FENCED"):
        text = "The word 'stupid' carries the insult.\n```text\nrewritten fenced\n```\n"
    elif query.startswith("PLAIN"):
        text = "  rewritten plain \n"
    elif query.startswith("SAME"):
        text = f"```text\n{query}\n```"
    elif query.startswith("LONG"):
        return Reply(json=chat_body("```text\nhalf of a", finish_reason="length"))
    elif query.startswith("REFUSE"):
        return Reply(status=400, json=error_body("content policy violation"))
    else:
        text = f"twin of {query}"
    return Reply(json=chat_body(text, prompt_tokens=20, completion_tokens=5))


from tests.fakes.fixtures import clean_llm_env  # noqa: E402,F401  (autouse fixture)


@pytest.fixture
def server():
    with FakeOpenAIServer(responder=scripted_twins) as fake:
        yield fake


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_cli(server: FakeOpenAIServer, inp: Path, out: Path, *extra: str):
    args = ["generate", str(inp), "-o", str(out), "--base-url", server.base_url, "--model", "fake-llm",
            "--max-retries", "0", "--timeout", "2", "--no-progress", *extra]
    return CliRunner().invoke(app, args)


def record(qid: str | None, text: str, **extra) -> dict:
    base = {"level0": L0, "level1": L1, "concept": text} | extra
    return base if qid is None else {"id": qid} | base


def test_end_to_end_fenced_unfenced_identical(server: FakeOpenAIServer, tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "queries.jsonl", [
        record("a", "FENCED what is wrong with your stupid head", lang="en"),
        {"id": "b", "level0": L0, "level1": L1, "text": "PLAIN you idiot"},
        record("c", "SAME unchanged query"),
        "",
        record(None, "NOID some query", lang="zh"),
    ])
    out = tmp_path / "pairs.jsonl"
    result = run_cli(server, inp, out)
    assert result.exit_code == EXIT_SOME_FAILED, result.output
    assert "twins written: 3" in result.stdout and "failed: 1" in result.stdout
    assert "tokens: prompt 80, completion 20" in result.stdout
    pairs = read_jsonl(out)
    assert [p["deconcept"] for p in pairs] == ["rewritten fenced", "rewritten plain", "twin of NOID some query"]
    assert pairs[0] == {"id": "a", "level0": L0, "level1": L1, "lang": "en",
                        "concept": "FENCED what is wrong with your stupid head", "deconcept": "rewritten fenced",
                        "source": "llm:fake-llm"}
    assert pairs[1]["lang"] == "en" and pairs[1]["concept"] == "PLAIN you idiot"
    assert pairs[2]["id"].startswith("q-") and pairs[2]["lang"] == "zh"
    errors = read_jsonl(errors_path_for(out))
    assert errors_path_for(out) == tmp_path / "pairs.errors.jsonl"
    assert [(e["id"], e["status"]) for e in errors] == [("c", "identical_reply")]
    assert "identical" in errors[0]["error"]
    assert "c" not in {p["id"] for p in pairs}  # never a fake twin
    sent = server.requests[0].body
    assert sent["model"] == "fake-llm" and sent["messages"][0]["role"] == "system"
    assert f"{L0} - {L1}" in sent["messages"][1]["content"]


def test_resume_skips_done_ids_and_retries_failures(server: FakeOpenAIServer, tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x"), record("b", "SAME y"), record("c", "PLAIN z")])
    out = tmp_path / "pairs.jsonl"
    assert run_cli(server, inp, out).exit_code == EXIT_SOME_FAILED
    assert len(server.requests) == 3

    again = run_cli(server, inp, out)  # only the failed id is asked again
    assert again.exit_code == EXIT_SOME_FAILED
    assert len(server.requests) == 4 and query_of(server.requests[-1].body) == "SAME y"
    assert "already done: 2" in again.stdout

    server.responder = lambda body: Reply(json=chat_body("```text\nfixed y\n```"))
    final = run_cli(server, inp, out)
    assert final.exit_code == 0, final.output
    assert len(server.requests) == 5
    assert [p["id"] for p in read_jsonl(out)] == ["a", "c", "b"]
    assert not errors_path_for(out).exists()
    assert run_cli(server, inp, out).exit_code == 0 and len(server.requests) == 5  # nothing left to do


def test_resume_drops_a_torn_last_line(server: FakeOpenAIServer, tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x"), record("b", "PLAIN y")])
    out = tmp_path / "pairs.jsonl"
    out.write_text(json.dumps(record("a", "FENCED x") | {"deconcept": "t", "source": "llm:x", "lang": "en"})
                   + '\n{"id": "b", "level0": "vio', encoding="utf-8")
    result = run_cli(server, inp, out)
    assert result.exit_code == 0, result.output
    assert [p["id"] for p in read_jsonl(out)] == ["a", "b"]
    assert len(server.requests) == 1


def test_llm_errors_and_truncation_are_recorded(server: FakeOpenAIServer, tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record("r", "REFUSE this"), record("l", "LONG story"),
                                             record("ok", "PLAIN fine")])
    out = tmp_path / "pairs.jsonl"
    result = run_cli(server, inp, out)
    assert result.exit_code == EXIT_SOME_FAILED
    errors = {e["id"]: e for e in read_jsonl(errors_path_for(out))}
    assert errors["r"]["status"] == "llm_error" and "HTTP 400" in errors["r"]["error"]
    assert "content policy violation" in errors["r"]["error"]
    assert errors["l"]["status"] == "truncated"
    assert [p["id"] for p in read_jsonl(out)] == ["ok"]
    assert "llm_error=1" in result.stderr and "truncated=1" in result.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ('{"id": "x", "level0": "violence"', "invalid JSON"),
        ('["not", "an", "object"]', "expected a JSON object"),
        (json.dumps({"id": "x", "level1": "insult", "concept": "q"}), "missing field 'level0'"),
        (json.dumps({"id": "x", "level0": "violence", "level1": "insult"}), "missing the query text"),
        (json.dumps({"id": 7, "level0": "violence", "level1": "insult", "concept": "q"}), "'id' must be"),
        (json.dumps({"id": "a", "level0": "violence", "level1": "insult", "concept": "q"}), "duplicate id 'a'"),
    ],
)
def test_bad_input_line_names_file_and_line(
    server: FakeOpenAIServer, tmp_path: Path, line: str, expected: str
) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x"), line])
    result = run_cli(server, inp, tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert f"{inp}:2" in result.stderr and expected in result.stderr
    assert "Traceback" not in result.output
    assert server.requests == []  # input is validated before any request


@pytest.mark.skipif(not HAVE_TAXONOMY, reason="safesail_training.corpus.pairs (load_taxonomy) not written yet")
def test_unknown_taxonomy_levels_are_rejected(server: FakeOpenAIServer, tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x"),
                                             {"id": "b", "level0": "no-such-domain", "level1": L1, "concept": "q"}])
    result = run_cli(server, inp, tmp_path / "out.jsonl")
    assert result.exit_code == 2
    assert f"{inp}:2" in result.stderr and "unknown level0 'no-such-domain'" in result.stderr
    assert L0 in result.stderr  # the valid choices are listed
    inp = write_jsonl(tmp_path / "q.jsonl", [{"id": "b", "level0": L0, "level1": "no-such-sub", "concept": "q"}])
    result = run_cli(server, inp, tmp_path / "out.jsonl")
    assert result.exit_code == 2 and "unknown level1 'no-such-sub'" in result.stderr
    assert server.requests == []


@pytest.mark.skipif(not HAVE_TAXONOMY, reason="safesail_training.corpus.pairs (ConceptPair) not written yet")
def test_pair_schema_checked_before_requests_and_output_loads(server: FakeOpenAIServer, tmp_path: Path) -> None:
    from safesail_training.corpus.pairs import load_pairs

    bad = write_jsonl(tmp_path / "bad.jsonl", [record("a", "FENCED x", lang="xx")])
    result = run_cli(server, bad, tmp_path / "out.jsonl")
    assert result.exit_code == 2 and f"{bad}:1" in result.stderr and "unknown lang 'xx'" in result.stderr
    assert server.requests == []
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x", lang="zh"), record(None, "PLAIN y")])
    assert run_cli(server, inp, tmp_path / "out.jsonl").exit_code == 0
    pairs = load_pairs([tmp_path / "out.jsonl"])
    assert [(p.lang, p.deconcept, p.source) for p in pairs] == [
        ("zh", "rewritten fenced", "llm:fake-llm"), ("en", "rewritten plain", "llm:fake-llm")]


def test_cli_settings_errors(server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x")])
    runner = CliRunner()
    result = runner.invoke(app, ["generate", str(inp), "-o", str(tmp_path / "o.jsonl"), "--model", "m"])
    assert result.exit_code == 2 and "base_url" in result.stderr and "--base-url" in result.stderr
    result = run_cli(server, inp, tmp_path / "o.jsonl", "--api-key-env", "SAFESAIL_TEST_UNSET_KEY")
    assert result.exit_code == 2 and "SAFESAIL_TEST_UNSET_KEY" in result.stderr
    result = run_cli(server, tmp_path / "missing.jsonl", tmp_path / "o.jsonl")
    assert result.exit_code == 2 and "no such file" in result.stderr
    assert server.requests == []


def test_cli_api_key_env_and_cache(server: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_LLM_KEY", "sk-cli-secret")
    inp = write_jsonl(tmp_path / "q.jsonl", [record("a", "FENCED x")])
    extra = ("--api-key-env", "MY_LLM_KEY", "--cache-dir", str(tmp_path / "cache"), "--concurrency", "2")
    assert run_cli(server, inp, tmp_path / "one.jsonl", *extra).exit_code == 0
    assert server.requests[0].headers["authorization"] == "Bearer sk-cli-secret"
    second = run_cli(server, inp, tmp_path / "two.jsonl", *extra)  # new output, same requests: all cached
    assert second.exit_code == 0 and "cache hits: 1" in second.stdout
    assert len(server.requests) == 1
    assert "sk-cli-secret" not in second.output


@pytest.mark.parametrize(
    ("reply", "twin"),
    [
        ("```text\nA calm question.\n```", "A calm question."),
        ("Reasoning: the insult is 'stupid'.\n```text\nA calm question.\n```", "A calm question."),
        ("```\nfirst draft\n```\nBetter:\n```text\nA calm question.\n```", "A calm question."),
        ("```markdown\nA calm question.\n```", "A calm question."),
        ("<think>the word stupid ```text\nnot this\n```</think>\n```text\nA calm question.\n```", "A calm question."),
        ("```text A calm question.```", "A calm question."),
        ("  A calm question.  ", "A calm question."),
    ],
)
def test_extract_twin_accepts(reply: str, twin: str) -> None:
    assert extract_twin(reply, "What is wrong with your stupid head?") == twin


@pytest.mark.parametrize(
    ("reply", "finish", "status"),
    [
        ("", "stop", "empty_reply"),
        ("```text\n\n```", "stop", "empty_reply"),
        ("```text\nWhat is wrong with   your stupid head?\n```", "stop", "identical_reply"),
        ("```text\nA calm", "stop", "unclosed_fence"),
        ("```text\nA calm question.\n```", "length", "truncated"),
    ],
)
def test_extract_twin_rejects(reply: str, finish: str, status: str) -> None:
    with pytest.raises(TwinRejected) as info:
        extract_twin(reply, "What is wrong with your stupid head?", finish)
    assert info.value.status == status


def test_build_messages_mentions_query_concepts_and_language() -> None:
    system, user = build_messages("Q text", ["violence - insult", "violence - threat"], "it")
    assert system["role"] == "system" and "```text" in system["content"]
    assert "violence - insult" in user["content"] and "violence - threat" in user["content"]
    assert user["content"].endswith("Query:\nQ text") and "it" in user["content"]


def test_read_concept_queries_derives_stable_ids(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "q.jsonl", [record(None, "same text"), record(None, "other text")])
    first = read_concept_queries(inp)
    assert [q.id for q in first] == [q.id for q in read_concept_queries(inp)]
    assert first[0].id != first[1].id and first[0].lang == "en" and first[1].line == 2


def test_cli_help_defaults_match_config() -> None:
    from safesail_guard.llm_config import LLMClientConfig

    result = CliRunner().invoke(app, ["generate", "--help"], env={"COLUMNS": "400"})
    assert result.exit_code == 0
    fields = LLMClientConfig.model_fields
    for option, name in [("concurrency", "concurrency"), ("max-retries", "max_retries"), ("timeout", "timeout_s"),
                         ("max-tokens", "max_tokens"), ("temperature", "temperature")]:
        default = fields[name].default
        assert f"(default: {default:g})" in result.stdout, option


def test_generate_pairs_library_call_without_schema_check(server: FakeOpenAIServer, tmp_path: Path) -> None:
    from safesail_guard.llm_client import LLMClient
    from safesail_guard.llm_config import LLMClientConfig
    from safesail_training.pairs_generate import generate_pairs

    inp = write_jsonl(tmp_path / "q.jsonl", [{"id": "x", "level0": "not-in-taxonomy", "level1": "any",
                                              "concept": "PLAIN q", "lang": "fr"}])
    client = LLMClient(LLMClientConfig(base_url=server.base_url, model="fake", max_retries=0))
    summary = generate_pairs(inp, tmp_path / "out.jsonl", client, progress=False, validate_taxonomy=False)
    assert (summary.total, summary.done, summary.failed, summary.errors_path) == (1, 1, 0, None)
    assert (summary.prompt_tokens, summary.completion_tokens) == (20, 5)
    assert read_jsonl(tmp_path / "out.jsonl")[0]["level0"] == "not-in-taxonomy"
