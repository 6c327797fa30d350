"""The StarMap dashboard: its static files at ``/ui`` and the read-only JSON APIs it reads.

`install_ui` (called by `create_app`) adds:

* ``GET /ui`` -> redirect to ``/ui/``; ``GET /ui/{path}`` -> the files of ``safesail_guard/ui/static`` (package
  data, found through `importlib.resources`), with a Content-Security-Policy that lets the page load nothing but
  this server's own files;
* ``GET /v1/safesail/info`` - model, mode, policy and database summary;
* ``GET /v1/safesail/map`` - every database feature with its map position, layer, concepts, short explanation
  and CorrScore (built once per database and cached: the database is immutable while open);
* ``GET /v1/safesail/features?q=&limit=&layer=&domain=`` - full-text search (`NeuronDB.search`);
* ``GET /v1/safesail/features/{feature_id}?examples=`` - one feature card with its top activation contexts;
* ``GET /v1/safesail/audit?since=&until=&action=&stage=&concept=&rule=&request_id=&limit=&offset=`` - recent
  audit rows, newest first (`AuditLog.query`).

The chat itself goes through the proxy's own ``POST /v1/chat/completions`` (``"safesail": {"tokens": true}``);
nothing here generates. The JSON routes behave like the others: 503 while the model loads (`state.ready_state`),
401 without a valid key when keys are configured (`auth.authorize`), OpenAI error bodies with a 4xx naming the
parameter for bad input. Query parameters are read by hand so the key is checked before them. The routes are
listed in the OpenAPI schema (`IN_SCHEMA`; the fuzz test pins every route), their query parameters in
docs/dashboard.md.

Database reads run on a thread (`asyncio.to_thread`): `NeuronDB` serialises its queries under its own lock and
the model thread never reads it after loading; audit reads use the log's query-only connection.
"""

from __future__ import annotations

import asyncio
import math
import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import RedirectResponse, Response

from safesail_guard.audit.timespec import parse_duration, parse_iso
from safesail_guard.server.auth import authorize
from safesail_guard.server.errors import APIError, bad_request
from safesail_guard.server.state import ServerState, ready_state

IN_SCHEMA = True
"""List the dashboard's JSON routes in the OpenAPI schema (off: the schema is the OpenAI-facing proxy)."""

DOMAINS: tuple[str, ...] = ("pornography", "politics", "violence", "terror", "hate", "self_harm", "weapons",
                            "drugs", "cybercrime", "privacy")
"""The ten level-0 risk domains of the Safe-SAIL taxonomy, in the dashboard's legend order."""

SHORT_EXPLANATION = 280
"""Explanations longer than this are cut (with an ellipsis) in map and search results; the card has them whole."""

MAX_SEARCH = 200
MAX_EXAMPLES = 50
MAX_AUDIT = 500
MAX_AUDIT_TEXT = 2_000
MAX_QUERY_CHARS = 500

STATIC_TYPES = {
    ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json", ".ico": "image/x-icon",
}
"""The only file types served from the static folder (an explicit table: a host's mime.types cannot break
ES-module loading)."""

STATIC_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}



