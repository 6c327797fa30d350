"""Doc text -> prose: the cleaning, prose checks, chunking and de-duplication of the general corpus's doc records.

Turns reStructuredText / docstrings (:func:`clean_rst`), Markdown (:func:`clean_markdown`) and HTML
(:func:`clean_html`) into lists of prose paragraphs, dropping code, doctests, tables and symbol-heavy text
(:func:`is_prose`); packs paragraphs into chunks of ``MIN_CHUNK``..``MAX_CHUNK`` characters
(:func:`chunk_paragraphs`, checked by :func:`is_prose_chunk`); and drops repeats exactly and by a template
signature that ignores capitalised names (:class:`Deduper`). Pure text functions: the sources that feed them are
in :mod:`safesail_training.corpus.general_doc_sources`, and the builder that writes the corpus is
:mod:`safesail_training.corpus.make_general`.
"""

from __future__ import annotations

import hashlib
import html
import html.parser
import re
import unicodedata

# Chunk geometry (characters).
MIN_CHUNK = 200
MAX_CHUNK = 1500


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
    """Remembers the texts seen so far; :meth:`fresh` is True only for a text not seen before (exactly or by
    its template signature)."""

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



def is_prose_chunk(text: str) -> bool:
    """A chunk worth keeping: at least 30 words, mostly letters, and enough function words."""
    words = text.split()
    if len(words) < 30:
        return False
    nonspace = sum(not c.isspace() for c in text)
    letters = sum(c.isalpha() for c in text)
    if letters / max(nonspace, 1) < 0.78:
        return False
    return stopword_ratio(text) >= 0.2

