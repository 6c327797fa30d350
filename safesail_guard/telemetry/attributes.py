"""Text-free telemetry values: what a span or metric may carry about a request, a decision or an error.

Holds the pure helpers that turn guard objects into low-cardinality OpenTelemetry attributes: a feature's display
name (:func:`short_name`), the summary of a policy decision (:class:`DecisionSummary`), the GenAI
``gen_ai.request.*`` attributes of an OpenAI request body (:func:`request_param_attributes`), the host and port
of an upstream URL (:func:`server_of`), the ``error.type`` and status of an exception
(:func:`classify_exception`) and the check of a stage name (:func:`stage_key`). Nothing here touches a span or a
meter: :mod:`safesail_guard.telemetry.request_trace` puts these values on spans and metrics, with the names from
:mod:`safesail_guard.telemetry.names`. Nothing here ever reads prompt text, response text or API keys.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from safesail_guard.telemetry import names as n

MAX_FEATURES = 32
"""Most features listed on one decision event (de-duplicated by id, in order of first appearance)."""
SHORT_NAME_CHARS = 60
"""Longest feature short name (see :func:`short_name`)."""

CLIENT_CLOSED = 499
"""``http.response.status_code`` recorded when the client went away before the response ended (nginx's code)."""

_CLAUSE_BREAKS = (", e.g.", " e.g.", " on text like ", ";", "\n", ". ", " - ", " — ")
_TRAILING = " \t,.:;/-—"


def short_name(explanation: str | None, max_chars: int = SHORT_NAME_CHARS) -> str:
    """A feature's display name: the first clause of its explanation, at most ``max_chars`` characters.

    The clause ends at the first ``", e.g."``, ``" on text like "``, ``;``, ``". "``, dash or newline outside
    double quotes (the offline explainer's quoted words may hold any character); a longer clause is cut at a
    word boundary and ends with ``"…"``. ``None`` or blank gives ``""`` (callers fall back to the feature id).
    """
    if not explanation or not explanation.strip():
        return ""
    text = explanation.strip()
    cut = len(text)
    in_quote = False
    for i, ch in enumerate(text):
        if ch == '"':
            in_quote = not in_quote
        elif not in_quote and any(text.startswith(b, i) for b in _CLAUSE_BREAKS):
            cut = i
            break
    clause = " ".join(text[:cut].split()).rstrip(_TRAILING)
    if len(clause) <= max_chars:
        return clause
    head = clause[: max_chars - 1]
    if " " in head:
        head = head[: head.rfind(" ")]
    return head.rstrip(_TRAILING) + "…"


def stage_key(name: str) -> str:
    """``"prompt_scoring"`` for ``"prompt_scoring"`` or ``"safesail.prompt_scoring"``; ValueError otherwise."""
    key = name.removeprefix("safesail.")
    if key not in n.STAGES:
        raise ValueError(f"unknown telemetry stage {name!r}; valid stages: {', '.join(n.STAGES)}")
    return key


def classify_exception(exc: BaseException) -> tuple[str, int, bool]:
    """(error.type, HTTP status, is a server error) for an exception leaving a request or stage.

    An exception with an integer ``status_code`` below 500 (an HTTP error the server chose, e.g. a 401) is a
    client error: ``error.type`` is the status code and the span status stays unset, as the HTTP conventions ask
    for SERVER spans. A closed generator or a cancelled task (the client went away mid-stream) is recorded as
    status 499 with ``error.type`` ``GeneratorExit`` / ``CancelledError``, also without ERROR status. Anything
    else is a server error named by its class.
    """
    if isinstance(exc, (GeneratorExit, asyncio.CancelledError)):
        return type(exc).__qualname__, CLIENT_CLOSED, False
    code = getattr(exc, "status_code", None)
    if isinstance(code, int) and not isinstance(code, bool) and 400 <= code < 500:
        return str(code), code, False
    status = code if isinstance(code, int) and not isinstance(code, bool) and code >= 500 else 500
    return type(exc).__qualname__, status, True


def _number(value: Any, kind: type) -> int | float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return kind(value)


def request_param_attributes(params: Mapping[str, Any] | None) -> dict[str, Any]:
    """GenAI ``gen_ai.request.*`` attributes from an OpenAI request body (numbers only; everything else ignored).

    Reads ``max_tokens`` (or ``max_completion_tokens``), ``temperature``, ``top_p``, ``top_k``, ``seed``,
    ``frequency_penalty``, ``presence_penalty`` and ``n`` (as ``gen_ai.request.choice.count`` when not 1). Text
    fields such as ``messages`` or ``stop`` are never read.
    """
    if not params:
        return {}
    out: dict[str, Any] = {}
    max_tokens = params.get("max_tokens")
    if max_tokens is None:
        max_tokens = params.get("max_completion_tokens")
    pairs: tuple[tuple[str, Any, type], ...] = (
        (n.GEN_AI_REQUEST_MAX_TOKENS, max_tokens, int),
        (n.GEN_AI_REQUEST_TEMPERATURE, params.get("temperature"), float),
        (n.GEN_AI_REQUEST_TOP_P, params.get("top_p"), float),
        (n.GEN_AI_REQUEST_TOP_K, params.get("top_k"), float),
        (n.GEN_AI_REQUEST_SEED, params.get("seed"), int),
        (n.GEN_AI_REQUEST_FREQUENCY_PENALTY, params.get("frequency_penalty"), float),
        (n.GEN_AI_REQUEST_PRESENCE_PENALTY, params.get("presence_penalty"), float),
    )
    for key, value, kind in pairs:
        num = _number(value, kind)
        if num is not None:
            out[key] = num
    choices = _number(params.get("n"), int)
    if choices is not None and choices != 1:
        out[n.GEN_AI_REQUEST_CHOICE_COUNT] = choices
    return out


def server_of(url: str) -> tuple[str | None, int | None]:
    """(host, port) of ``url``: never its path, query or credentials."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None, None
    if port is None and parts.scheme in ("http", "https"):
        port = 443 if parts.scheme == "https" else 80
    return parts.hostname, port


@dataclass(frozen=True)
class DecisionSummary:
    """What telemetry keeps of one policy decision (no text): the parallel feature arrays are strongest first."""

    action: str
    policy: str
    rules: tuple[str, ...]
    feature_ids: tuple[str, ...]
    feature_names: tuple[str, ...]
    activations: tuple[float, ...]
    normalized: tuple[float, ...]
    language: str | None

    @classmethod
    def from_decision(cls, decision: Mapping[str, Any] | Any | None) -> DecisionSummary:
        """Summarise ``Decision.to_dict()`` (a :class:`~safesail_guard.policy.decision.Decision` also works).

        ``None`` (no policy was evaluated) gives action ``"none"``. Features of all effective matches are
        de-duplicated by id, keeping the strongest (largest normalized) firing, in order of first appearance,
        at most :data:`MAX_FEATURES`. Suppressed matches are ignored, as the policy ignores them.
        """
        if decision is None:
            return cls(n.NO_ACTION, "", (), (), (), (), (), None)
        d = decision.to_dict() if hasattr(decision, "to_dict") else decision
        best: dict[str, Mapping[str, Any]] = {}
        for match in d.get("matches") or ():
            for feat in match.get("features") or ():
                fid = str(feat.get("id", ""))
                if not fid:
                    continue
                old = best.get(fid)
                if old is None or float(feat.get("normalized") or 0.0) > float(old.get("normalized") or 0.0):
                    best[fid] = feat
        feats = list(best.values())[:MAX_FEATURES]
        lang = d.get("language")
        language = lang.get("code") if isinstance(lang, Mapping) else None
        return cls(
            action=str(d.get("action") or "allow"),
            policy=str(d.get("policy") or ""),
            rules=tuple(str(m.get("rule", "")) for m in d.get("matches") or ()),
            feature_ids=tuple(str(f["id"]) for f in feats),
            feature_names=tuple(short_name(f.get("explanation")) or str(f["id"]) for f in feats),
            activations=tuple(float(f.get("activation") or 0.0) for f in feats),
            normalized=tuple(float(f.get("normalized") or 0.0) for f in feats),
            language=str(language) if language else None,
        )

