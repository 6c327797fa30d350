"""General text for SAE training: the shipped corpus and the user's own files.

The shipped corpus (package data ``data/general/*.jsonl.gz``, built by ``make_general.py``, described in
``data/DATA_CARD.md``) holds about 1.37M tokens (SmolLM2 tokenizer) in three kinds of records:

* ``doc``   -- prose from permissively licensed documentation (CPython docs and docstrings, docstrings of MIT /
  BSD / Apache packages, a few Debian package manuals), about 72% of the tokens;
* ``chat``  -- benign user prompts generated from templates (English plus zh / hi / it / vi), about 16%;
  the harvester renders them with the model's chat template;
* ``risky`` -- generated text that *mentions* safety-relevant topics (news, forum questions, moderation reports,
  fiction, policy text), about 13%, so the SAE has features for them.

Every item is a `TextRecord`; the activation harvester reads ``record.text``, ``record.kind`` and
``record.messages``.

User corpora (`iter_user_texts`): ``.jsonl`` files (one JSON object per line, the text in ``text_field``, or an
OpenAI-style ``messages`` list, which makes a ``chat`` record) and ``.txt`` / ``.md`` files (one ``doc`` record
per blank-line separated block). A bad line raises `CorpusError` naming the file, the 1-based line and the
problem.
"""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Iterable, Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from .errors import CorpusError

__all__ = [
    "KINDS",
    "CorpusError",
    "TextRecord",
    "general_files",
    "general_summary",
    "iter_general",
    "iter_user_texts",
]

KINDS: tuple[str, ...] = ("doc", "chat", "risky")
"""Record kinds: prose (``doc``), a user prompt to an assistant (``chat``), text mentioning safety topics (``risky``)."""

_PACKAGE = "safesail_training.corpus"
_USER_SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".md")


class TextRecord(BaseModel):
    """One unit of training text.

    Attributes:
        text: the text (for chat records: the last user message).
        source: where it comes from: a source id of the shipped corpus (see ``SOURCES.json``), or
            ``user:<file name>`` for user files unless the line names its own ``source``.
        kind: ``doc``, ``chat`` or ``risky``.
        messages: for chat records from user files, the full OpenAI-style conversation
            (``[{"role": ..., "content": ...}, ...]``, contents as plain strings); None otherwise.
    """

    model_config = ConfigDict(extra="forbid")

    text: str
    source: str
    kind: str
    messages: list[dict] | None = None


# --------------------------------------------------------------------------------------------------- shipped


def _general_dir() -> Traversable:
    return resources.files(_PACKAGE) / "data" / "general"


def general_files() -> list[Traversable]:
    """The shipped ``*.jsonl.gz`` files, sorted by name; raises `CorpusError` if there are none."""
    root = _general_dir()
    files = sorted((f for f in root.iterdir() if f.name.endswith(".jsonl.gz")), key=lambda f: f.name) if root.is_dir() else []
    if not files:
        raise CorpusError(
            f"the built-in general corpus is missing: no *.jsonl.gz in {root}; reinstall safesail-guard or rebuild it "
            "with `python training/corpus/make_general.py --out training/corpus/data/general`",
            path=str(root),
        )
    return files


def _check_kinds(kinds: Iterable[str] | None) -> set[str] | None:
    if kinds is None:
        return None
    wanted = set(kinds)
    if not wanted:
        raise CorpusError(f"kinds is empty; use None for all kinds or a subset of {list(KINDS)}")
    unknown = sorted(wanted - set(KINDS))
    if unknown:
        raise CorpusError(f"unknown record kind(s) {unknown}; valid kinds are {list(KINDS)}")
    return wanted


