"""Build benchmarks/data/guard_eval.jsonl from the handwritten sources in benchmarks/data/guard_eval_src/.

The guard evaluation set: unsafe prompts (label 1) and safe prompts (label 0, split into "edgy" prompts that share
vocabulary with unsafe ones and ordinary "benign" prompts). See DATA_CARD.md in this folder.

What the script does, in order:
  1. parses unsafe.txt, edgy.txt and benign.txt (format described at the top of each file);
  2. validates the schema (enums, language tags, script of non-English text, length 5-80 words) and the
     required counts (per domain x style for unsafe, homonyms and multilingual minimums, ...);
  3. rejects duplicates and near-duplicates inside the set;
  4. measures lowercase word-5-gram overlap with the concept pairs in training/corpus/data/pairs/*.jsonl and
     fails if any prompt comes close to a pair text (the two sets must stay apart);
  5. assigns ids (source order) and a deterministic train/test split: within every (kind, style) stratum the
     prompts are ordered by sha256(text) and the first round(40%) go to "train";
  6. writes guard_eval.jsonl (sorted keys order fixed, UTF-8, one object per line) and prints the count tables
     that DATA_CARD.md quotes.

Running it twice gives byte-identical output. Usage (from the repository root):
    python benchmarks/data/make_guard_eval.py            # validate, write, print tables
    python benchmarks/data/make_guard_eval.py --check    # validate only; fail if the jsonl or the card is stale
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
SRC = HERE / "guard_eval_src"
OUT = HERE / "guard_eval.jsonl"
CARD = HERE / "DATA_CARD.md"
PAIRS = HERE.parents[1] / "training" / "corpus" / "data" / "pairs"

DOMAINS = ("cybercrime", "drugs", "hate", "politics", "pornography", "privacy", "self_harm", "terror", "violence", "weapons")
STYLES = ("direct", "instruction", "roleplay", "indirect", "multilingual")
KINDS = ("unsafe", "edgy", "benign")
EDGY_TYPES = ("medical", "legal", "historical", "fictional", "homonym", "educational", "news")
LANGS = ("en", "zh", "es", "fr", "de", "it", "hi", "vi", "ru", "pt")
LABEL = {"unsafe": 1, "edgy": 0, "benign": 0}
SOURCES = (("unsafe", "unsafe.txt"), ("edgy", "edgy.txt"), ("benign", "benign.txt"))

TRAIN_FRACTION = 0.4
MIN_WORDS, MAX_WORDS = 5, 80
NGRAM = 5
PAIR_OVERLAP_MAX = 0.5  # fail if a prompt shares >= this fraction of 5-grams with one pair text
SELF_OVERLAP_MAX = 0.8  # fail if two prompts of the set share >= this fraction of 5-grams

# Minimum counts the set must meet.
MIN_UNSAFE_PER_DOMAIN_STYLE = 6
MIN_EDGY, MIN_EDGY_HOMONYM, MIN_EDGY_PER_DOMAIN, MIN_EDGY_PER_STYLE = 200, 40, 10, 20
MIN_BENIGN, MIN_BENIGN_MULTILINGUAL, MIN_BENIGN_PER_STYLE = 200, 30, 20

# A character from the expected script must appear in non-Latin-script languages.
SCRIPT = {
    "zh": re.compile(r"[\u4e00-\u9fff]"),
    "hi": re.compile(r"[\u0900-\u097f]"),
    "ru": re.compile(r"[\u0400-\u04ff]"),
}
# Words that must never appear in the pornography domain (any kind): nothing sexual may involve minors.
MINOR_WORDS = re.compile(
    r"\b(teen\w*|minor|minors|underage|child\w*|kid|kids|school\w*|pupil|boy|boys|girl|girls|loli\w*|"
    r"niñ[oa]s?|menor(es)?|adolescente?s?|enfants?|mineur[e]?s?|kinder?|jugendlich\w*|minorenn[ei]|bambin[oi]|"
    r"ragazzin[oi]|criança|ребен\w*|подрост\w*|несовершеннолет\w*)\b|儿童|未成年|少女|बच्च|नाबालिग|trẻ em|vị thành niên",
    re.IGNORECASE,
)
CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
FIELDS = ("id", "text", "label", "kind", "domain", "style", "lang", "edgy_type", "split")


class DataError(Exception):
    pass


# --------------------------------------------------------------------------------------------------- parsing
def parse_source(kind: str, path: Path) -> list[dict]:
    """Records of one source file, in file order."""
    records: list[dict] = []
    section: dict | None = None
    for lineno, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        where = f"{path.name}:{lineno}"
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = dict(tok.split("=", 1) for tok in line[1:-1].split())
            if set(section) != ({"style"} if kind == "benign" else {"domain", "style"}):
                raise DataError(f"{where}: bad section header {line!r}")
            continue
        if section is None:
            raise DataError(f"{where}: prompt before any section header")
        style = section["style"]
        tags: list[str] = []
        m = re.match(r"^([a-z_]+(?:/[a-z]{2})?) \| (.+)$", line)
        if m:
            tags, line = m.group(1).split("/"), m.group(2).strip()
        edgy_type, lang = None, "en"
        if kind == "edgy":
            if not tags:
                raise DataError(f"{where}: edgy prompt without '<edgy_type> | '")
            edgy_type = tags.pop(0)
        if style == "multilingual":
            if len(tags) != 1:
                raise DataError(f"{where}: multilingual prompt needs a language tag")
            lang = tags.pop(0)
        if tags:
            raise DataError(f"{where}: unexpected tags {tags}")
        records.append(
            {
                "text": line,
                "label": LABEL[kind],
                "kind": kind,
                "domain": section.get("domain"),
                "style": style,
                "lang": lang,
                "edgy_type": edgy_type,
                "_where": where,
            }
        )
    return records


# --------------------------------------------------------------------------------------------------- text tools
def tokens(text: str) -> list[str]:
    """Lowercase words; punctuation and symbols become spaces; CJK characters count as one word each."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(" " if unicodedata.category(ch)[0] in "PS" else ch for ch in text)
    out: list[str] = []
    for tok in text.split():
        if CJK.search(tok):
            out.extend(ch for ch in tok if ch.strip())
        else:
            out.append(tok)
    return out


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    """Word n-grams; a text shorter than n words is one n-gram (itself)."""
    toks = tokens(text)
    if len(toks) < n:
        return {tuple(toks)} if toks else set()
    return {tuple(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def overlap(a: set, b: set) -> float:
    """Overlap coefficient |a & b| / min(|a|, |b|): 1.0 when the shorter text is contained in the longer one."""
    return len(a & b) / min(len(a), len(b)) if a and b else 0.0


# --------------------------------------------------------------------------------------------------- checks
def validate(records: list[dict]) -> None:
    errors: list[str] = []
    for r in records:
        w = r["_where"]
        if r["style"] not in STYLES:
            errors.append(f"{w}: unknown style {r['style']!r}")
        if r["kind"] == "benign":
            if r["domain"] is not None:
                errors.append(f"{w}: benign prompt with a domain")
        elif r["domain"] not in DOMAINS:
            errors.append(f"{w}: unknown domain {r['domain']!r}")
        if r["kind"] == "edgy" and r["edgy_type"] not in EDGY_TYPES:
            errors.append(f"{w}: unknown edgy_type {r['edgy_type']!r}")
        if r["lang"] not in LANGS:
            errors.append(f"{w}: unknown lang {r['lang']!r}")
        if (r["style"] == "multilingual") != (r["lang"] != "en"):
            errors.append(f"{w}: lang {r['lang']!r} does not fit style {r['style']!r}")
        if r["lang"] in SCRIPT and not SCRIPT[r["lang"]].search(r["text"]):
            errors.append(f"{w}: text is not in the script of {r['lang']!r}")
        if r["lang"] not in SCRIPT and r["lang"] != "zh" and CJK.search(r["text"]):
            errors.append(f"{w}: CJK characters in a {r['lang']!r} prompt")
        n = len(tokens(r["text"]))
        hi = MAX_WORDS * 2 if r["lang"] == "zh" else MAX_WORDS  # zh counts characters
        if not MIN_WORDS <= n <= hi:
            errors.append(f"{w}: {n} words, outside {MIN_WORDS}-{hi}")
        if r["domain"] == "pornography" and MINOR_WORDS.search(r["text"]):
            errors.append(f"{w}: minor-related word in the pornography domain: {MINOR_WORDS.search(r['text']).group(0)!r}")
        if re.search(r"\s{2,}|^\s|\s$", r["text"]):
            errors.append(f"{w}: stray whitespace")

    # Counts.
    unsafe = Counter((r["domain"], r["style"]) for r in records if r["kind"] == "unsafe")
    for d in DOMAINS:
        for s in STYLES:
            if unsafe[d, s] < MIN_UNSAFE_PER_DOMAIN_STYLE:
                errors.append(f"unsafe {d}/{s}: {unsafe[d, s]} < {MIN_UNSAFE_PER_DOMAIN_STYLE}")
    edgy = [r for r in records if r["kind"] == "edgy"]
    if len(edgy) < MIN_EDGY:
        errors.append(f"edgy: {len(edgy)} < {MIN_EDGY}")
    if sum(r["edgy_type"] == "homonym" for r in edgy) < MIN_EDGY_HOMONYM:
        errors.append(f"edgy homonym < {MIN_EDGY_HOMONYM}")
    for key, values, lo in (("domain", DOMAINS, MIN_EDGY_PER_DOMAIN), ("style", STYLES, MIN_EDGY_PER_STYLE)):
        c = Counter(r[key] for r in edgy)
        errors += [f"edgy {key} {v}: {c[v]} < {lo}" for v in values if c[v] < lo]
    benign = [r for r in records if r["kind"] == "benign"]
    if len(benign) < MIN_BENIGN:
        errors.append(f"benign: {len(benign)} < {MIN_BENIGN}")
    c = Counter(r["style"] for r in benign)
    if c["multilingual"] < MIN_BENIGN_MULTILINGUAL:
        errors.append(f"benign multilingual: {c['multilingual']} < {MIN_BENIGN_MULTILINGUAL}")
    errors += [f"benign style {s}: {c[s]} < {MIN_BENIGN_PER_STYLE}" for s in STYLES if c[s] < MIN_BENIGN_PER_STYLE]

    # Exact duplicates (after lowercasing and dropping punctuation).
    seen: dict[str, str] = {}
    for r in records:
        key = " ".join(tokens(r["text"]))
        if key in seen:
            errors.append(f"{r['_where']}: duplicate of {seen[key]}")
        seen.setdefault(key, r["_where"])
    if errors:
        raise DataError("\n".join(errors))


def self_overlap(records: list[dict]) -> tuple[float, tuple[str, str] | None]:
    """Highest 5-gram overlap between two prompts of the set (and where)."""
    grams = [ngrams(r["text"]) for r in records]
    index: dict[tuple, list[int]] = defaultdict(list)
    for i, g in enumerate(grams):
        for t in g:
            index[t].append(i)
    best, where = 0.0, None
    for i, g in enumerate(grams):
        shared = Counter(j for t in g for j in index[t] if j > i)
        for j, _ in shared.items():
            o = overlap(g, grams[j])
            if o > best:
                best, where = o, (records[i]["_where"], records[j]["_where"])
    return best, where


def load_pair_texts() -> list[tuple[str, str]]:
    """(pair id + side, text) for both halves of every concept pair shipped with the project."""
    texts = []
    for path in sorted(PAIRS.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                p = json.loads(line)
                texts += [(f"{p['id']}:concept", p["concept"]), (f"{p['id']}:deconcept", p["deconcept"])]
    if not texts:
        raise DataError(f"no concept pairs found under {PAIRS}")
    return texts


def pair_overlap(records: list[dict]) -> dict:
    """Max 5-gram overlap of any prompt with any pair text, plus how many prompts share any 5-gram at all."""
    pairs = load_pair_texts()
    pgrams = [ngrams(t) for _, t in pairs]
    index: dict[tuple, list[int]] = defaultdict(list)
    for j, g in enumerate(pgrams):
        for t in g:
            index[t].append(j)
    best = {"max_overlap": 0.0, "max_shared_5grams": 0, "prompts_sharing_any": 0, "worst": None}
    for r in records:
        g = ngrams(r["text"])
        shared = Counter(j for t in g for j in index.get(t, ()))
        if shared:
            best["prompts_sharing_any"] += 1
        for j, n in shared.items():
            best["max_shared_5grams"] = max(best["max_shared_5grams"], n)
            o = overlap(g, pgrams[j])
            if o > best["max_overlap"]:
                best["max_overlap"], best["worst"] = o, (r["_where"], r["text"], pairs[j][0], pairs[j][1])
    best["n_pair_texts"] = len(pairs)
    return best


# --------------------------------------------------------------------------------------------------- split, ids
def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def assign(records: list[dict]) -> list[dict]:
    strata: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        strata[r["kind"], r["style"]].append(i)
    split = {}
    for idx in strata.values():
        idx = sorted(idx, key=lambda i: sha(records[i]["text"]))
        n_train = round(TRAIN_FRACTION * len(idx))
        for rank, i in enumerate(idx):
            split[i] = "train" if rank < n_train else "test"
    out = []
    for i, r in enumerate(records):
        rec = {**r, "id": f"ge-{i + 1:04d}", "split": split[i]}
        out.append({k: rec[k] for k in FIELDS})
    return out


def render(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


# --------------------------------------------------------------------------------------------------- tables
def table(title: str, rows: list[dict], row_key: str, row_values, col_key: str, col_values) -> str:
    c = Counter((r[row_key], r[col_key]) for r in rows)
    head = f"| {title} | " + " | ".join(str(v) for v in col_values) + " | total |"
    lines = [head, "|" + "---|" * (len(col_values) + 2)]
    for rv in row_values:
        cells = [c[rv, cv] for cv in col_values]
        lines.append(f"| {rv} | " + " | ".join(str(x) for x in cells) + f" | {sum(cells)} |")
    totals = [sum(c[rv, cv] for rv in row_values) for cv in col_values]
    lines.append("| **total** | " + " | ".join(str(x) for x in totals) + f" | {sum(totals)} |")
    return "\n".join(lines)


LENGTH_BUCKETS = ("5-9", "10-19", "20-39", "40+")


def length_bucket(text: str) -> str:
    n = len(tokens(text))
    return "5-9" if n < 10 else "10-19" if n < 20 else "20-39" if n < 40 else "40+"


def stats(rows: list[dict]) -> str:
    unsafe = [r for r in rows if r["kind"] == "unsafe"]
    edgy = [r for r in rows if r["kind"] == "edgy"]
    parts = [
        "Kind x style:\n\n" + table("kind", rows, "kind", KINDS, "style", STYLES),
        "Unsafe prompts, domain x style:\n\n" + table("domain", unsafe, "domain", DOMAINS, "style", STYLES),
        "Edgy prompts, domain x edgy_type:\n\n" + table("domain", edgy, "domain", DOMAINS, "edgy_type", EDGY_TYPES),
        "Edgy prompts, style x edgy_type:\n\n" + table("style", edgy, "style", STYLES, "edgy_type", EDGY_TYPES),
        "Language x kind:\n\n" + table("lang", rows, "lang", LANGS, "kind", KINDS),
        "Split x kind:\n\n" + table("split", rows, "split", ("train", "test"), "kind", KINDS),
        "Length in words (CJK characters count as words), x kind:\n\n"
        + table("words", [{**r, "words": length_bucket(r["text"])} for r in rows], "words", LENGTH_BUCKETS, "kind", KINDS),
    ]
    return "\n\n".join(parts) + "\n"


CARD_BEGIN, CARD_END = "<!-- stats:begin (pasted from make_guard_eval.py) -->", "<!-- stats:end -->"


def card_block() -> str | None:
    if not CARD.exists():
        return None
    text = CARD.read_text(encoding="utf-8")
    if CARD_BEGIN not in text or CARD_END not in text:
        return None
    return text.split(CARD_BEGIN, 1)[1].split(CARD_END, 1)[0].strip("\n") + "\n"


# --------------------------------------------------------------------------------------------------- main
def build() -> tuple[list[dict], dict, tuple]:
    records: list[dict] = []
    for kind, name in SOURCES:
        records += parse_source(kind, SRC / name)
    validate(records)
    so = self_overlap(records)
    if so[0] >= SELF_OVERLAP_MAX:
        raise DataError(f"near-duplicate prompts ({so[0]:.2f} 5-gram overlap): {so[1]}")
    po = pair_overlap(records)
    if po["max_overlap"] >= PAIR_OVERLAP_MAX:
        raise DataError(f"prompt too close to a concept pair ({po['max_overlap']:.2f}): {po['worst']}")
    return assign(records), po, so


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="validate only; fail if guard_eval.jsonl or the card is stale")
    args = ap.parse_args()
    try:
        rows, po, so = build()
    except DataError as e:
        print(f"ERROR:\n{e}", file=sys.stderr)
        return 1
    data = render(rows)
    tables = stats(rows)
    if not args.check:
        OUT.write_text(data, encoding="utf-8", newline="\n")
    c = Counter(r["kind"] for r in rows)
    print(f"{len(rows)} prompts: " + ", ".join(f"{k} {c[k]}" for k in KINDS))
    print(
        f"pair overlap (word {NGRAM}-grams, |a&b|/min(|a|,|b|)) vs {po['n_pair_texts']} pair texts: "
        f"max {po['max_overlap']:.3f}, max shared {NGRAM}-grams {po['max_shared_5grams']}, "
        f"prompts sharing any {NGRAM}-gram {po['prompts_sharing_any']}"
    )
    if po["worst"]:
        print(f"  closest: {po['worst'][0]} {po['worst'][1]!r}\n       vs {po['worst'][2]} {po['worst'][3]!r}")
    print(f"max {NGRAM}-gram overlap between two prompts of the set: {so[0]:.3f} {so[1] or ''}")
    print()
    print(tables)
    block = card_block()
    card_ok = block == tables
    if args.check:
        stale = []
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != data:
            stale.append(str(OUT.name))
        if not card_ok:
            stale.append(f"{CARD.name} (stats block)")
        if stale:
            print("STALE: " + ", ".join(stale) + " - rerun without --check and repaste the tables", file=sys.stderr)
            return 1
        print("OK: guard_eval.jsonl and DATA_CARD.md are up to date")
        return 0
    print(f"wrote {OUT} ({len(rows)} lines, sha256 {sha(data)[:16]})")
    if not card_ok:
        print(f"note: the stats block in {CARD.name} differs from the tables above; paste them between the markers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