def install_ui(app: FastAPI) -> None:
    """Mount the dashboard at ``/ui`` and add its read-only ``/v1/safesail/...`` APIs to ``app``."""
    router = APIRouter(tags=["dashboard"], include_in_schema=IN_SCHEMA)
    maps = _MapCache()

    @router.get("/ui", include_in_schema=False)
    async def ui_root(request: Request) -> Response:
        return RedirectResponse(request.url.path + "/", status_code=307)

    @router.get("/ui/{path:path}", include_in_schema=False)
    async def ui_file(path: str) -> Response:
        return _static_file(path or "index.html")

    @router.get("/v1/safesail/info")
    async def info(request: Request) -> dict[str, Any]:
        """Model, mode, policy and database summary (the dashboard's header)."""
        st = ready_state(request)
        authorize(request, st.keys)
        entries = await maps.get(st)
        return _info(st, entries)

    @router.get("/v1/safesail/map")
    async def feature_map(request: Request) -> dict[str, Any]:
        """Every feature of the database with its map position (``x``/``y`` null when it has none)."""
        st = ready_state(request)
        authorize(request, st.keys)
        entries = await maps.get(st)
        db = st.served.guard.db
        present = sorted({d for e in entries.values() for d in e["domains"]})
        return {"object": "safesail.map", "model": db.manifest.model.name, "map_method": db.manifest.map_method,
                "layers": db.layers, "domains": present, "count": len(entries),
                "positioned": sum(e["x"] is not None for e in entries.values()), "data": list(entries.values())}

    @router.get("/v1/safesail/features")
    async def search(request: Request) -> dict[str, Any]:
        """Full-text search over feature ids, explanations and concepts, best match first."""
        st = ready_state(request)
        authorize(request, st.keys)
        params = _Params(request, ("q", "limit", "layer", "domain"))
        q = params.text("q", required=True, max_chars=MAX_QUERY_CHARS)
        limit = params.integer("limit", 20, 1, MAX_SEARCH)
        db = st.served.guard.db
        layer = params.integer("layer", None, 0, 10_000)
        if layer is not None and layer not in db.layers:
            raise bad_request(f"layer: no features at layer {layer}; layers here: {db.layers}", param="layer")
        entries = await maps.get(st)
        domain = params.text("domain")
        if domain is not None:
            known = sorted({d for e in entries.values() for d in e["domains"]})
            if domain.lower() not in (k.lower() for k in known):
                raise bad_request(f"domain: no feature has the domain {domain!r}; domains here: "
                                  f"{', '.join(known) or 'none'}", param="domain")
        try:
            hits = await asyncio.to_thread(db.search, q, limit=limit, layer=layer, domain=domain)
        except ValueError as e:
            raise bad_request(f"q: {e}", param="q") from None
        data = [{**entries[h.id], "score": round(h.score, 4)} for h in hits if h.id in entries]
        return {"object": "list", "query": q, "data": data}

    @router.get("/v1/safesail/features/{feature_id}")
    async def feature_card(feature_id: str, request: Request) -> dict[str, Any]:
        """One feature: explanation, concepts, scores and its top activation contexts (404 naming near ids)."""
        from safesail_neuron_db.errors import FeatureNotFoundError

        st = ready_state(request)
        authorize(request, st.keys)
        n_examples = _Params(request, ("examples",)).integer("examples", 8, 0, MAX_EXAMPLES)
        db = st.served.guard.db
        if len(feature_id) > 64 or "\x00" in feature_id:
            raise APIError(404, f"no feature {feature_id[:64]!r}; feature ids look like '<layer>_<latent>'",
                           param="feature_id", code="feature_not_found")
        try:
            view = await asyncio.to_thread(db.get, feature_id)
        except FeatureNotFoundError as e:
            msg = str(e).replace(f" in {db.path}", "")  # the server's filesystem layout is not the client's business
            raise APIError(404, msg, param="feature_id", code="feature_not_found") from None
        return _card(view, n_examples)

    @router.get("/v1/safesail/audit")
    async def audit(request: Request) -> dict[str, Any]:
        """Recent audit records, newest first, filtered by time, action, stage, concept, rule or request id."""
        from safesail_guard.audit import STAGES, AuditError
        from safesail_guard.policy.decision import ACTIONS

        st = ready_state(request)
        authorize(request, st.keys)
        p = _Params(request, ("since", "until", "action", "stage", "concept", "rule", "request_id", "limit",
                              "offset"))
        now = time.time()
        since = p.when("since", now)
        until = p.when("until", now)
        actions = None
        if (raw := p.text("action")) is not None:
            actions = [a.strip().lower() for a in raw.split(",") if a.strip()]
            bad = [a for a in actions if a not in ACTIONS]
            if bad or not actions:
                raise bad_request(f"action: unknown action {', '.join(map(repr, bad)) or repr(raw)}; valid: "
                                  f"{', '.join(ACTIONS)} (comma-separated for several)", param="action")
        stage = p.text("stage")
        if stage is not None and stage not in STAGES:
            raise bad_request(f"stage: unknown stage {stage!r}; valid: {', '.join(STAGES)}", param="stage")
        limit = p.integer("limit", 50, 1, MAX_AUDIT)
        offset = p.integer("offset", 0, 0, 10**9)
        filters = {"since": since, "until": until, "action": actions, "stage": stage,
                   "concept": p.text("concept", max_chars=100), "rule": p.text("rule", max_chars=200),
                   "request_id": p.text("request_id", max_chars=200)}
        try:
            rows = await asyncio.to_thread(st.audit.query, **filters, limit=limit + 1, offset=offset)
        except AuditError as e:
            raise APIError(503, f"the audit log cannot be read: {e}", code="audit_unavailable") from None
        return {"object": "list", "data": [_audit_row(r) for r in rows[:limit]], "has_more": len(rows) > limit,
                "filters": {k: v for k, v in filters.items() if v is not None}, "limit": limit, "offset": offset}

    app.include_router(router)