def _read_shipped(file: Traversable, kinds: set[str] | None) -> Iterator[TextRecord]:
    with file.open("rb") as raw, gzip.open(raw, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = _parse_json_line(line, file.name, lineno)
            text = _text_field(obj, "text", file.name, lineno)
            kind = obj.get("kind")
            if kind not in KINDS:
                raise CorpusError(f"{file.name}:{lineno}: field 'kind' must be one of {list(KINDS)}, got {kind!r}",
                                  path=file.name, line=lineno)
            source = obj.get("source")
            if not isinstance(source, str) or not source:
                raise CorpusError(f"{file.name}:{lineno}: field 'source' must be a non-empty string",
                                  path=file.name, line=lineno)
            if kinds is None or kind in kinds:
                yield TextRecord(text=text, source=source, kind=kind)


def iter_general(kinds: set[str] | None = None, *, seed: int = 0, shuffle: bool = True) -> Iterator[TextRecord]:
    """Records of the shipped general corpus.

    Args:
        kinds: restrict to these kinds (a subset of `KINDS`); None means all.
        seed: seed of the shuffle; the same seed always gives the same order.
        shuffle: if False, records come in file order (files sorted by name: chat, doc-*, risky).

    The corpus is small (about 13k records, 6M characters), so all selected records are loaded and then
    shuffled with ``random.Random(seed)``.
    """
    wanted = _check_kinds(kinds)
    records = [r for f in general_files() for r in _read_shipped(f, wanted)]
    if shuffle:
        random.Random(seed).shuffle(records)
    yield from records


def benign_prose(n_chars: int = 20_000, *, seed: int = 0) -> str:
    """Ordinary prose of the shipped corpus (kind ``doc``, shuffled with ``seed``), joined by blank lines and cut
    to ``n_chars`` characters: the long benign text that length checks of the risk score read."""
    parts, total = [], 0
    for rec in iter_general({"doc"}, seed=seed):
        parts.append(rec.text)
        total += len(rec.text) + 2
        if total >= n_chars:
            break
    return "\n\n".join(parts)[:n_chars]


def general_summary() -> dict[str, Any]:
    """Counts of the shipped corpus: records and characters per kind and per source, plus measured tokens.

    ``tokens`` is copied from ``SOURCES.json`` (counted with the SmolLM2 tokenizer when the corpus was built)
    and is absent if the corpus was built without ``--measure-tokens``.
    """
    kinds: dict[str, dict[str, int]] = {}
    sources: dict[str, dict[str, Any]] = {}
    for r in iter_general(shuffle=False):
        k = kinds.setdefault(r.kind, {"records": 0, "characters": 0})
        k["records"] += 1
        k["characters"] += len(r.text)
        s = sources.setdefault(r.source, {"kind": r.kind, "records": 0, "characters": 0})
        s["records"] += 1
        s["characters"] += len(r.text)
    summary: dict[str, Any] = {
        "records": sum(k["records"] for k in kinds.values()),
        "characters": sum(k["characters"] for k in kinds.values()),
        "kinds": {k: kinds[k] for k in KINDS if k in kinds},
        "sources": dict(sorted(sources.items())),
        "files": [f.name for f in general_files()],
    }
    manifest = _general_dir() / "SOURCES.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text(encoding="utf-8"))
        for sid, m in meta.get("sources", {}).items():
            if sid in summary["sources"]:
                summary["sources"][sid]["license"] = m.get("license")
        if "tokens" in meta:
            summary["tokens"] = {"total": meta["tokens"].get("total_tokens"), "tokenizer": meta["tokens"].get("tokenizer"),
                                 "kinds": {k: v.get("tokens") for k, v in meta["tokens"].get("kinds", {}).items()}}
    return summary


# --------------------------------------------------------------------------------------------------- user files


def _parse_json_line(line: bytes, where: str, lineno: int) -> dict[str, Any]:
    try:
        obj = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CorpusError(f"{where}:{lineno}: not valid UTF-8 ({e.reason} at byte {e.start})", path=where, line=lineno) from None
    except json.JSONDecodeError as e:
        raise CorpusError(f"{where}:{lineno}: bad JSON: {e.msg} (column {e.colno})", path=where, line=lineno) from None
    if not isinstance(obj, dict):
        raise CorpusError(f"{where}:{lineno}: expected a JSON object, got {type(obj).__name__}", path=where, line=lineno)
    return obj


def _text_field(obj: dict[str, Any], field: str, where: str, lineno: int) -> str:
    if field not in obj:
        raise CorpusError(f"{where}:{lineno}: missing field {field!r}", path=where, line=lineno)
    value = obj[field]
    if not isinstance(value, str):
        raise CorpusError(f"{where}:{lineno}: field {field!r} must be a string, got {type(value).__name__}",
                          path=where, line=lineno)
    if not value.strip():
        raise CorpusError(f"{where}:{lineno}: field {field!r} is empty", path=where, line=lineno)
    return value


def _content_text(content: Any) -> str | None:
    """A message content as plain text: a string, or OpenAI content parts ``[{"type": "text", "text": ...}]``."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        texts = [p.get("text") for p in content if p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts):
            return "\n".join(texts)
    return None


def _messages(value: Any, where: str, lineno: int) -> tuple[list[dict[str, str]], str]:
    """Validate an OpenAI-style message list; returns (normalised messages, last user message text)."""
    def bad(problem: str) -> CorpusError:
        return CorpusError(f"{where}:{lineno}: field 'messages' {problem}", path=where, line=lineno)

    if not isinstance(value, list):
        raise bad(f"must be a list of {{'role', 'content'}} objects, got {type(value).__name__}")
    if not value:
        raise bad("is empty")
    out: list[dict[str, str]] = []
    for i, m in enumerate(value):
        if not isinstance(m, dict):
            raise bad(f"item {i} must be an object, got {type(m).__name__}")
        role = m.get("role")
        if not isinstance(role, str) or not role:
            raise bad(f"item {i} needs a string 'role'")
        content = _content_text(m.get("content"))
        if content is None:
            raise bad(f"item {i} needs a string 'content' (or a list of text parts)")
        out.append({"role": role, "content": content})
    users = [m["content"] for m in out if m["role"] == "user"]
    if not users:
        raise bad("has no message with role 'user'")
    if not users[-1].strip():
        raise bad("has an empty last user message")
    return out, users[-1]


def _jsonl_records(path: Path, text_field: str) -> Iterator[TextRecord]:
    where = str(path)
    default_source = f"user:{path.name}"
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = _parse_json_line(line, where, lineno)
            source = obj.get("source", default_source)
            if not isinstance(source, str) or not source.strip():
                raise CorpusError(f"{where}:{lineno}: field 'source' must be a non-empty string", path=where, line=lineno)
            if text_field not in obj and "messages" in obj:
                messages, text = _messages(obj["messages"], where, lineno)
                yield TextRecord(text=text, source=source, kind="chat", messages=messages)
                continue
            if text_field not in obj:
                raise CorpusError(f"{where}:{lineno}: missing field {text_field!r} (or an OpenAI-style 'messages' list)",
                                  path=where, line=lineno)
            text = _text_field(obj, text_field, where, lineno)
            kind = obj.get("kind", "doc")
            if kind not in KINDS:
                raise CorpusError(f"{where}:{lineno}: field 'kind' must be one of {list(KINDS)}, got {kind!r}",
                                  path=where, line=lineno)
            yield TextRecord(text=text, source=source, kind=kind)


def _text_blocks(path: Path) -> Iterator[TextRecord]:
    try:
        content = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        line = path.read_bytes()[: e.start].count(b"\n") + 1
        raise CorpusError(f"{path}:{line}: not valid UTF-8 ({e.reason})", path=str(path), line=line) from None
    block: list[str] = []
    source = f"user:{path.name}"
    for line in content.replace("\r\n", "\n").split("\n") + [""]:
        if line.strip():
            block.append(line.rstrip())
        elif block:
            yield TextRecord(text="\n".join(block).strip(), source=source, kind="doc")
            block = []


def _expand(paths: Iterable[Path | str]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        path = Path(p)
        if path.is_dir():
            found = sorted(f for f in path.rglob("*") if f.is_file() and f.name.endswith(_USER_SUFFIXES))
            if not found:
                raise CorpusError(f"{path}: directory has no {', '.join(_USER_SUFFIXES)} files", path=str(path))
            files.extend(found)
        elif not path.exists():
            raise CorpusError(f"{path}: file not found", path=str(path))
        elif not path.name.endswith(_USER_SUFFIXES):
            raise CorpusError(f"{path}: unsupported file type (use {', '.join(_USER_SUFFIXES)})", path=str(path))
        else:
            files.append(path)
    return files


def iter_user_texts(paths: list[Path], text_field: str = "text") -> Iterator[TextRecord]:
    """Records from the user's own files, in the order given (a directory contributes its files, sorted).

    * ``.jsonl`` / ``.jsonl.gz``: one JSON object per line (blank lines are skipped). The text is in
      ``text_field`` (optional ``kind``: doc/chat/risky, default doc; optional ``source``). A line without
      ``text_field`` but with an OpenAI-style ``messages`` list becomes a ``chat`` record whose ``messages`` is
      the normalised list and whose ``text`` is the last user message.
    * ``.txt`` / ``.md``: one ``doc`` record per blank-line separated block.

    Raises `CorpusError` (naming the file and, for a bad line, its 1-based number) for a missing file, an
    unsupported file type, bad JSON, a missing / empty / non-string text field, or a malformed message list;
    and, once everything is read, if the paths yielded no record at all.
    """
    files = _expand(paths)
    n = 0
    for path in files:
        gen = _jsonl_records(path, text_field) if path.name.endswith((".jsonl", ".jsonl.gz")) else _text_blocks(path)
        for rec in gen:
            n += 1
            yield rec
    if n == 0:
        names = ", ".join(str(Path(p)) for p in paths) or "(no paths given)"
        raise CorpusError(f"no text records found in: {names}", path=names)
