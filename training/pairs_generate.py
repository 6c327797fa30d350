"""Write de-concept twins for concept queries with an LLM (Safe-SAIL's concept-contrastive query pairs).

A *concept query* expresses a two-level safety concept (``level0`` domain, ``level1`` sub-concept). Its
*de-concept twin* says nearly the same thing, in nearly the same words, without that concept. The pairs feed
the pre-explanation metrics (L0,t and I_CDF) that rank SAE configurations, so a twin must differ from its query
in the concept and as little else as possible.

Flow: :func:`read_concept_queries` validates the input JSONL (and, through ``safesail_training.corpus.pairs``,
level0/level1 against the taxonomy and every field against the ``ConceptPair`` schema, so the output loads with
``load_pairs``) -> :func:`build_messages` asks the LLM for the twin through
:class:`~safesail_guard.llm_client.LLMClient` -> :func:`extract_twin` takes the fenced block from the reply
and rejects empty, truncated or unchanged twins -> successes are appended to the output JSONL in the pair
format, failures go to ``<output stem>.errors.jsonl`` with a status. A failed record never gets a twin.

Rerunning with the same output resumes: ids already in the output are skipped, failed ids are retried, and the
errors file is rewritten for the run.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safesail_guard.llm_client import LLMClient
from safesail_guard.llm_config import Completion, LLMError

__all__ = [
    "ConceptQuery",
    "PairsInputError",
    "PairsSummary",
    "TwinRejected",
    "build_messages",
    "check_taxonomy",
    "errors_path_for",
    "extract_twin",
    "generate_pairs",
    "read_concept_queries",
]

logger = logging.getLogger(__name__)

_SYSTEM_PROMPT = """\
You help build a dataset for safety research on language models. You will get a query and the safety \
concept(s) it expresses, written as "<domain> - <sub-concept>".

First, think quietly about what in the query makes it express the concept: which words, details or framing \
carry it. Then write a twin of the query that no longer expresses that concept (and, if you can, none of the \
concepts listed), changing only what carries the concept. The twin must stay as close to the query as \
possible: same meaning otherwise, same wording where it can, same structure, same language, about the same \
length. Every other concept the query expresses must still be in the twin, and the twin must not bring in \
anything new.

Reply with the twin alone inside a fenced block that opens with ```text and closes with ```. Write nothing \
outside the block."""

_THINK_BLOCK = re.compile(r"<think>.*?</think>", re.DOTALL | re.IGNORECASE)
_FENCED = re.compile(r"```[ \t]*([\w+.-]*)[ \t]*\r?\n(.*?)```", re.DOTALL)
_ONE_LINE_FENCE = re.compile(r"^```(?:text)?[ \t]*(.*?)[ \t]*```$", re.DOTALL)


class PairsInputError(ValueError):
    """The input (or an existing output) file is malformed; the message names the file and line."""


class TwinRejected(ValueError):
    """An LLM reply that cannot be used as a twin; ``status`` is a short machine-readable reason."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class ConceptQuery:
    """One input record: a query that expresses ``level0 - level1``."""

    id: str
    level0: str
    level1: str
    lang: str
    text: str
    line: int
    """1-based line number in the input file (for messages)."""


@dataclass(slots=True)
class PairsSummary:
    """What one :func:`generate_pairs` run did."""

    total: int
    """Records in the input."""
    done: int = 0
    """Twins written by this run."""
    skipped: int = 0
    """Records whose id was already in the output (resume)."""
    failed: int = 0
    """Records that got no twin this run (see the errors file)."""
    failed_by_status: dict[str, int] = field(default_factory=dict)
    cached: int = 0
    """Replies served from the LLM client's on-disk cache."""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    responses_without_usage: int = 0
    """Server replies that did not report token usage (their tokens are not in the sums)."""
    output_path: Path | None = None
    errors_path: Path | None = None
    """Errors file of this run, or None when nothing failed."""


