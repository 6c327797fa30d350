"""Tests for the built-in concept-contrastive query pairs (safesail_training.corpus.pairs)."""

from __future__ import annotations

import difflib
import json
import re
import statistics
from collections import Counter
from pathlib import Path

import pytest

from safesail_training.corpus import make_template_pairs
from safesail_training.corpus.errors import CorpusError
from safesail_training.corpus.pairs import (
    LANGS,
    ConceptPair,
    default_pair_files,
    load_pairs,
    load_taxonomy,
    pairs_summary,
)

LEVEL0S = {
    "pornography", "politics", "violence", "terror", "hate",
    "self_harm", "weapons", "drugs", "cybercrime", "privacy",
}


@pytest.fixture(scope="module")
def pairs() -> list[ConceptPair]:
    return load_pairs()


def _row(**overrides: object) -> dict:
    row = {
        "id": "violence-0001",
        "level0": "violence",
        "level1": "insult",
        "lang": "en",
        "concept": "You are a useless idiot.",
        "deconcept": "You are a helpful friend.",
        "source": "handwritten",
    }
    row.update(overrides)
    return row


def _write(path: Path, *lines: object) -> Path:
    path.write_text(
        "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines), encoding="utf-8"
    )
    return path


def _tokens(text: str, lang: str) -> list[str]:
    if lang in ("zh", "hi"):  # no reliable word split for zh; Devanagari matras make char level the fair unit
        return list(text)
    return re.findall(r"\w+|[^\w\s]", text.lower())


# ------------------------------------------------------------------------------------------ taxonomy


def test_taxonomy_shape() -> None:
    tax = load_taxonomy()
    assert set(tax.level0s) == LEVEL0S
    for level0 in tax.level0s:
        assert tax.describe(level0).strip()
        level1s = tax.level1s(level0)
        assert 3 <= len(level1s) <= 6, level0
        for level1 in level1s:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", level1), level1
            assert tax.describe(level0, level1).strip()


def test_taxonomy_unknown_names_list_valid_choices() -> None:
    tax = load_taxonomy()
    with pytest.raises(ValueError, match="valid choices: .*violence"):
        tax.level1s("gambling")
    with pytest.raises(ValueError, match="valid choices: .*insult"):
        tax.describe("violence", "arson")


def test_taxonomy_bad_file(tmp_path: Path) -> None:
    bad = tmp_path / "tax.json"
    bad.write_text('{"schema_version": 1, "level0": {"x": {"description": "d"}}}', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"tax\.json.*level0 'x'.*level1"):
        load_taxonomy(bad)


# ------------------------------------------------------------------------------------------ shipped corpus counts


def test_shipped_corpus_counts(pairs: list[ConceptPair]) -> None:
    summary = pairs_summary(pairs)
    assert summary["total"] >= 800
    assert set(summary["level0"]) == LEVEL0S
    for level0, n in summary["level0"].items():
        assert n >= 60, f"{level0}: {n} pairs"
    tax = load_taxonomy()
    for level0 in tax.level0s:
        for level1 in tax.level1s(level0):
            n = summary["level1"][level0].get(level1, 0)
            assert n >= 8, f"{level0}/{level1}: {n} pairs"
    assert summary["source_kind"]["handwritten"] >= 420
    assert set(summary["lang"]) == set(LANGS)


def test_multilingual_subset_is_handwritten_and_spread(pairs: list[ConceptPair]) -> None:
    for lang in ("zh", "hi", "it", "vi"):
        subset = [p for p in pairs if p.lang == lang]
        assert len(subset) >= 25, lang
        assert all(p.source == "handwritten" for p in subset), lang
        assert len({p.level0 for p in subset}) >= 5, lang


def test_script_matches_language(pairs: list[ConceptPair]) -> None:
    scripts = {"zh": r"[\u4e00-\u9fff]", "hi": r"[\u0900-\u097f]"}
    for p in pairs:
        for lang, pattern in scripts.items():
            has = bool(re.search(pattern, p.concept)) and bool(re.search(pattern, p.deconcept))
            assert has == (p.lang == lang), p.id


def test_ids_and_files_are_consistent() -> None:
    for f in default_pair_files():
        handwritten = not f.name.endswith(".template.jsonl")
        varied = f.name.endswith(".varied.jsonl")
        level0 = f.name.removesuffix(".template.jsonl").removesuffix(".varied.jsonl").removesuffix(".jsonl")
        assert level0 in LEVEL0S, f.name
        for p in load_pairs([Path(str(f))]):
            assert re.fullmatch(rf"{level0}-s\d{{3}}" if varied else rf"{level0}-\d{{4}}", p.id), p.id
            assert p.level0 == level0, p.id
            assert (p.source == "handwritten") == handwritten, p.id


# ------------------------------------------------------------------------------------------ pair quality


def test_concept_differs_from_deconcept(pairs: list[ConceptPair]) -> None:
    for p in pairs:
        assert p.concept.strip() != p.deconcept.strip(), p.id
        assert p.concept.strip() and p.deconcept.strip(), p.id


