"""Tests for the style-generalisation probe set and its scorer (safesail_training.style_check)."""

from __future__ import annotations

import fnmatch
import itertools
import json
import re
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

from safesail_training.corpus.errors import CorpusError
from safesail_training.corpus.pairs import load_taxonomy
from safesail_training.style_check import (
    BENIGN,
    STYLES,
    ProbeText,
    StyleReport,
    auroc,
    load_style_probe,
    style_check,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "training" / "corpus" / "data"
PROBE_FILE = DATA / "style_probe.jsonl"
DOMAINS = [
    "pornography", "politics", "violence", "terror", "hate",
    "self_harm", "weapons", "drugs", "cybercrime", "privacy",
]


@pytest.fixture(scope="module")
def probe() -> list[ProbeText]:
    return load_style_probe()


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def _ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    w = _words(text)
    return {tuple(w[i : i + n]) for i in range(len(w) - n + 1)}


def _norm(text: str) -> str:
    return " ".join(text.casefold().split())


def _pair_texts() -> list[str]:
    out = []
    for f in sorted((DATA / "pairs").glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                out += [row["concept"], row["deconcept"]]
    return out


# --------------------------------------------------------------------------------------------------- auroc


def _brute_auroc(pos, neg) -> float:
    total = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return total / (len(pos) * len(neg))


def test_auroc_hand_computed() -> None:
    # pairs: (3,2) win, (3,0) win, (1,2) loss, (1,0) win -> 3/4
    assert auroc([3, 1], [2, 0]) == pytest.approx(0.75)
    # one positive against three negatives: beats two of them
    assert auroc([5], [1, 4, 9]) == pytest.approx(2 / 3)
    assert auroc([1, 2, 3], [4, 5]) == pytest.approx(0.0)
    assert auroc([4, 5], [1, 2, 3]) == pytest.approx(1.0)


def test_auroc_ties_count_half() -> None:
    # (1,1) 1/2, (1,1) 1/2, (2,1) 1, (2,1) 1 -> 3/4
    assert auroc([1, 2], [1, 1]) == pytest.approx(0.75)
    assert auroc([7, 7, 7], [7, 7]) == pytest.approx(0.5)
    # (2,2) 1/2, (2,3) 0, (3,2) 1, (3,3) 1/2 -> 2/4
    assert auroc([2, 3], [2, 3]) == pytest.approx(0.5)


def test_auroc_matches_brute_force_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        pos = rng.integers(0, 5, size=rng.integers(1, 12)).tolist()
        neg = rng.integers(0, 5, size=rng.integers(1, 12)).tolist()
        assert auroc(pos, neg) == pytest.approx(_brute_auroc(pos, neg))


def test_auroc_empty_and_nan() -> None:
    assert auroc([], [1.0]) is None
    assert auroc([1.0], []) is None
    with pytest.raises(ValueError, match="NaN"):
        auroc([float("nan")], [1.0])


# --------------------------------------------------------------------------------------------------- style_check


def _one_feature_per_domain(texts: list[ProbeText], score_fn) -> tuple[np.ndarray, list[list[str]]]:
    fm = np.array([[score_fn(t, d) for d in DOMAINS] for t in texts], dtype=np.float64)
    return fm, [[d] for d in DOMAINS]


def test_perfect_detector_scores_one(probe) -> None:
    fm, doms = _one_feature_per_domain(probe, lambda t, d: float(t.domain == d))
    rep = style_check(probe, fm, doms)
    assert set(rep.per_domain) == set(DOMAINS)
    for d in DOMAINS:
        assert rep.n_features[d] == 1
        for s in STYLES:
            assert rep.per_domain[d][s] == pytest.approx(1.0)
            assert rep.per_domain_vs_benign[d][s] == pytest.approx(1.0)
    assert all(v == pytest.approx(1.0) for v in rep.per_style_mean.values())
    assert rep.cells_below() == []
    assert "0 of 40 domain/style cells are below 0.6" in rep.markdown()


def test_inverted_detector_scores_zero(probe) -> None:
    fm, doms = _one_feature_per_domain(probe, lambda t, d: float(t.domain != d))
    rep = style_check(probe, fm, doms)
    assert all(v == pytest.approx(0.0) for row in rep.per_domain.values() for v in row.values())
    assert len(rep.cells_below()) == 40
    assert "40 of 40 domain/style cells are below 0.6" in rep.markdown()


def test_random_detector_is_near_chance(probe) -> None:
    rng = np.random.default_rng(11)
    fm = rng.normal(size=(len(probe), 30))
    doms = [[DOMAINS[j % 10]] for j in range(30)]
    rep = style_check(probe, fm, doms)
    cells = [v for row in rep.per_domain.values() for v in row.values()]
    assert len(cells) == 40 and all(v is not None for v in cells)
    assert abs(float(np.mean(cells)) - 0.5) < 0.08
    assert all(abs(v - 0.5) < 0.15 for v in rep.per_style_mean.values())


def test_style_detector_is_exposed(probe) -> None:
    """A 'drugs' feature that fires on encyclopedic prose detects the style: perfect in-style, inverted elsewhere."""

    def act(t: ProbeText) -> float:
        if t.style == "encyclopedic":
            return 1.0 if t.domain == "drugs" else 0.0
        return 1.0 if t.domain == BENIGN else 0.0  # in other styles it fires on the benign texts

    fm = np.array([[act(t)] for t in probe])
    rep = style_check(probe, fm, [["drugs"]])
    assert rep.per_domain["drugs"]["encyclopedic"] == pytest.approx(1.0)
    for s in STYLES:
        if s != "encyclopedic":
            assert rep.per_domain["drugs"][s] < 0.5
            assert rep.per_domain_vs_benign["drugs"][s] == pytest.approx(0.0)
    assert set(rep.cells_below()) == {("drugs", s) for s in STYLES if s != "encyclopedic"}
    assert "3 of 4 domain/style cells are below 0.6" in rep.markdown()


def test_domain_without_features_is_none(probe) -> None:
    fm = np.array([[float(t.domain == "hate"), float(t.domain in ("terror", "weapons"))] for t in probe])
    rep = style_check(probe, fm, [["hate"], ["terror", "weapons"]])
    assert rep.n_features["privacy"] == 0
    assert all(v is None for v in rep.per_domain["privacy"].values())
    assert all(v is None for v in rep.per_domain_vs_benign["privacy"].values())
    assert rep.n_features == {d: (1 if d in ("hate", "terror", "weapons") else 0) for d in DOMAINS}
    # a feature shared by terror and weapons: perfect vs benign, but each domain's texts tie with the other's
    assert rep.per_domain_vs_benign["terror"]["encyclopedic"] == pytest.approx(1.0)
    assert 0.9 < rep.per_domain["terror"]["encyclopedic"] < 1.0
    # the style mean ignores domains without features
    expected = np.mean([rep.per_domain[d]["dialogue_transcript"] for d in ("hate", "terror", "weapons")])
    assert rep.per_style_mean["dialogue_transcript"] == pytest.approx(expected)
    md = rep.markdown()
    assert "| privacy | 0 | - | - | - | - | - |" in md
    assert "0.5 = chance" in md


def test_no_features_at_all(probe) -> None:
    rep = style_check(probe, np.zeros((len(probe), 0)), [])
    assert all(v is None for v in rep.per_style_mean.values())
    assert "0 of 0 domain/style cells" in rep.markdown()


def test_max_over_features_of_a_domain(probe) -> None:
    # two half-detectors for 'cybercrime': each fires on a different half of the domain's texts
    cyber = [i for i, t in enumerate(probe) if t.domain == "cybercrime"]
    fm = np.zeros((len(probe), 2))
    fm[cyber[::2], 0] = 1.0
    fm[cyber[1::2], 1] = 1.0
    both = style_check(probe, fm, [["cybercrime"], ["cybercrime"]])
    only_first = style_check(probe, fm[:, :1], [["cybercrime"]])
    assert all(v == pytest.approx(1.0) for v in both.per_domain["cybercrime"].values())
    assert min(only_first.per_domain["cybercrime"].values()) < 0.9


def test_torch_input_and_to_dict(probe) -> None:
    torch = pytest.importorskip("torch")
    fm, doms = _one_feature_per_domain(probe, lambda t, d: float(t.domain == d) + 0.1 * len(t.text) / 400)
    rep_np = style_check(probe, fm, doms)
    rep_t = style_check(probe, torch.tensor(fm, dtype=torch.float32), doms)
    for d in DOMAINS:
        assert rep_t.per_domain[d] == pytest.approx(rep_np.per_domain[d])
        assert rep_t.per_domain_vs_benign[d] == pytest.approx(rep_np.per_domain_vs_benign[d])
    d = json.loads(json.dumps(rep_t.to_dict()))
    assert set(d) >= {"per_domain", "per_style_mean", "n_features", "per_domain_vs_benign"}
    assert d["per_domain"]["hate"]["policy_or_legal"] == pytest.approx(rep_t.per_domain["hate"]["policy_or_legal"])
    assert isinstance(StyleReport(**{k: d[k] for k in ("per_domain", "per_style_mean", "n_features")}).markdown(), str)


def test_style_check_input_validation(probe) -> None:
    n = len(probe)
    with pytest.raises(ValueError, match="rows"):
        style_check(probe, np.zeros((n - 1, 1)), [["hate"]])
    with pytest.raises(ValueError, match="columns"):
        style_check(probe, np.zeros((n, 2)), [["hate"]])
    with pytest.raises(ValueError, match="2-D"):
        style_check(probe, np.zeros(n), [["hate"]])
    bad = np.zeros((n, 1))
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        style_check(probe, bad, [["hate"]])
    with pytest.raises(ValueError, match="list of domain names"):
        style_check(probe, np.zeros((n, 1)), ["hate"])  # type: ignore[list-item]


# --------------------------------------------------------------------------------------------------- loader


def _row(**overrides: object) -> dict:
    row = {"id": "encyclopedic-hate-01", "style": "encyclopedic", "domain": "hate",
           "level1": "xenophobia", "text": "Some text about the topic."}
    row.update(overrides)
    return row


def _write(tmp_path: Path, rows: list) -> Path:
    p = tmp_path / "probe.jsonl"
    p.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return p


def test_loader_reads_valid_file(tmp_path: Path) -> None:
    benign = _row(id="encyclopedic-benign-01", domain="benign", level1=None)
    texts = load_style_probe(_write(tmp_path, [_row(), "", benign]))
    assert texts == [ProbeText(**_row()), ProbeText(**benign)]


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (_row(text=""), "'text' must be a non-empty string"),
        (_row(style=7), "'style' must be a non-empty string"),
        (_row(style="Third Person"), "snake_case"),
        (_row(domain="gambling"), "unknown domain 'gambling'"),
        (_row(level1="firearms"), "not a level1 of 'hate'"),
        (_row(level1=None), "not a level1 of 'hate'"),
        (_row(domain="benign", level1="xenophobia"), "level1 null"),
        ({k: v for k, v in _row().items() if k != "level1"}, "missing field"),
        (_row(lang="en"), "unknown field"),
        (_row(id=" x "), "whitespace"),
        (_row(id="encyclopedic-benign-01", domain="benign", level1=None), "duplicate id"),
    ],
)
def test_loader_errors_name_file_and_line(tmp_path: Path, bad: object, message: str) -> None:
    first = _row(id="encyclopedic-benign-01", domain="benign", level1=None)
    path = _write(tmp_path, [first, "", bad])
    with pytest.raises(ValueError, match=re.escape(message)) as exc:
        load_style_probe(path)
    assert f"{path}:3:" in str(exc.value)
    assert isinstance(exc.value, CorpusError) and exc.value.line == 3