# ------------------------------------------------------------------------------------------- static files


def _static_file(path: str) -> Response:
    """A file of the dashboard's static folder; anything else (traversal, hidden files, other types) is a 404."""
    parts = path.split("/")
    if path.endswith("/"):
        parts[-1] = "index.html"
    missing = APIError(404, f"no such file in the dashboard: {path[:200]!r}", code="not_found")
    if any(p in ("", ".", "..") or p.startswith(".") or "\\" in p or "\x00" in p for p in parts):
        raise missing
    ctype = STATIC_TYPES.get("." + parts[-1].rsplit(".", 1)[-1].lower()) if "." in parts[-1] else None
    if ctype is None:
        raise missing
    node = resources.files("safesail_guard.ui").joinpath("static")
    for p in parts:
        node = node.joinpath(p)
    if not node.is_file():
        raise missing
    return Response(node.read_bytes(), media_type=ctype, headers=STATIC_HEADERS)


# ------------------------------------------------------------------------------------------------- params


class _Params:
    """Query parameters read by hand: unknown names and bad values are 400s naming the parameter."""

    def __init__(self, request: Request, known: tuple[str, ...]) -> None:
        self.q = request.query_params
        for name in self.q:
            if name not in known:
                raise bad_request(f"{name}: unknown parameter; valid: {', '.join(known)}", param=name)
        for name in known:
            if len(self.q.getlist(name)) > 1:
                raise bad_request(f"{name}: given more than once", param=name)

    def text(self, name: str, *, required: bool = False, max_chars: int = 200) -> str | None:
        """The parameter's stripped text; absent or blank -> None (a 400 when required)."""
        raw = self.q.get(name)
        value = raw.strip() if raw is not None else None
        if not value:
            if required:
                raise bad_request(f"{name}: required; give some words, e.g. {name}=weapons", param=name)
            return None
        if len(value) > max_chars:
            raise bad_request(f"{name}: at most {max_chars} characters, got {len(value)}", param=name)
        if "\x00" in value:
            raise bad_request(f"{name}: contains a NUL character", param=name)
        return value

    def integer(self, name: str, default: int | None, lo: int, hi: int) -> int | None:
        """An integer in ``[lo, hi]``, ``default`` when absent."""
        raw = self.q.get(name)
        if raw is None or not raw.strip():
            return default
        try:
            value = int(raw.strip())
        except ValueError:
            raise bad_request(f"{name}: expected an integer, got {raw[:40]!r}", param=name) from None
        if not lo <= value <= hi:
            raise bad_request(f"{name}: must be between {lo} and {hi}, got {value}", param=name)
        return value

    def when(self, name: str, now: float) -> float | None:
        """A time: seconds since the epoch, a duration ago (``45s``, ``30m``, ``1h``, ``2d``, ``1w``) or ISO 8601."""
        raw = self.text(name, max_chars=64)
        if raw is None:
            return None
        seconds = parse_duration(raw)
        if seconds is not None:
            return now - seconds
        try:
            value = float(raw)
        except ValueError:
            pass
        else:
            if math.isfinite(value) and 0 <= value < 1e11:
                return value
            raise bad_request(f"{name}: {raw!r} is not a time in seconds since the epoch", param=name)
        try:
            when = parse_iso(raw)
        except ValueError as e:
            raise bad_request(f"{name}: {e}", param=name) from None
        if when is None:
            raise bad_request(f"{name}: cannot read {raw!r}; use seconds since the epoch, a duration ago (45s, "
                              "30m, 1h, 2d, 1w) or an ISO date/time (2025-01-31T14:00)", param=name)
        return when


# ---------------------------------------------------------------------------------------------- features


class _MapCache:
    """The map entries of one database, built once on a thread (the database does not change while open)."""

    def __init__(self) -> None:
        self._key: int | None = None
        self._entries: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()

    async def get(self, st: ServerState) -> dict[str, dict[str, Any]]:
        db = st.served.guard.db
        if self._key != id(db):
            async with self._lock:
                if self._key != id(db):
                    self._entries = await asyncio.to_thread(_map_entries, db)
                    self._key = id(db)
        return self._entries


