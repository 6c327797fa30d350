"""``features.sqlite``: the SQL schema of the feature tables and how one feature becomes rows.

Tables: ``features`` (one row per feature: id ``"<layer>_<latent>"``, explanation and its explainer, headline
scores, threshold, map position), ``concepts``, ``examples`` (tokens, activations rounded to `ACT_DECIMALS`,
quantized levels), ``scores`` (every simulation score and the SpScore, with the scorer that made it) and the FTS5
index ``search`` over ids, explanations and concept names. `DatabaseWriter` (`safesail_neuron_db.writer`)
validates the records (`safesail_neuron_db.records`) and calls `write_features`; `NeuronDB`
(`safesail_neuron_db.database`) reads these tables back read-only. Adding a database field means a column in
`SCHEMA_SQL`, `FEATURE_COLUMNS` and `feature_row` here, a field of `FeatureView` there, and a `SCHEMA_VERSION`
bump in `safesail_neuron_db.manifest`.

Determinism: rows are inserted in (layer, latent) order into a fresh file with a fixed page size, the FTS index
is optimized and the file VACUUMed, so the same content gives a byte-identical file with the same SQLite library.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safesail_neuron_db.manifest import SCHEMA_VERSION
from safesail_neuron_db.records import Explanation, FeatureRecords, SimulationScore, SuperpositionScore

__all__ = [
    "APPLICATION_ID", "SQLITE_PAGE_SIZE", "ACT_DECIMALS", "SCHEMA_SQL", "FEATURE_COLUMNS", "PendingFeature",
    "feature_row", "score_rows", "write_features",
]  # fmt: skip

APPLICATION_ID = 0x5353_4E44  # "SSND" in the SQLite header, so `file`/tools can tell what this is
SQLITE_PAGE_SIZE = 4096
ACT_DECIMALS = 4
"""Decimals kept of each stored example activation."""

SCHEMA_SQL = """
CREATE TABLE features (
    id TEXT PRIMARY KEY NOT NULL,
    layer INTEGER NOT NULL,
    latent INTEGER NOT NULL,
    domain TEXT,
    explanation TEXT,
    explanation_status TEXT NOT NULL,
    explainer TEXT,
    explanation_detail TEXT NOT NULL,
    explanation_prompt_tokens INTEGER NOT NULL,
    explanation_completion_tokens INTEGER NOT NULL,
    threshold REAL NOT NULL,
    max_act REAL NOT NULL,
    fire_rate REAL NOT NULL,
    map_x REAL,
    map_y REAL,
    sp_score REAL,
    sp_status TEXT,
    sp_method TEXT,
    token_corr REAL,
    segment_corr REAL,
    simulator TEXT,
    UNIQUE (layer, latent)
);
CREATE TABLE concepts (
    feature_id TEXT NOT NULL REFERENCES features(id),
    rank INTEGER NOT NULL,
    level0 TEXT NOT NULL,
    level1 TEXT NOT NULL,
    precision REAL NOT NULL,
    recall REAL NOT NULL,
    n_pairs INTEGER NOT NULL,
    concept_fires INTEGER NOT NULL,
    deconcept_fires INTEGER NOT NULL,
    PRIMARY KEY (feature_id, rank)
) WITHOUT ROWID;
CREATE INDEX concepts_by_domain ON concepts (level0 COLLATE NOCASE, feature_id);
CREATE TABLE examples (
    feature_id TEXT NOT NULL REFERENCES features(id),
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL,
    level INTEGER NOT NULL,
    max_act REAL NOT NULL,
    source TEXT NOT NULL,
    tokens TEXT NOT NULL,
    acts TEXT NOT NULL,
    levels TEXT NOT NULL,
    PRIMARY KEY (feature_id, rank)
) WITHOUT ROWID;
CREATE TABLE scores (
    feature_id TEXT NOT NULL REFERENCES features(id),
    rank INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('token', 'segment', 'superposition')),
    scorer TEXT NOT NULL,
    value REAL,
    status TEXT NOT NULL,
    n_examples INTEGER NOT NULL,
    n_units INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    detail TEXT NOT NULL,
    PRIMARY KEY (feature_id, rank)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE search USING fts5(
    fid, explanation, concepts, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

FEATURE_COLUMNS = (
    "id", "layer", "latent", "domain", "explanation", "explanation_status", "explainer", "explanation_detail",
    "explanation_prompt_tokens", "explanation_completion_tokens", "threshold", "max_act", "fire_rate",
    "map_x", "map_y", "sp_score", "sp_status", "sp_method", "token_corr", "segment_corr", "simulator",
)  # fmt: skip


@dataclass
class PendingFeature:
    """One feature as `DatabaseWriter.add_feature` accepted it, waiting to be written."""

    rec: FeatureRecords
    explanation: Explanation | None
    scores: list[SimulationScore]
    sp: SuperpositionScore | None
    map_xy: tuple[float, float] | None
    threshold: float


def _dumps(value: Any) -> str:
    """Compact ASCII JSON for the list columns of ``examples``."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def write_features(path: Path, features: list[PendingFeature]) -> None:
    """Create ``path`` as a fresh features database holding ``features`` (give them in (layer, latent) order)."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute(f"PRAGMA page_size = {SQLITE_PAGE_SIZE}")
        con.execute("PRAGMA journal_mode = OFF")  # a throw-away temp file until the swap
        con.execute("PRAGMA synchronous = OFF")  # durability comes from the fsync before the swap
        con.executescript(SCHEMA_SQL)
        con.execute("BEGIN")
        placeholders = ", ".join("?" for _ in FEATURE_COLUMNS)
        for p in features:
            row = feature_row(p)
            cur = con.execute(f"INSERT INTO features ({', '.join(FEATURE_COLUMNS)}) VALUES ({placeholders})",
                              [row[c] for c in FEATURE_COLUMNS])
            fid = p.rec.feature_id
            con.executemany("INSERT INTO concepts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (fid, i, c.level0, c.level1, float(c.precision), float(c.recall), c.n_pairs,
                 c.concept_fires, c.deconcept_fires) for i, c in enumerate(p.rec.concepts)
            ])  # fmt: skip
            con.executemany("INSERT INTO examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", [
                (fid, i, e.kind, e.level, float(e.max_act), e.source, _dumps(list(e.tokens)),
                 _dumps([round(float(a), ACT_DECIMALS) for a in e.acts]), _dumps([int(v) for v in e.levels]))
                for i, e in enumerate(p.rec.examples)
            ])  # fmt: skip
            con.executemany("INSERT INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", score_rows(p))
            concepts_text = " ; ".join(f"{c.level0} {c.level1}" for c in p.rec.concepts)
            con.execute("INSERT INTO search (rowid, fid, explanation, concepts) VALUES (?, ?, ?, ?)",
                        (cur.lastrowid, fid, row["explanation"] or "", concepts_text))
        con.execute("COMMIT")
        con.execute("INSERT INTO search (search) VALUES ('optimize')")
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        con.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        con.execute("VACUUM")
    finally:
        con.close()