def test_loader_missing_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        load_style_probe(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match="no probe texts"):
        load_style_probe(_write(tmp_path, [""]))


# --------------------------------------------------------------------------------------------------- shipped data


def test_default_path_is_the_shipped_file(probe) -> None:
    assert probe == load_style_probe(PROBE_FILE)


def test_shipped_counts_and_ids(probe) -> None:
    assert len(probe) == 300
    assert len({t.id for t in probe}) == 300
    assert Counter(t.domain == BENIGN for t in probe) == {False: 200, True: 100}
    cells = Counter((t.style, t.domain) for t in probe)
    assert set(cells) == {(s, d) for s in STYLES for d in [*DOMAINS, BENIGN]}
    for (s, d), n in cells.items():
        assert n == (25 if d == BENIGN else 5), (s, d)
    for t in probe:
        assert re.fullmatch(rf"{t.style}-{t.domain}-\d\d", t.id), t.id


def test_shipped_level1_spread(probe) -> None:
    tax = load_taxonomy()
    assert set(tax.level0s) == set(DOMAINS)
    for s in STYLES:
        for d in DOMAINS:
            l1 = {t.level1 for t in probe if t.style == s and t.domain == d}
            assert l1 <= set(tax.level1s(d))
            # 5 texts cover every level-1 concept (domains with 4 concepts repeat one)
            assert len(l1) == min(5, len(tax.level1s(d))), (s, d, l1)
    assert all(t.level1 is None for t in probe if t.domain == BENIGN)