def _short(text: str | None, limit: int = SHORT_EXPLANATION) -> str | None:
    if text is None or len(text) <= limit:
        return text
    return text[: limit - 1].rstrip() + "…"


def _num(value: float | None, digits: int = 4) -> float | None:
    return round(float(value), digits) if value is not None and math.isfinite(value) else None


def _map_entries(db: Any) -> dict[str, dict[str, Any]]:
    """id -> the feature's map entry, in (layer, latent) order."""
    out = {}
    for v in db.iter_features():
        out[v.id] = {
            "id": v.id, "layer": v.layer, "latent": v.latent, "x": _num(v.map_x, 5), "y": _num(v.map_y, 5),
            "domain": v.domain, "domains": v.domains,
            "concepts": list(dict.fromkeys(f"{c.level0}/{c.level1}" for c in v.concepts)),
            "explanation": _short(v.explanation), "explanation_status": v.explanation_status,
            "corr": _num(v.token_corr), "segment_corr": _num(v.segment_corr), "max_act": _num(v.max_act),
        }
    return out


def _card(v: Any, n_examples: int) -> dict[str, Any]:
    """The feature card: everything but the quiet examples, top contexts first."""
    order = {"top": 0, "level": 1}
    examples = sorted((e for e in v.examples if e.kind in order), key=lambda e: order[e.kind])
    return {
        "object": "safesail.feature", "id": v.id, "layer": v.layer, "latent": v.latent, "domain": v.domain,
        "domains": v.domains,
        "concepts": [{"level0": c.level0, "level1": c.level1, "precision": _num(c.precision),
                      "recall": _num(c.recall), "n_pairs": c.n_pairs} for c in v.concepts],
        "explanation": v.explanation, "explanation_status": v.explanation_status, "explainer": v.explainer,
        "explanation_detail": v.explanation_detail, "threshold": _num(v.threshold), "max_act": _num(v.max_act),
        "fire_rate": _num(v.fire_rate, 6), "x": _num(v.map_x, 5), "y": _num(v.map_y, 5),
        "corr": _num(v.token_corr), "segment_corr": _num(v.segment_corr), "simulator": v.simulator,
        "sp_score": _num(v.sp_score), "sp_method": v.sp_method,
        "simulation_scores": [{"method": s.method, "simulator": s.simulator, "corr": _num(s.corr),
                               "status": s.status} for s in v.simulation_scores],
        "examples_total": len(examples),
        "examples": [{"kind": e.kind, "tokens": list(e.tokens), "acts": [_num(a) or 0.0 for a in e.acts],
                      "max_act": _num(e.max_act), "source": e.source} for e in examples[:n_examples]],
    }


def _info(st: ServerState, entries: dict[str, dict[str, Any]]) -> dict[str, Any]:
    be = st.served
    db = be.guard.db
    policy = getattr(getattr(be, "guarded", None), "policy", None)
    rules = [{"name": r.name, "action": r.action, "description": r.description} for r in policy.rules] \
        if policy is not None else []
    per_domain: dict[str, int] = {}
    for e in entries.values():
        for d in e["domains"]:
            per_domain[d] = per_domain.get(d, 0) + 1
    config = getattr(be.guard.model, "config", None)
    return {
        "object": "safesail.info", "model": be.model_id, "mode": st.config.mode, "steering": st.config.mode == "local",
        "policy": {"name": be.policy_name, "rules": rules},
        "database": {"model": db.manifest.model.name, "site": db.site, "layers": db.layers, "features": len(entries),
                     "positioned": sum(e["x"] is not None for e in entries.values()),
                     "map_method": db.manifest.map_method, "per_domain": dict(sorted(per_domain.items()))},
        "model_layers": getattr(config, "num_hidden_layers", None),
        "domains": list(DOMAINS), "decisions": st.decisions, "keys": bool(st.keys.enabled),
        "started": int(st.started), "limits": {"max_tokens": st.config.limits.max_tokens,
                                               "default_max_tokens": st.config.limits.default_max_tokens},
    }


def _audit_row(row: Any) -> dict[str, Any]:
    d = row.to_dict()
    if isinstance(d.get("text"), str) and len(d["text"]) > MAX_AUDIT_TEXT:
        d["text"] = d["text"][:MAX_AUDIT_TEXT] + "…"
    return d


__all__ = ["install_ui", "DOMAINS"]
