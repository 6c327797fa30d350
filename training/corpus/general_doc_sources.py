"""The doc sources of the general corpus: permissively licensed text already on the machine, and its licenses.

:func:`doc_sources` lists what the builder reads (CPython's ``pydoc_data.topics`` and stdlib docstrings, the
docstrings and long descriptions of the installed packages in ``DOCSTRING_PACKAGES`` whose metadata declares a
license on the ``PERMISSIVE`` list, and the Debian docs in ``DEBIAN_DOCS`` whose ``copyright`` file does), each
as a :class:`DocSource`; :func:`build_doc_records` turns them into seeded, capped ``doc`` records with the text
functions of :mod:`safesail_training.corpus.general_doc_text`; :func:`write_licenses` writes ``LICENSES.txt``.
:mod:`safesail_training.corpus.make_general` calls all three.
"""

from __future__ import annotations

import ast
import gzip
import hashlib
import importlib.metadata as metadata
import random
import re
import sys
import sysconfig
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from safesail_training.corpus.general_doc_text import (
    MAX_CHUNK,
    Deduper,
    chunk_paragraphs,
    clean_html,
    clean_markdown,
    clean_rst,
    is_prose_chunk,
)

# Licenses we accept for copied text (SPDX ids, plus the spellings packages use in metadata).
PERMISSIVE = {
    "MIT", "EXPAT", "X11", "BSD", "BSD-2-CLAUSE", "BSD-3-CLAUSE", "0BSD", "ISC", "ZLIB",
    "APACHE", "APACHE-2.0", "APACHE 2.0", "APACHE 2.0 LICENSE", "PSF-2.0", "CNRI-PYTHON",
    "CC0-1.0", "BSL-1.0", "LLVM-EXCEPTION",
}



@dataclass
class DocSource:
    """One source of doc text: its id, license and origin, a cap in characters, and a generator of its
    documents (each a list of paragraphs); ``stats`` is filled in by :func:`build_doc_records`."""

    id: str
    license: str
    origin: str
    cap_chars: int
    docs: Callable[[int | None], Iterator[list[str]]]  # yields documents as paragraph lists
    version: str = ""
    notes: str = ""
    stats: dict = field(default_factory=dict)
    # (file name, text) of the license / notice files that go into LICENSES.txt
    license_texts: Callable[[], list[tuple[str, str]]] = lambda: []


_SKIP_DIRS = {"test", "tests", "testing", "_vendor", "vendor", "vendored", "_vendored",
              "third_party", "thirdparty", "__pycache__", "idle_test", "site-packages",
              "benchmarks", "examples", "_distutils", "_bundled", "ensurepip", "lib2to3"}


def _py_files(root: Path, limit: int | None) -> list[Path]:
    files = []
    for p in sorted(root.rglob("*.py")):
        rel = p.relative_to(root).parts
        if any(part in _SKIP_DIRS or part.startswith("test_") for part in rel[:-1]):
            continue
        if rel[-1].startswith("test_") or rel[-1] == "conftest.py":
            continue
        files.append(p)
    return files[:limit] if limit else files