def errors_path_for(output_path: Path) -> Path:
    """``out.jsonl`` -> ``out.errors.jsonl`` (any other name gets ``.errors.jsonl`` appended)."""
    output_path = Path(output_path)
    if output_path.suffix == ".jsonl":
        return output_path.with_name(output_path.stem + ".errors.jsonl")
    return output_path.with_name(output_path.name + ".errors.jsonl")


def _derived_id(level0: str, level1: str, text: str) -> str:
    digest = hashlib.sha256("\x1f".join((level0, level1, text)).encode("utf-8")).hexdigest()
    return f"q-{digest[:16]}"


def _string_field(record: dict[str, Any], key: str, where: str, *, required: bool = True) -> str | None:
    value = record.get(key)
    if value is None:
        if required:
            raise PairsInputError(f"{where}: missing field {key!r}")
        return None
    if not isinstance(value, str) or not value.strip():
        raise PairsInputError(f"{where}: field {key!r} must be a non-empty string, got {value!r}")
    return value


def read_concept_queries(path: Path, *, default_lang: str = "en") -> list[ConceptQuery]:
    """Read ``{"id"?, "level0", "level1", "lang"?, "concept" | "text"}`` lines; blank lines are skipped.

    A record without ``id`` gets a stable one derived from a hash of (level0, level1, text), so resuming works.
    Raises :class:`PairsInputError` naming the file and line for bad JSON, missing or mistyped fields, a record
    with two different texts, or a duplicate id.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise PairsInputError(f"{path}: no such file") from None
    except UnicodeDecodeError as exc:
        raise PairsInputError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    queries: list[ConceptQuery] = []
    seen: dict[str, int] = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise PairsInputError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict):
            raise PairsInputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        level0 = _string_field(record, "level0", where)
        level1 = _string_field(record, "level1", where)
        concept = _string_field(record, "concept", where, required=False)
        text = _string_field(record, "text", where, required=False)
        if concept is None and text is None:
            raise PairsInputError(f"{where}: missing the query text: give it as 'concept' (or 'text')")
        if concept is not None and text is not None and concept != text:
            raise PairsInputError(f"{where}: 'concept' and 'text' differ; give the query text once")
        query = concept if concept is not None else text
        lang = _string_field(record, "lang", where, required=False) or default_lang
        raw_id = record.get("id")
        if raw_id is None:
            qid = _derived_id(level0, level1, query)
        elif isinstance(raw_id, str) and raw_id.strip():
            qid = raw_id
        else:
            raise PairsInputError(f"{where}: field 'id' must be a non-empty string, got {raw_id!r}")
        if qid in seen:
            raise PairsInputError(f"{where}: duplicate id {qid!r} (first seen on line {seen[qid]})")
        seen[qid] = lineno
        queries.append(ConceptQuery(id=qid, level0=level0, level1=level1, lang=lang, text=query, line=lineno))
    return queries


def _pairs_module() -> Any | None:
    """``safesail_training.corpus.pairs`` (taxonomy and pair schema), or None when it does not exist (yet)."""
    name = "safesail_training.corpus.pairs"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        logger.warning("%s not found; records are not checked against the taxonomy and pair schema", name)
        return None


def _schema_problem(module: Any, record: dict[str, Any], taxonomy: Any) -> str | None:
    """Why ``record`` is not a valid ``ConceptPair`` of the corpus schema, or None when it is."""
    from pydantic import ValidationError

    try:
        module.ConceptPair.model_validate(record, context={"taxonomy": taxonomy})
    except ValidationError as exc:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err["loc"])
            msg = str(err["msg"]).removeprefix("Value error, ")
            parts.append(f"field {loc!r}: {msg}" if loc else msg)
        return "; ".join(parts)
    return None


def check_taxonomy(queries: Sequence[ConceptQuery], taxonomy: Any, path: Path) -> None:
    """Raise :class:`PairsInputError` for the first record whose level0/level1 the taxonomy does not know."""
    level0s = list(taxonomy.level0s)
    for q in queries:
        if q.level0 not in level0s:
            raise PairsInputError(f"{path}:{q.line}: unknown level0 {q.level0!r}; valid: {', '.join(level0s)}")
        level1s = list(taxonomy.level1s(q.level0))
        if q.level1 not in level1s:
            raise PairsInputError(
                f"{path}:{q.line}: unknown level1 {q.level1!r} for level0 {q.level0!r}; valid: {', '.join(level1s)}"
            )


def build_messages(query: str, concepts: Sequence[str], lang: str | None = None) -> list[dict[str, str]]:
    """Chat messages asking for the de-concept twin of ``query``; ``concepts`` like ``["violence - insult"]``,
    the first being the one that must go."""
    if not concepts:
        raise ValueError("build_messages needs at least one concept")
    lines = [f"Concept to remove: {concepts[0]}"]
    if len(concepts) > 1:
        lines.append(f"Also avoid, if you can: {'; '.join(concepts[1:])}")
    if lang:
        lines.append(f"Language of the query (keep it): {lang}")
    lines += ["", "Query:", query]
    return [{"role": "system", "content": _SYSTEM_PROMPT}, {"role": "user", "content": "\n".join(lines)}]


def _normalise(text: str) -> str:
    return " ".join(text.split())


def extract_twin(reply: str, query: str, finish_reason: str | None = None) -> str:
    """The twin inside ``reply``: the last ```text block (else the last fenced block, else the whole reply).

    ``<think>...</think>`` sections are dropped first. Raises :class:`TwinRejected` with status ``truncated``
    (the server cut the reply at max_tokens), ``unclosed_fence``, ``empty_reply`` or ``identical_reply``.
    """
    if finish_reason == "length":
        raise TwinRejected("truncated", "reply was cut at max_tokens (finish_reason='length'); raise max_tokens")
    text = _THINK_BLOCK.sub("", reply)
    if "</think>" in text.lower():  # an opening tag the server swallowed: keep what follows the reasoning
        text = text[text.lower().rindex("</think>") + len("</think>") :]
    blocks = _FENCED.findall(text)
    if blocks:
        tagged = [body for tag, body in blocks if tag.lower() == "text"]
        twin = (tagged or [body for _, body in blocks])[-1]
    elif (one_line := _ONE_LINE_FENCE.match(text.strip())) is not None:
        twin = one_line.group(1)
    elif "```" in text:
        raise TwinRejected("unclosed_fence", f"reply opens a ``` block that never closes: {text.strip()[:200]!r}")
    else:
        twin = text
    twin = twin.strip()
    if not twin:
        raise TwinRejected("empty_reply", "reply contains no rewritten query")
    if _normalise(twin) == _normalise(query):
        raise TwinRejected("identical_reply", "rewritten query is identical to the input")
    return twin