def test_twins_are_minimal_edits(pairs: list[ConceptPair]) -> None:
    """Word-level (en/it/vi) or char-level (zh/hi) similarity >= 0.5 for >= 90% of pairs, per language."""
    by_lang: dict[str, list[float]] = {}
    for p in pairs:
        ratio = difflib.SequenceMatcher(
            None, _tokens(p.concept, p.lang), _tokens(p.deconcept, p.lang), autojunk=False
        ).ratio()
        by_lang.setdefault(p.lang, []).append(ratio)
    for lang, ratios in by_lang.items():
        share = sum(r >= 0.5 for r in ratios) / len(ratios)
        assert share >= 0.9, f"{lang}: only {share:.0%} of twins are minimal edits"


def test_twin_lengths_are_comparable(pairs: list[ConceptPair]) -> None:
    for p in pairs:
        ratio = len(p.concept) / len(p.deconcept)
        assert 0.5 <= ratio <= 2.0, f"{p.id}: length ratio {ratio:.2f}"


def test_no_systematic_style_gap(pairs: list[ConceptPair]) -> None:
    """Concept queries must not differ from their twins in length, closing punctuation or question form."""
    mean_c = statistics.mean(len(p.concept) for p in pairs)
    mean_d = statistics.mean(len(p.deconcept) for p in pairs)
    assert abs(mean_c - mean_d) / mean_d < 0.03
    same_end = sum(p.concept[-1] == p.deconcept[-1] for p in pairs) / len(pairs)
    assert same_end >= 0.95
    same_question = sum(("?" in p.concept) == ("?" in p.deconcept) for p in pairs) / len(pairs)
    assert same_question >= 0.97


def test_handwritten_formats_and_lengths_vary(pairs: list[ConceptPair]) -> None:
    hand = [p for p in pairs if p.source == "handwritten" and p.lang == "en"]
    words = [len(p.concept.split()) for p in hand]
    assert min(words) <= 6 and max(words) >= 45
    prefixes = Counter(p.concept.split(":")[0] for p in hand if ":" in p.concept[:30])
    assert len(prefixes) >= 15  # forum posts, news, tags, stories, role-play, reviews, ...


def test_pornography_never_mentions_minors(pairs: list[ConceptPair]) -> None:
    minors = re.compile(
        r"\b(child|children|kid|kids|minor|minors|teen|teens|teenage|underage|girl|girls|boy|boys|school"
        r"|schoolgirl|young|youth|baby|loli)\b"
        r"|少女|儿童|未成年|学生|बच्च|लड़की|bambin|minorenn|ragazz|trẻ em|học sinh",
        re.IGNORECASE,
    )
    for p in pairs:
        if p.level0 == "pornography":
            assert not minors.search(p.concept) and not minors.search(p.deconcept), p.id


# ------------------------------------------------------------------------------------------ template generator


def test_template_generator_is_deterministic(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert make_template_pairs.main(["--out-dir", str(first)]) == 0
    assert make_template_pairs.main(["--out-dir", str(second)]) == 0
    names = sorted(p.name for p in first.iterdir())
    assert names == sorted(p.name for p in second.iterdir())
    assert len(names) == len(LEVEL0S) and all(n.endswith(".template.jsonl") for n in names)
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # The shipped template files are exactly what the generator writes.
    shipped = {f.name: f.read_bytes() for f in default_pair_files() if f.name.endswith(".template.jsonl")}
    assert shipped == {name: (first / name).read_bytes() for name in names}
    assert make_template_pairs.main(["--out-dir", str(first), "--check"]) == 0


def test_template_generator_seed_changes_carriers_only(tmp_path: Path) -> None:
    a = make_template_pairs.generate(seed=1)
    b = make_template_pairs.generate(seed=2)
    assert [len(v) for v in a.values()] == [len(v) for v in b.values()]
    assert any(x.source != y.source for k in a for x, y in zip(a[k], b[k], strict=True))
    make_template_pairs.write(tmp_path, seed=1)
    assert make_template_pairs.stale_files(tmp_path, seed=1) == []
    assert len(make_template_pairs.stale_files(tmp_path, seed=2)) > 0


def test_template_pairs_differ_only_in_the_slot(pairs: list[ConceptPair]) -> None:
    for p in pairs:
        if p.source.startswith("template:"):
            carrier = make_template_pairs.CARRIERS[p.source.split(":", 1)[1]]
            head, tail = carrier.split("{x}")
            for text in (p.concept, p.deconcept):
                assert text.startswith(head) and text.endswith(tail), p.id


# ------------------------------------------------------------------------------------------ loader behaviour


def test_filters(pairs: list[ConceptPair]) -> None:
    zh = load_pairs(langs=["zh"])
    assert zh and all(p.lang == "zh" for p in zh)
    sub = load_pairs(domains=["drugs", "privacy"], langs=["en", "it"])
    assert {p.level0 for p in sub} == {"drugs", "privacy"} and {p.lang for p in sub} == {"en", "it"}
    assert len(sub) < len(pairs)


def test_user_file_and_directory(tmp_path: Path) -> None:
    f = _write(tmp_path / "mine.jsonl", _row(), "", _row(id="violence-0002", lang="it",
                                                       concept="Sei un idiota.", deconcept="Sei un amico."))
    loaded = load_pairs([f])
    assert [p.id for p in loaded] == ["violence-0001", "violence-0002"]
    # Files written by `safesail pairs generate` carry source "llm:<model>" and load too.
    g = _write(tmp_path / "gen.jsonl", _row(id="q1", source="llm:Qwen/Qwen2.5-7B-Instruct"))
    assert load_pairs([g])[0].source == "llm:Qwen/Qwen2.5-7B-Instruct"
    assert [p.id for p in load_pairs([tmp_path])] == ["q1", "violence-0001", "violence-0002"]


def test_bad_json_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "bad.jsonl", _row(), '{"id": "violence-0002", "level0": ')
    with pytest.raises(CorpusError, match=r"bad\.jsonl:2: invalid JSON") as exc:
        load_pairs([f])
    assert exc.value.line == 2 and exc.value.path == str(f)


