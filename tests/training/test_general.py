"""Tests for the general-text corpus: shipped data, loader, user files and the deterministic builder."""

from __future__ import annotations

import gzip
import json
import re
import subprocess
import sys
import unicodedata
from collections import Counter
from pathlib import Path

import pytest

from safesail_training.corpus import _general_templates as templates
from safesail_training.corpus.errors import CorpusError
from safesail_training.corpus.general import (
    KINDS,
    TextRecord,
    general_files,
    general_summary,
    iter_general,
    iter_user_texts,
)

REPO = Path(__file__).resolve().parents[2]
BUILDER = REPO / "training" / "corpus" / "make_general.py"
DATA = REPO / "training" / "corpus" / "data" / "general"

# Conservative characters-per-token figure for the SmolLM2 tokenizer. Measured once with the real tokenizer on
# the shipped corpus (`make_general.py --measure-tokens`): 4.22 chars/token overall (doc 4.34, chat 3.82,
# risky 4.02), 1,366,458 tokens. Using a larger figure here under-estimates the token count, so the check below
# only passes with a margin; the test never loads the tokenizer.
CHARS_PER_TOKEN_CONSERVATIVE = 4.6
MIN_TOKENS = 1_000_000


@pytest.fixture(scope="module")
def records() -> list[TextRecord]:
    return list(iter_general(shuffle=False))