def _docstrings(path: Path) -> list[str]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    out = []
    nodes = [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
    nodes.sort(key=lambda n: getattr(n, "lineno", 0))
    for n in nodes:
        d = ast.get_docstring(n, clean=True)
        if d and len(d) >= 80:
            out.append(d)
    return out


def _module_docs(root: Path, limit: int | None) -> Iterator[list[str]]:
    for f in _py_files(root, limit):
        paras: list[str] = []
        for d in _docstrings(f):
            paras.extend(clean_rst(d))
        if paras:
            yield paras


def _stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _pydoc_topics(limit: int | None) -> Iterator[list[str]]:
    from pydoc_data import topics  # noqa: PLC0415  (stdlib, PSF-2.0)

    keys = sorted(topics.topics)
    for k in keys[:limit] if limit else keys:
        yield clean_rst(topics.topics[k])


def _license_ok(expr: str) -> bool:
    parts = re.split(r"\s+(?:AND|OR|WITH)\s+|[()]", expr.upper())
    parts = [p.strip().removesuffix(" LICENSE").strip() for p in parts if p.strip()]
    return bool(parts) and all(p in PERMISSIVE or p + " LICENSE" in PERMISSIVE for p in parts)


def _dist_license(dist: metadata.Distribution) -> str:
    m = dist.metadata
    lic = (m.get("License-Expression") or "").strip()
    if not lic:
        raw = (m.get("License") or "").strip()
        if raw and len(raw) < 60 and "\n" not in raw:
            lic = raw
    if not lic:
        for c in m.get_all("Classifier") or []:
            if c.startswith("License ::"):
                name = c.split("::")[-1].strip()
                lic = {"MIT License": "MIT", "BSD License": "BSD", "Apache Software License": "Apache-2.0",
                       "ISC License (ISCL)": "ISC", "Python Software Foundation License": "PSF-2.0"}.get(name, name)
    return lic


# Packages whose own docstrings we read (import name -> distribution name). Chosen for size and
# prose quality; each is checked for a permissive license in its installed metadata.
DOCSTRING_PACKAGES: list[tuple[str, str, int]] = [
    # (distribution, import package, char cap)
    ("transformers", "transformers", 480_000),
    ("torch", "torch", 420_000),
    ("numpy", "numpy", 330_000),
    ("sympy", "sympy", 240_000),
    ("networkx", "networkx", 240_000),
    ("pydantic", "pydantic", 120_000),
    ("huggingface_hub", "huggingface_hub", 110_000),
    ("accelerate", "accelerate", 70_000),
    ("mpmath", "mpmath", 60_000),
    ("pytest", "_pytest", 60_000),
    ("click", "click", 40_000),
    ("rich", "rich", 40_000),
    ("Jinja2", "jinja2", 40_000),
    ("requests", "requests", 25_000),
    ("fsspec", "fsspec", 30_000),
    ("psutil", "psutil", 25_000),
    ("typer", "typer", 20_000),
    ("setuptools", "setuptools", 25_000),
    ("Pygments", "pygments", 20_000),
    ("urllib3", "urllib3", 20_000),
    ("tokenizers", "tokenizers", 15_000),
    ("safetensors", "safetensors", 8_000),
]


def _package_root(dist: metadata.Distribution, import_name: str) -> Path | None:
    for f in dist.files or []:
        parts = Path(str(f)).parts
        if parts and parts[0] == import_name:
            return Path(dist.locate_file(Path(import_name)))
    return None


def _dist_docs(dist: metadata.Distribution, import_name: str) -> Callable[[int | None], Iterator[list[str]]]:
    def gen(limit: int | None) -> Iterator[list[str]]:
        m = dist.metadata
        desc = m.get("Description") or m.get_payload() or ""  # type: ignore[attr-defined]
        ctype = (m.get("Description-Content-Type") or "").lower()
        if desc:
            yield clean_markdown(desc) if "markdown" in ctype else clean_rst(desc)
        root = _package_root(dist, import_name)
        if root is not None and root.is_dir():
            yield from _module_docs(root, limit)

    return gen


def _debian_license(pkg: str) -> str | None:
    """License of ``Files: *`` in /usr/share/doc/PKG/copyright (DEP-5), or an MIT text check."""
    cp = Path("/usr/share/doc") / pkg / "copyright"
    if not cp.is_file():
        return None
    text = cp.read_text(encoding="utf-8", errors="replace")
    m = re.search(r"^Files:\s*\*\s*$.*?^License:\s*(\S+)", text, re.M | re.S)
    if m:
        return m.group(1)
    if "Permission is hereby granted, free of charge" in text[:3000]:
        return "MIT"
    return None


def _debian_version(pkg: str) -> str:
    status = Path("/var/lib/dpkg/status")
    if not status.is_file():
        return ""
    m = re.search(rf"^Package: {re.escape(pkg)}\n(?:.+\n)*?Version: (\S+)", status.read_text(errors="replace"), re.M)
    return m.group(1) if m else ""


def _files_docs(paths: Callable[[], list[Path]], cleaner: Callable[[str], list[str]]) -> Callable[[int | None], Iterator[list[str]]]:
    def gen(limit: int | None) -> Iterator[list[str]]:
        files = paths()
        for p in files[:limit] if limit else files:
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            yield cleaner(raw.decode("utf-8", errors="replace"))

    return gen


# Debian docs: (package, glob under /usr/share/doc/PKG, cleaner, char cap)
DEBIAN_DOCS: list[tuple[str, str, Callable[[str], list[str]], int]] = [
    ("nodejs", "api/*.md", clean_markdown, 520_000),
    ("ninja-build", "manual.html", clean_html, 40_000),
    ("libffi8", "html/*.html", clean_html, 30_000),
    ("libexpat1-dev", "expat.html/reference.html", clean_html, 30_000),
]


_LICENSE_FILE = re.compile(r"^(LICEN[CS]E|COPYING|NOTICE)", re.I)


def _cpython_license_texts() -> list[tuple[str, str]]:
    lic = _stdlib_root() / "LICENSE.txt"
    return [("Lib/LICENSE.txt", lic.read_text(encoding="utf-8", errors="replace"))] if lic.is_file() else []


def _dist_license_texts(dist: metadata.Distribution) -> list[tuple[str, str]]:
    """Top-level license / notice files of an installed distribution (not those of bundled third-party code)."""
    out = []
    for f in sorted(dist.files or [], key=str):
        parts = Path(str(f)).parts
        if len(parts) < 2 or not parts[0].endswith(".dist-info"):
            continue
        rel = parts[2:] if parts[1] == "licenses" else parts[1:]
        if len(rel) == 1 and _LICENSE_FILE.match(rel[0]):
            path = Path(dist.locate_file(f))
            if path.is_file():
                out.append((str(f), path.read_text(encoding="utf-8", errors="replace")))
    return out


def _debian_license_texts(pkg: str) -> list[tuple[str, str]]:
    """From /usr/share/doc/PKG/copyright: the header, the `Files: *` stanza and its license text (DEP-5), else
    the text before the list of bundled third-party libraries."""
    cp = Path("/usr/share/doc") / pkg / "copyright"
    if not cp.is_file():
        return []
    text = cp.read_text(encoding="utf-8", errors="replace")
    name = f"/usr/share/doc/{pkg}/copyright"
    if text.startswith("Format:"):
        paras = re.split(r"\n[ \t]*\n", text)
        star = next((p for p in paras if re.search(r"^Files:\s*\*\s*$", p, re.M)), None)
        if star is None:
            return [(name, text)]
        m = re.search(r"^License:\s*(\S+)", star, re.M)
        lic = [p for p in paras if m and p is not star and re.match(rf"License:\s*{re.escape(m.group(1))}\s*$", p.split("\n")[0])]
        return [(name + " (excerpt: header, Files: *, its license)", "\n\n".join([paras[0], star, *lic]))]
    cut = text.find("The externally maintained libraries")
    return [(name + " (excerpt: the package's own license)", text[:cut].rstrip() if cut > 0 else text[:4000])]


def write_licenses(out: Path, sources: list[DocSource], source_meta: dict[str, dict]) -> None:
    """LICENSES.txt: the license and notice texts of every doc source used, plus a note for generated text."""
    lines = [
        "Licenses of the text in this folder (safesail-guard general-text corpus, built by make_general.py).",
        "",
        "The doc records are excerpts of the sources below; each is distributed under its own license, whose",
        "text and copyright notices are reproduced here. Records name their source in the `source` field.",
        "The chat and risky records (sources template:*) were generated from templates written for",
        "safesail-guard and are released under the project's license, Apache-2.0.",
    ]
    seen: dict[str, str] = {}
    for src in sorted(sources, key=lambda s: s.id):
        if not source_meta.get(src.id, {}).get("records"):
            continue
        texts = src.license_texts()
        source_meta[src.id]["license_files"] = [n for n, _ in texts]
        lines += ["", "=" * 100, f"{src.id} {src.version} -- license: {src.license}", src.origin, "=" * 100]
        if not texts:
            lines += ["", f"(no license file is installed with it; its metadata declares {src.license})"]
        for fname, text in texts:
            digest = hashlib.sha1(text.strip().encode()).hexdigest()
            lines += ["", f"--- {fname}"]
            if digest in seen:
                lines.append(f"(identical to the text of {seen[digest]} above)")
            else:
                seen[digest] = f"{src.id}: {fname}"
                lines.append(text.strip())
    (out / "LICENSES.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")


def doc_sources() -> list[DocSource]:
    """Every doc source available here whose license is permissive (skipped ones are named on stderr)."""
    py = sys.version.split()[0]
    sources = [
        DocSource("cpython:pydoc-topics", "PSF-2.0", "Python language reference topics shipped as pydoc_data/topics.py",
                  430_000, _pydoc_topics, version=py, license_texts=_cpython_license_texts),
        DocSource("cpython:stdlib-docstrings", "PSF-2.0", "docstrings of the Python standard library (Lib/**/*.py, tests excluded)",
                  1_000_000, lambda limit: _module_docs(_stdlib_root(), limit), version=py,
                  license_texts=_cpython_license_texts),
    ]
    dists = {d.metadata["Name"].lower().replace("_", "-"): d for d in metadata.distributions()}
    for dist_name, import_name, cap in DOCSTRING_PACKAGES:
        dist = dists.get(dist_name.lower().replace("_", "-"))
        if dist is None:
            print(f"[make_general] skip pypi:{dist_name}: not installed", file=sys.stderr)
            continue
        lic = _dist_license(dist)
        if not _license_ok(lic):
            print(f"[make_general] skip pypi:{dist_name}: license {lic!r} not on the permissive list", file=sys.stderr)
            continue
        sources.append(DocSource(
            f"pypi:{dist.metadata['Name']}", lic,
            f"docstrings of the installed `{import_name}` package and its PyPI long description (tests and vendored code excluded)",
            cap, _dist_docs(dist, import_name), version=dist.version,
            license_texts=lambda d=dist: _dist_license_texts(d)))
    for pkg, pattern, cleaner, cap in DEBIAN_DOCS:
        lic = _debian_license(pkg)
        base = Path("/usr/share/doc") / pkg
        if lic is None or not _license_ok(lic):
            print(f"[make_general] skip debian:{pkg}: missing or license {lic!r} not permissive", file=sys.stderr)
            continue
        files = sorted(base.glob(pattern))
        if not files:
            continue
        sources.append(DocSource(
            f"debian:{pkg}", lic, f"/usr/share/doc/{pkg}/{pattern} (license {lic} per /usr/share/doc/{pkg}/copyright)",
            cap, _files_docs(lambda b=base, pat=pattern: sorted(b.glob(pat)), cleaner), version=_debian_version(pkg),
            license_texts=lambda p=pkg: _debian_license_texts(p)))
    return sources


def build_doc_records(sources: list[DocSource], seed: int, limit: int | None) -> list[dict]:
    """Prose chunks of every source, de-duplicated across sources, shuffled (seeded) and capped per source."""
    dedup = Deduper()
    records: list[dict] = []
    for src in sources:
        chunks: list[str] = []
        n_docs = 0
        for paras in src.docs(limit):
            n_docs += 1
            kept = [p for p in paras if dedup.fresh(p)]
            for c in chunk_paragraphs(kept):
                if is_prose_chunk(c) and dedup.fresh("chunk:" + c):
                    chunks.append(c)
        rng = random.Random(f"{seed}:doc:{src.id}")
        rng.shuffle(chunks)
        cap = src.cap_chars if limit is None else min(src.cap_chars, 20 * MAX_CHUNK)
        taken, total = [], 0
        for c in chunks:
            if total >= cap:
                break
            taken.append(c)
            total += len(c)
        src.stats = {"documents_scanned": n_docs, "chunks_available": len(chunks),
                     "chars_available": sum(map(len, chunks))}
        records.extend({"text": c, "source": src.id, "kind": "doc"} for c in taken)
    return records