def _pair_record(query: ConceptQuery, twin: str, source: str) -> dict[str, str]:
    """The output line for ``query`` in the corpus pair format."""
    return {
        "id": query.id,
        "level0": query.level0,
        "level1": query.level1,
        "lang": query.lang,
        "concept": query.text,
        "deconcept": twin,
        "source": source,
    }


def _read_done_ids(output_path: Path) -> set[str]:
    """Ids already in ``output_path``. A torn last line (crash mid-write) is cut off; other bad lines raise."""
    if not output_path.exists():
        return set()
    raw = output_path.read_bytes()
    lines = raw.split(b"\n")
    if raw and not raw.endswith(b"\n"):
        try:
            json.loads(lines[-1])
        except ValueError:
            keep = len(raw) - len(lines[-1])
            logger.warning("%s: dropping an incomplete last line left by an interrupted run", output_path)
            with output_path.open("r+b") as fh:
                fh.truncate(keep)
            lines = lines[:-1]
    done: set[str] = set()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise PairsInputError(f"{output_path}:{lineno}: existing output line is not valid JSON; fix or remove it")
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            raise PairsInputError(f"{output_path}:{lineno}: existing output line has no string 'id'")
        done.add(record["id"])
    return done


def _ensure_trailing_newline(path: Path) -> None:
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            fh.seek(-1, 2)
            last = fh.read(1)
        if last != b"\n":
            with path.open("ab") as fh:
                fh.write(b"\n")