def test_non_object_line(tmp_path: Path) -> None:
    f = _write(tmp_path / "list.jsonl", "[1, 2]")
    with pytest.raises(CorpusError, match=r"list\.jsonl:1: expected a JSON object"):
        load_pairs([f])


def test_unknown_level1(tmp_path: Path) -> None:
    f = _write(tmp_path / "unk.jsonl", _row(), "", _row(id="violence-0003", level1="arson"))
    with pytest.raises(CorpusError, match=r"unk\.jsonl:3: unknown level1 'arson'.*valid choices: .*insult"):
        load_pairs([f])


def test_unknown_level0(tmp_path: Path) -> None:
    f = _write(tmp_path / "unk0.jsonl", _row(level0="gambling"))
    with pytest.raises(CorpusError, match=r"unk0\.jsonl:1: unknown level0 'gambling'.*valid choices: .*drugs"):
        load_pairs([f])


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"deconcept": "You are a useless idiot."}, "identical"),
        ({"lang": "fr"}, r"field 'lang': unknown lang 'fr'; valid choices: en, zh, hi, it, vi"),
        ({"concept": "   "}, r"field 'concept': text must not be empty"),
        ({"source": "scraped"}, r"field 'source'"),
        ({"extra": 1}, r"unknown field 'extra'"),
    ],
)
def test_invalid_fields(tmp_path: Path, overrides: dict, expected: str) -> None:
    f = _write(tmp_path / "x.jsonl", _row(**overrides))
    with pytest.raises(CorpusError, match=rf"x\.jsonl:1: .*{expected}"):
        load_pairs([f])


def test_missing_field(tmp_path: Path) -> None:
    row = _row()
    del row["deconcept"]
    f = _write(tmp_path / "miss.jsonl", row)
    with pytest.raises(CorpusError, match=r"miss\.jsonl:1: missing field 'deconcept'"):
        load_pairs([f])


def test_duplicate_ids_name_both_places(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.jsonl", _row())
    b = _write(tmp_path / "b.jsonl", _row(id="violence-0009"), _row(concept="Shut it, moron."))
    with pytest.raises(CorpusError, match=r"duplicate id 'violence-0001': .*a\.jsonl:1 and .*b\.jsonl:2"):
        load_pairs([a, b])


def test_empty_filters_say_which_filter(tmp_path: Path) -> None:
    f = _write(tmp_path / "v.jsonl", _row())
    with pytest.raises(CorpusError, match=r"domain filter \['drugs'\] left no pairs .*v\.jsonl"):
        load_pairs([f], domains=["drugs"])
    with pytest.raises(CorpusError, match=r"lang filter \['zh'\] left no pairs"):
        load_pairs([f], langs=["zh"])
    with pytest.raises(CorpusError, match=r"unknown domain 'gambling' in filter; valid choices"):
        load_pairs([f], domains=["gambling"])
    with pytest.raises(CorpusError, match=r"unknown lang 'fr' in filter"):
        load_pairs([f], langs=["fr"])
    empty = _write(tmp_path / "empty.jsonl", "")
    with pytest.raises(CorpusError, match=r"no concept pairs found in .*empty\.jsonl"):
        load_pairs([empty])


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match=r"nope\.jsonl: no such file"):
        load_pairs([tmp_path / "nope.jsonl"])


def test_corpus_error_is_value_error() -> None:
    assert issubclass(CorpusError, ValueError)


def test_pairs_summary_counts() -> None:
    ps = [
        ConceptPair.model_validate(_row()),
        ConceptPair.model_validate(_row(id="violence-0002", level1="threats", lang="vi", source="template:x")),
    ]
    s = pairs_summary(ps)
    assert s["total"] == 2
    assert s["level0"] == {"violence": 2}
    assert s["level1"] == {"violence": {"insult": 1, "threats": 1}}
    assert s["lang"] == {"en": 1, "vi": 1}
    assert s["source"] == {"handwritten": 1, "template:x": 1}
    assert s["source_kind"] == {"handwritten": 1, "template": 1}