def test_shipped_lengths_match_between_benign_and_domain(probe) -> None:
    for t in probe:
        assert 20 <= len(t.text.split()) <= 60, t.id
    for s in STYLES:
        dom = np.mean([len(t.text.split()) for t in probe if t.style == s and t.domain != BENIGN])
        ben = np.mean([len(t.text.split()) for t in probe if t.style == s and t.domain == BENIGN])
        assert 0.8 < ben / dom < 1.25, (s, dom, ben)


def test_shipped_style_markers(probe) -> None:
    for t in probe:
        is_dialogue = t.text.startswith("A: ") and " B: " in t.text
        assert is_dialogue == (t.style == "dialogue_transcript"), t.id
        assert t.text.isascii() or t.id.startswith("policy_or_legal"), t.id  # English only (the § sign allowed)
    narrative = [t for t in probe if t.style == "third_person_narrative"]
    # past tense third-person prose: no first/second-person pronouns outside quotes, a past-tense verb present
    for t in narrative:
        assert not re.search(r"\b(I|me|my|you|your)\b", t.text), t.id
        past = r"\b\w+ed\b|\b(was|were|had|did|told|saw|kept|took|left|ran|fell|met|found|knew|won|spent|made|went)\b"
        assert re.search(past, t.text), t.id


def test_shipped_texts_are_not_selection_pairs(probe) -> None:
    pair_texts = _pair_texts()
    assert len(pair_texts) > 1000
    normed = {_norm(p) for p in pair_texts}
    assert not [t.id for t in probe if _norm(t.text) in normed]
    # stronger: no probe text shares a 6-word sequence with any pair text (no copied carrier or sentence)
    pair_grams = set().union(*(_ngrams(p, 6) for p in pair_texts))
    shared = {t.id: sorted(_ngrams(t.text, 6) & pair_grams) for t in probe}
    assert not {k: v for k, v in shared.items() if v}
    # and none of the pairs' template-carrier prefixes
    for t in probe:
        assert not re.match(r"(Story prompt|Story|Tags|Headline|Forum post|Forum|Tweet|Subject|Comment)\s*:", t.text)