def _norm(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", unicodedata.normalize("NFKC", text).lower()).split())


# --------------------------------------------------------------------------------------------------- shipped data


def test_shipped_corpus_loads_with_every_kind(records: list[TextRecord]) -> None:
    kinds = Counter(r.kind for r in records)
    assert set(kinds) == set(KINDS)
    assert kinds["doc"] > 2000 and kinds["chat"] > 2000 and kinds["risky"] > 2000
    assert all(isinstance(r, TextRecord) and r.messages is None for r in records)


def test_every_record_is_non_empty_and_has_a_known_source(records: list[TextRecord]) -> None:
    manifest = json.loads((DATA / "SOURCES.json").read_text(encoding="utf-8"))
    assert all(r.text.strip() for r in records)
    assert {r.source for r in records} == set(manifest["sources"])
    licenses = (DATA / "LICENSES.txt").read_text(encoding="utf-8")
    for sid, meta in manifest["sources"].items():
        assert meta.get("license"), f"{sid} has no license"
        if meta["kind"] == "doc":
            assert f"\n{sid} " in licenses, f"{sid} is missing from LICENSES.txt"


def test_enough_text_for_a_million_tokens(records: list[TextRecord]) -> None:
    chars = Counter()
    for r in records:
        chars[r.kind] += len(r.text)
    total = sum(chars.values())
    assert total / CHARS_PER_TOKEN_CONSERVATIVE >= MIN_TOKENS, f"only {total} characters"
    # rough shares by characters (tokens: doc ~72%, chat ~16%, risky ~13%)
    assert 0.6 <= chars["doc"] / total <= 0.85
    assert chars["chat"] / total >= 0.10
    assert chars["risky"] / total >= 0.08


def test_generated_records_have_no_duplicates(records: list[TextRecord]) -> None:
    for kind in ("chat", "risky"):
        keys = [_norm(r.text) for r in records if r.kind == kind]
        assert len(keys) == len(set(keys)), f"duplicate {kind} records"


def test_shipped_files_are_small() -> None:
    files = list(DATA.glob("*.jsonl.gz"))
    assert files and all(f.stat().st_size <= 2_000_000 for f in files)
    assert sum(f.stat().st_size for f in files) <= 6_000_000
    assert [f.name for f in general_files()] == sorted(f.name for f in files)


def test_shipped_generated_part_is_up_to_date(records: list[TextRecord]) -> None:
    """The shipped chat/risky files match what the templates produce now (rebuild after editing them)."""
    seed = json.loads((DATA / "SOURCES.json").read_text(encoding="utf-8"))["seed"]
    for kind, make in (("chat", templates.chat_records), ("risky", templates.risky_records)):
        fresh = Counter((r["source"], r["text"]) for r in make(seed, None))
        shipped = Counter((r.source, r.text) for r in records if r.kind == kind)
        assert fresh == shipped, (
            f"data/general/{kind}.jsonl.gz is stale: run "
            "`.venv/bin/python training/corpus/make_general.py --out training/corpus/data/general --measure-tokens`"
        )


def test_summary_matches_records(records: list[TextRecord]) -> None:
    s = general_summary()
    assert s["records"] == len(records)
    assert s["characters"] == sum(len(r.text) for r in records)
    assert set(s["kinds"]) == set(KINDS)
    assert sum(v["records"] for v in s["sources"].values()) == len(records)
    assert s["tokens"]["total"] >= MIN_TOKENS


# --------------------------------------------------------------------------------------------------- iteration


def test_shuffle_is_deterministic_per_seed() -> None:
    a = [r.text for r in iter_general(seed=3)]
    b = [r.text for r in iter_general(seed=3)]
    c = [r.text for r in iter_general(seed=4)]
    assert a == b
    assert a != c
    assert sorted(a) == sorted(c)
    assert [r.text for r in iter_general(shuffle=False)] != a


def test_kind_filter() -> None:
    chat = list(iter_general({"chat"}, seed=0))
    assert chat and {r.kind for r in chat} == {"chat"}
    two = list(iter_general({"doc", "risky"}, seed=0))
    assert {r.kind for r in two} == {"doc", "risky"}
    with pytest.raises(CorpusError, match="unknown record kind"):
        list(iter_general({"docs"}))
    with pytest.raises(CorpusError, match="empty"):
        list(iter_general(set()))


# --------------------------------------------------------------------------------------------------- content rules


def test_adult_domain_never_mentions_minors() -> None:
    en = templates._risky("en", 0, 500, {"pornography": templates.RISKY_EN["pornography"]},
                          templates.RISKY_CARRIERS_EN, (templates.RISKY_SHARED_EN, templates.SHARED_EN))
    minors = {
        "en": r"\b(child|children|kids?|minors?|teens?|teenagers?|school|students?|girls?|boys?|underage|youth|pupils?|classmates?)\b",
        "zh": r"孩子|儿童|未成年|学生|少年|初中|小学",
        "hi": r"बच्च|किशोर|नाबालिग|छात्र|स्कूल",
        "it": r"bambin|ragazz|minorenn|adolescent|scuol|student|figli",
        "vi": r"trẻ em|thiếu niên|học sinh|vị thành niên|tuổi teen|với con",
    }
    assert len(en) > 100
    assert not [t for t in en if re.search(minors["en"], t, re.I)]
    for lang, spec in templates.RISKY_ML.items():
        recs = templates._risky(lang, 0, 200, {"pornography": spec["domains"]["pornography"]}, spec["carriers"],
                                (spec["shared"],))
        assert recs and not [t for t in recs if re.search(minors[lang], t, re.I)], lang


def test_template_generators_are_seeded() -> None:
    a = templates.chat_records(0, 20) + templates.risky_records(0, 20)
    b = templates.chat_records(0, 20) + templates.risky_records(0, 20)
    c = templates.chat_records(1, 20) + templates.risky_records(1, 20)
    assert a == b and a != c
    assert {r["source"].split("-")[-1] for r in a} == {"en", "zh", "hi", "it", "vi"}


# --------------------------------------------------------------------------------------------------- user files


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_user_jsonl_text_kinds_and_messages(tmp_path: Path) -> None:
    f = _write(tmp_path / "mine.jsonl", [
        json.dumps({"text": "A plain document."}),
        "",
        json.dumps({"text": "Some risky news.", "kind": "risky", "source": "my-news"}),
        json.dumps({"messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "First question?"},
            {"role": "assistant", "content": "An answer."},
            {"role": "user", "content": [{"type": "text", "text": "Second question?"}]},
        ]}),
    ])
    recs = list(iter_user_texts([f]))
    assert [r.kind for r in recs] == ["doc", "risky", "chat"]
    assert recs[0].text == "A plain document." and recs[0].source == "user:mine.jsonl"
    assert recs[1].source == "my-news"
    chat = recs[2]
    assert chat.text == "Second question?"
    assert chat.messages is not None and len(chat.messages) == 4
    assert chat.messages[-1] == {"role": "user", "content": "Second question?"}