def feature_row(p: PendingFeature) -> dict[str, Any]:
    """The ``features`` row of one feature: the best concept's domain, the explanation, and the first ok token-
    and segment-level scores as headline columns (with the simulator(s) behind them)."""
    rec, e, sp = p.rec, p.explanation, p.sp
    best = min(rec.concepts, key=lambda c: (-c.precision, -c.recall, c.level0, c.level1), default=None)
    headline: dict[str, SimulationScore] = {}
    for s in p.scores:
        if s.status == "ok" and s.method not in headline:
            headline[s.method] = s
    simulators = sorted({s.simulator for s in headline.values()})
    return {
        "id": rec.feature_id,
        "layer": rec.layer,
        "latent": rec.latent,
        "domain": best.level0 if best else None,
        "explanation": e.text if e else None,
        "explanation_status": e.status if e else "skipped",
        "explainer": e.method if e else None,
        "explanation_detail": e.detail if e else "",
        "explanation_prompt_tokens": e.prompt_tokens if e else 0,
        "explanation_completion_tokens": e.completion_tokens if e else 0,
        "threshold": p.threshold,
        "max_act": float(rec.max_act),
        "fire_rate": float(rec.fire_rate),
        "map_x": p.map_xy[0] if p.map_xy else None,
        "map_y": p.map_xy[1] if p.map_xy else None,
        "sp_score": sp.value if sp else None,
        "sp_status": sp.status if sp else None,
        "sp_method": sp.method if sp else None,
        "token_corr": headline["token"].corr if "token" in headline else None,
        "segment_corr": headline["segment"].corr if "segment" in headline else None,
        "simulator": "; ".join(simulators) if simulators else None,
    }


def score_rows(p: PendingFeature) -> list[tuple[Any, ...]]:
    """The ``scores`` rows of one feature: its simulation scores in order, then its SpScore (if any)."""
    fid = p.rec.feature_id
    rows: list[tuple[Any, ...]] = [
        (fid, i, s.method, s.simulator, s.corr, s.status, s.n_examples, s.n_units, s.prompt_tokens,
         s.generated_tokens, s.detail)
        for i, s in enumerate(p.scores)
    ]  # fmt: skip
    if p.sp is not None:
        sp = p.sp
        rows.append((fid, len(rows), "superposition", sp.method, sp.value, sp.status, 0, 0, sp.prompt_tokens,
                     sp.completion_tokens, sp.detail))
    return rows