def test_shipped_has_no_shared_template_phrase(probe) -> None:
    """No 5-word sequence is used by three or more domains (benign counts as one): no fixed carrier phrase."""
    labels: dict[tuple[str, ...], set[str]] = defaultdict(set)
    for t in probe:
        for g in _ngrams(t.text, 5):
            labels[g].add(t.domain)
    assert not {" ".join(g): sorted(v) for g, v in labels.items() if len(v) >= 3}


def test_shipped_texts_unique(probe) -> None:
    assert len({_norm(t.text) for t in probe}) == len(probe)


def test_shipped_adult_content_has_no_minor_words(probe) -> None:
    minor = re.compile(
        r"\b(child\w*|kids?|minors?|teen\w*|underage|girls?|boys?|schools?\w*|students?|pupils?|young|youth|"
        r"juvenile|adolescen\w*|daughters?|sons?)\b",
        re.IGNORECASE,
    )
    hits = [t.id for t in probe if t.domain == "pornography" and minor.search(t.text)]
    assert not hits


def test_pyproject_ships_style_probe() -> None:
    """`data/style_probe.jsonl` must be package data of safesail_training.corpus.data, or the wheel lacks it."""
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = cfg["tool"]["setuptools"]["package-data"].get("safesail_training.corpus.data", [])
    assert any(fnmatch.fnmatch("style_probe.jsonl", p) for p in patterns), (
        f"add '*.jsonl' to [tool.setuptools.package-data] 'safesail_training.corpus.data' (now {patterns})"
    )