def test_user_jsonl_custom_text_field_and_gzip(tmp_path: Path) -> None:
    f = tmp_path / "c.jsonl.gz"
    f.write_bytes(gzip.compress((json.dumps({"body": "Hello there.", "id": 1}) + "\n").encode()))
    assert [r.text for r in iter_user_texts([f], text_field="body")] == ["Hello there."]


def test_user_txt_and_md_blocks(tmp_path: Path) -> None:
    txt = tmp_path / "notes.txt"
    txt.write_text("First paragraph\ncontinues here.\n\n\nSecond one.\r\n\r\n   \nThird.", encoding="utf-8")
    md = _write(tmp_path / "readme.md", ["# Title", "", "Body text."])
    recs = list(iter_user_texts([txt, md]))
    assert [r.text for r in recs] == ["First paragraph\ncontinues here.", "Second one.", "Third.", "# Title", "Body text."]
    assert {r.kind for r in recs} == {"doc"}
    assert recs[0].source == "user:notes.txt"


def test_user_directory_is_expanded(tmp_path: Path) -> None:
    _write(tmp_path / "b.txt", ["Bee."])
    _write(tmp_path / "a.jsonl", [json.dumps({"text": "Ay."})])
    (tmp_path / "ignored.csv").write_text("x,y\n")
    assert [r.text for r in iter_user_texts([tmp_path])] == ["Ay.", "Bee."]


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": "ok"', "bad JSON"),
        ('["a list"]', "expected a JSON object"),
        ('{"title": "no text"}', "missing field 'text'"),
        ('{"text": "   "}', "field 'text' is empty"),
        ('{"text": 42}', "must be a string, got int"),
        ('{"text": "x", "kind": "poem"}', "field 'kind' must be one of"),
        ('{"messages": [{"role": "assistant", "content": "hi"}]}', "no message with role 'user'"),
        ('{"messages": "hello"}', "'messages' must be a list"),
        ('{"messages": [{"role": "user", "content": 3}]}', "needs a string 'content'"),
    ],
)
def test_bad_lines_name_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    f = _write(tmp_path / "bad.jsonl", [json.dumps({"text": "fine"}), line])
    with pytest.raises(CorpusError) as info:
        list(iter_user_texts([f]))
    msg = str(info.value)
    assert f"{f}:2:" in msg and problem in msg
    assert info.value.path == str(f) and info.value.line == 2


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CorpusError, match=re.escape(f"{missing}: file not found")):
        list(iter_user_texts([missing]))
    csv = tmp_path / "data.csv"
    csv.write_text("a,b\n")
    with pytest.raises(CorpusError, match="unsupported file type"):
        list(iter_user_texts([csv]))


def test_paths_without_records_raise(tmp_path: Path) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n   \n")
    blank = _write(tmp_path / "blank.jsonl", ["", "   "])
    with pytest.raises(CorpusError, match="no text records found") as info:
        list(iter_user_texts([empty, blank]))
    assert str(empty) in str(info.value) and str(blank) in str(info.value)


# --------------------------------------------------------------------------------------------------- builder


def test_builder_is_deterministic_on_a_tiny_sample(tmp_path: Path) -> None:
    outs = [tmp_path / "a", tmp_path / "b"]
    for out in outs:
        subprocess.run([sys.executable, str(BUILDER), "--out", str(out), "--limit", "2"], check=True,
                       capture_output=True, text=True, timeout=120)
    names = sorted(p.name for p in outs[0].iterdir())
    assert {"SOURCES.json", "LICENSES.txt"} <= set(names) and any(n.startswith("doc") for n in names)
    assert {"chat.jsonl.gz", "risky.jsonl.gz"} <= set(names)
    assert names == sorted(p.name for p in outs[1].iterdir())
    for name in names:
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name
    manifest = json.loads((outs[0] / "SOURCES.json").read_text())
    assert manifest["limit"] == 2 and set(manifest["kinds"]) == set(KINDS)
    with gzip.open(outs[0] / "chat.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert rows and all(set(r) == {"text", "source", "kind"} and r["kind"] == "chat" for r in rows)