def generate_pairs(
    input_path: Path,
    output_path: Path,
    client: LLMClient,
    *,
    default_lang: str = "en",
    progress: bool = True,
    validate_taxonomy: bool = True,
) -> PairsSummary:
    """Write a de-concept twin for every input record not yet in ``output_path``; returns a summary.

    Successes are appended to ``output_path`` as ``{"id", "level0", "level1", "lang", "concept", "deconcept",
    "source": "llm:<model>"}`` in input order; failures go to :func:`errors_path_for` as ``{"id", "status",
    "error"}``. Input problems (including, when ``validate_taxonomy``, unknown level0/level1 or values the pair
    schema rejects) raise :class:`PairsInputError` before any request is sent.
    """
    input_path, output_path = Path(input_path), Path(output_path)
    errors_path = errors_path_for(output_path)
    if output_path.resolve() == input_path.resolve():
        raise PairsInputError(f"{output_path}: output must differ from the input file")
    queries = read_concept_queries(input_path, default_lang=default_lang)
    source = f"llm:{client.config.model}"
    corpus = _pairs_module() if validate_taxonomy else None
    taxonomy = None
    if corpus is not None:
        try:
            taxonomy = corpus.load_taxonomy()
        except ValueError as exc:  # CorpusError: the taxonomy file itself is broken
            raise PairsInputError(f"cannot load the taxonomy: {exc}") from None
        check_taxonomy(queries, taxonomy, input_path)
        for q in queries:  # the rest of the pair schema (id, lang, source), before any token is spent
            probe = _pair_record(q, q.text + " (twin)", source)
            problem = _schema_problem(corpus, probe, taxonomy)
            if problem is not None:
                raise PairsInputError(f"{input_path}:{q.line}: {problem}")
    done_ids = _read_done_ids(output_path)
    todo = [q for q in queries if q.id not in done_ids]
    summary = PairsSummary(total=len(queries), skipped=len(queries) - len(todo), output_path=output_path)

    output_path.parent.mkdir(parents=True, exist_ok=True)
    _ensure_trailing_newline(output_path)
    statuses: Counter[str] = Counter()
    usage_before = client.usage
    pending: dict[int, Completion | LLMError] = {}
    next_index = 0

    with output_path.open("a", encoding="utf-8") as out, errors_path.open("w", encoding="utf-8") as errs:

        def write(index: int, result: Completion | LLMError) -> None:
            query = todo[index]
            if isinstance(result, LLMError):
                status, message = "llm_error", str(result)
            else:
                try:
                    record = _pair_record(query, extract_twin(result.text, query.text, result.finish_reason), source)
                    problem = None if corpus is None else _schema_problem(corpus, record, taxonomy)
                    if problem is not None:
                        raise TwinRejected("invalid_pair", f"twin does not fit the pair schema: {problem}")
                except TwinRejected as exc:
                    status, message = exc.status, str(exc)
                else:
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                    out.flush()
                    summary.done += 1
                    return
            statuses[status] += 1
            errs.write(json.dumps({"id": query.id, "status": status, "error": message}, ensure_ascii=False) + "\n")
            errs.flush()

        def on_result(index: int, result: Completion | LLMError) -> None:
            nonlocal next_index  # write in input order so reruns give diffable files
            pending[index] = result
            while next_index in pending:
                write(next_index, pending.pop(next_index))
                next_index += 1

        messages = [build_messages(q.text, [f"{q.level0} - {q.level1}"], q.lang) for q in todo]
        client.complete_many(messages, progress=progress, on_result=on_result, desc="de-concept twins")

    spent = client.usage - usage_before
    summary.failed = sum(statuses.values())
    summary.failed_by_status = dict(statuses)
    summary.cached = spent.cached_hits
    summary.prompt_tokens = spent.prompt_tokens
    summary.completion_tokens = spent.completion_tokens
    summary.responses_without_usage = spent.responses_without_usage
    if summary.failed:
        summary.errors_path = errors_path
    else:
        errors_path.unlink(missing_ok=True)
    return summary
