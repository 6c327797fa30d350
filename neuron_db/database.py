"""`NeuronDB`: read-only access to a database directory written by `DatabaseWriter`.

How it connects: `load_manifest` (`safesail_neuron_db.manifest`) and the checksums come first; the feature
tables (`safesail_neuron_db.features_sqlite`) come back as `FeatureView`s built from the records of
`safesail_neuron_db.records`; encoder rows and the competition file are read by `safesail_neuron_db.encoders`
and `safesail_neuron_db.competition`. The guard (`safesail_guard.runtime`), the CLI's ``safesail db`` and the
pipeline's reports are the readers; this module imports neither of them.

SQLite is opened with ``mode=ro&immutable=1``: no locks, no journal, nothing written - any number of
processes can read at once, also from a read-only filesystem (an installed wheel). The database must therefore
never change while open; `DatabaseWriter.finish` replaces whole directories, so an open reader keeps the old
files (on POSIX) until it reopens.
"""

from __future__ import annotations

import difflib
import json
import re
import sqlite3
import statistics
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safesail_neuron_db.encoders import read_encoder
from safesail_neuron_db.errors import (
    ChecksumError,
    CorruptDatabaseError,
    FeatureNotFoundError,
    LayerNotFoundError,
    ModelMismatchError,
    SchemaVersionError,
)
from safesail_neuron_db.fileio import sha256_file
from safesail_neuron_db.manifest import (
    COMPETITION_FILE,
    DETECTION_HEAD_FILE,
    ENCODERS_FILE,
    FEATURES_FILE,
    OPTIONAL_FILES,
    SCHEMA_VERSION,
    Manifest,
    load_manifest,
)
from safesail_neuron_db.records import (
    ActivationExample,
    ConceptHit,
    Explanation,
    FeatureRecords,
    SimulationScore,
    SuperpositionScore,
    parse_feature_id,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["NeuronDB", "FeatureView", "SearchHit", "default_database_path", "DEFAULT_DATABASE"]

DEFAULT_DATABASE = "smollm2-135m-instruct"


def default_database_path(name: str = DEFAULT_DATABASE) -> Path:
    """Where the shipped database lives: ``<safesail_neuron_db package>/data/<name>``."""
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"database name must be a plain directory name, got {name!r}")
    return Path(__file__).resolve().parent / "data" / name


@dataclass
class FeatureView:
    """Everything the database holds about one feature."""

    id: str
    layer: int
    latent: int
    domain: str | None  # level0 of the best concept (by precision, then recall)
    explanation: str | None  # None unless explanation_status == "ok"
    explanation_status: str
    explainer: str | None  # None when the build gave no explanation at all
    explanation_detail: str
    explanation_prompt_tokens: int
    explanation_completion_tokens: int
    threshold: float
    max_act: float
    fire_rate: float
    map_x: float | None
    map_y: float | None
    sp_score: float | None
    sp_status: str | None
    sp_method: str | None
    token_corr: float | None  # first ok token-level score
    segment_corr: float | None  # first ok segment-level score
    simulator: str | None  # simulator(s) behind token_corr / segment_corr
    concepts: list[ConceptHit] = field(default_factory=list)
    examples: list[ActivationExample] = field(default_factory=list)
    simulation_scores: list[SimulationScore] = field(default_factory=list)
    superposition: SuperpositionScore | None = None

    @property
    def domains(self) -> list[str]:
        """All level-0 concepts of the feature, sorted."""
        return sorted({c.level0 for c in self.concepts})

    @property
    def top(self) -> list[ActivationExample]:
        """The highest-activation examples."""
        return [e for e in self.examples if e.kind == "top"]

    def explanation_record(self) -> Explanation | None:
        """The stored `Explanation`, or None when the build gave none."""
        if self.explainer is None:
            return None
        return Explanation(self.id, self.explanation, self.explanation_status, self.explainer,  # type: ignore[arg-type]
                           self.explanation_detail, self.explanation_prompt_tokens, self.explanation_completion_tokens)

    def records(self) -> FeatureRecords:
        """The stored `FeatureRecords` (activations rounded to 4 decimals)."""
        return FeatureRecords(self.id, self.layer, self.latent, list(self.concepts), self.max_act, self.fire_rate,
                              list(self.examples))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field (nested records as dicts)."""
        return asdict(self)


@dataclass(frozen=True)
class SearchHit:
    """One search result; ``score`` is the negated bm25 rank (higher = better match)."""

    id: str
    layer: int
    latent: int
    domain: str | None
    explanation: str | None
    explanation_status: str
    concepts: str  # "level0 level1 ; ..." as indexed
    token_corr: float | None
    score: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


_WORD = re.compile(r"\w", re.UNICODE)


def fts_query(text: str) -> str | None:
    """Turn free user text into a safe FTS5 query: each word quoted as a string, words OR-ed (bm25 ranks
    documents matching more words first); ``word*`` keeps prefix matching. None when no word is left."""
    parts: list[str] = []
    for term in text.replace("\x00", " ").split():  # SQLite ends a query string at NUL
        prefix = term.endswith("*")
        core = term.rstrip("*")
        if not _WORD.search(core):
            continue  # pure punctuation: nothing the tokenizer would index
        quoted = '"' + core.replace('"', '""') + '"'
        parts.append(quoted + " *" if prefix else quoted)
    return " OR ".join(parts) if parts else None


class NeuronDB:
    """A read-only neuron database. Use `NeuronDB.open`; also a context manager."""

    def __init__(self, path: Path, manifest: Manifest, con: sqlite3.Connection) -> None:
        self.path = path
        self.manifest = manifest
        self._con = con
        self._lock = threading.Lock()
        self._encoder_cache: dict[int, dict[str, Tensor]] = {}

    # ------------------------------------------------------------------ opening
    @classmethod
    def open(
        cls,
        path: Path | str | None = None,
        *,
        expected_fingerprint: str | None = None,
        verify: bool = True,
        expected_name: str | None = None,
    ) -> NeuronDB:
        """Open a database directory (default: the shipped one) after checking manifest, files and model.

        ``verify=False`` skips hashing the files (existence and size are still checked). ``expected_name`` is
        only used to name the in-use model in a `ModelMismatchError`.
        """
        directory = Path(path) if path is not None else default_database_path()
        manifest = load_manifest(directory)
        for name in sorted(manifest.files):
            info = manifest.files[name]
            file = directory / name
            if not file.is_file():
                raise ChecksumError(f"{file}: file missing from the database; rebuild it with `safesail build-db`")
            size = file.stat().st_size
            if size != info.bytes:
                raise ChecksumError(f"{file}: {size} bytes, manifest says {info.bytes} (truncated or replaced); "
                                    "rebuild the database with `safesail build-db`")
        if expected_fingerprint is not None and expected_fingerprint != manifest.model.fingerprint:
            theirs = f"'{expected_name}' " if expected_name else ""
            raise ModelMismatchError(
                f"{directory} was built for model '{manifest.model.name}' (fingerprint "
                f"{manifest.model.fingerprint[:16]}), but the model in use {theirs}has fingerprint "
                f"{expected_fingerprint[:16]}; use a database built for this model (`safesail build-db`)"
            )
        if verify:
            for name in sorted(manifest.files):
                digest = sha256_file(directory / name)
                if digest != manifest.files[name].sha256:
                    raise ChecksumError(f"{directory / name}: sha256 {digest[:16]}... does not match the manifest "
                                        f"({manifest.files[name].sha256[:16]}...); the file is corrupt - rebuild "
                                        "the database with `safesail build-db`")
        uri = (directory / FEATURES_FILE).resolve().as_uri() + "?mode=ro&immutable=1"
        con = sqlite3.connect(uri, uri=True, check_same_thread=False)  # lazy: does not read the file yet
        con.row_factory = sqlite3.Row
        try:
            version = con.execute("PRAGMA user_version").fetchone()[0]
            con.execute("SELECT count(*) FROM features").fetchone()
        except sqlite3.DatabaseError as e:
            con.close()
            raise CorruptDatabaseError(f"{directory / FEATURES_FILE}: not a readable database ({e})") from e
        if version != SCHEMA_VERSION:
            con.close()
            raise SchemaVersionError(f"{directory / FEATURES_FILE}: schema version {version}, expected "
                                     f"{SCHEMA_VERSION}; rebuild the database with `safesail build-db`")
        return cls(directory, manifest, con)

    def close(self) -> None:
        """Close the SQLite connection (idempotent)."""
        self._con.close()
        self._encoder_cache.clear()

    def __enter__(self) -> NeuronDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NeuronDB({str(self.path)!r}, model={self.manifest.model.name!r}, site={self.site!r})"

    # ------------------------------------------------------------------ properties
    @property
    def fingerprint(self) -> str:
        """Identity hash of the model the database was built for."""
        return self.manifest.model.fingerprint

    @property
    def layers(self) -> list[int]:
        """Layers with features, ascending."""
        return list(self.manifest.layers)

    @property
    def site(self) -> str:
        """Hook site, e.g. ``mlp_out``."""
        return self.manifest.site

    # ------------------------------------------------------------------ queries
    def _query(self, sql: str, params: tuple | list = (), *, raw: bool = False) -> list[sqlite3.Row]:
        """Run one read query under the connection lock; SQLite errors become `CorruptDatabaseError` unless raw."""
        with self._lock:
            try:
                return self._con.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as e:
                if raw:
                    raise
                raise CorruptDatabaseError(f"{self.path / FEATURES_FILE}: {e}") from e

    def info(self) -> dict[str, Any]:
        """Summary: model, site, layers, counts per layer/domain, explanation statuses, score medians, files."""
        m = self.manifest
        per_layer = {str(r["layer"]): r["n"] for r in
                     self._query("SELECT layer, count(*) AS n FROM features GROUP BY layer ORDER BY layer")}
        per_domain = {r["level0"]: r["n"] for r in self._query(
            "SELECT level0, count(DISTINCT feature_id) AS n FROM concepts GROUP BY level0 ORDER BY level0")}
        statuses = {r["explanation_status"]: r["n"] for r in self._query(
            "SELECT explanation_status, count(*) AS n FROM features GROUP BY 1 ORDER BY 1")}
        cols = self._query("SELECT token_corr, segment_corr, sp_score FROM features")
        score_statuses = {f"{r['kind']}:{r['status']}": r["n"] for r in self._query(
            "SELECT kind, status, count(*) AS n FROM scores GROUP BY 1, 2 ORDER BY 1, 2")}
        scorers = sorted({r["scorer"] for r in self._query("SELECT DISTINCT scorer FROM scores")})

        def median(key: str) -> float | None:
            vals = [r[key] for r in cols if r[key] is not None]
            return statistics.median(vals) if vals else None

        return {
            "path": str(self.path),
            "schema_version": m.schema_version,
            "created_by": m.created_by,
            "model": m.model.model_dump(),
            "site": m.site,
            "layers": list(m.layers),
            "seed": m.seed,
            "map_method": m.map_method,
            "counts": {"features": sum(per_layer.values()), "per_layer": per_layer, "per_domain": per_domain},
            "explanations": statuses,
            "scores": {
                "median_token_corr": median("token_corr"),
                "median_segment_corr": median("segment_corr"),
                "median_sp_score": median("sp_score"),
                "n_token_corr": sum(r["token_corr"] is not None for r in cols),
                "n_segment_corr": sum(r["segment_corr"] is not None for r in cols),
                "statuses": score_statuses,
                "scorers": scorers,
            },
            "build": m.build,
            "detection_head": self.detection_head_spec(),
            "files": {k: v.model_dump() for k, v in m.files.items()},
        }

    def feature_ids(self, *, layer: int | None = None, domain: str | None = None) -> list[str]:
        """Feature ids in (layer, latent) order; ``domain`` matches any concept's level0 (case-insensitive)."""
        where, params = self._filters(layer, domain)
        rows = self._query(f"SELECT f.id FROM features f WHERE {where} ORDER BY f.layer, f.latent", params)
        return [r["id"] for r in rows]

    @staticmethod
    def _filters(layer: int | None, domain: str | None) -> tuple[str, list[Any]]:
        clauses, params = ["1"], []
        if layer is not None:
            clauses.append("f.layer = ?")
            params.append(int(layer))
        if domain is not None:
            clauses.append("EXISTS (SELECT 1 FROM concepts c WHERE c.feature_id = f.id "
                           "AND c.level0 = ? COLLATE NOCASE)")
            params.append(domain)
        return " AND ".join(clauses), params

    def __contains__(self, fid: object) -> bool:
        return isinstance(fid, str) and bool(self._query("SELECT 1 FROM features WHERE id = ?", (fid.strip(),)))

    def __len__(self) -> int:
        return int(self._query("SELECT count(*) AS n FROM features")[0]["n"])

    def get(self, fid: str) -> FeatureView:
        """Everything about one feature; `FeatureNotFoundError` (with near ids) when there is none."""
        key = fid.strip() if isinstance(fid, str) else fid
        rows = self._query("SELECT * FROM features WHERE id = ?", (key,))
        if not rows:
            raise FeatureNotFoundError(self._not_found_message(str(fid)))
        view = FeatureView(**dict(rows[0]))
        view.concepts = [
            ConceptHit(r["level0"], r["level1"], r["precision"], r["recall"], r["n_pairs"], r["concept_fires"],
                       r["deconcept_fires"])
            for r in self._query("SELECT * FROM concepts WHERE feature_id = ? ORDER BY rank", (key,))
        ]
        view.examples = [
            ActivationExample(json.loads(r["tokens"]), json.loads(r["acts"]), json.loads(r["levels"]),
                              r["max_act"], r["kind"], r["level"], r["source"])
            for r in self._query("SELECT * FROM examples WHERE feature_id = ? ORDER BY rank", (key,))
        ]
        for r in self._query("SELECT * FROM scores WHERE feature_id = ? ORDER BY rank", (key,)):
            if r["kind"] == "superposition":
                view.superposition = SuperpositionScore(key, r["value"], r["status"], r["scorer"], r["detail"],
                                                        r["prompt_tokens"], r["completion_tokens"])
            else:
                view.simulation_scores.append(SimulationScore(
                    key, r["kind"], r["scorer"], r["value"], r["status"], r["n_examples"], r["n_units"],
                    r["prompt_tokens"], r["completion_tokens"], r["detail"]))
        return view

    def iter_features(self, *, layer: int | None = None, domain: str | None = None) -> Iterator[FeatureView]:
        """`get` for every matching feature, in (layer, latent) order."""
        for fid in self.feature_ids(layer=layer, domain=domain):
            yield self.get(fid)

    def _not_found_message(self, fid: str) -> str:
        ids = self.feature_ids()
        near: list[str] = []
        try:
            layer, latent = parse_feature_id(fid)
        except ValueError:
            hint = " (feature ids look like '<layer>_<latent>', e.g. '14_4141')"
        else:
            hint = ""
            same = [(abs(lat - latent), i) for i in ids for ly, lat in [parse_feature_id(i)] if ly == layer]
            near.extend(i for _, i in sorted(same)[:3])
        for i in difflib.get_close_matches(fid.strip(), ids, n=5, cutoff=0.5):
            if i not in near:
                near.append(i)
        suggestion = f"; near ids: {', '.join(near[:5])}" if near else f"; layers here: {self.layers}"
        return f"no feature {fid!r} in {self.path}{hint}{suggestion}"

    def search(self, query: str, *, limit: int = 20, layer: int | None = None,
               domain: str | None = None) -> list[SearchHit]:
        """Full-text search over feature ids, explanations and concept names, best bm25 match first.

        Any text is safe: words are quoted, so FTS5 operators and punctuation are taken literally. An empty
        query is a ValueError; a query with no words (only punctuation) finds nothing.
        """
        if not isinstance(query, str) or not query.strip():
            raise ValueError("search query is empty; give some words, e.g. 'adult websites'")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"limit must be a positive integer, got {limit!r}")
        match = fts_query(query)
        if match is None:
            return []
        where, params = self._filters(layer, domain)
        sql = (
            "SELECT f.id, f.layer, f.latent, f.domain, f.explanation, f.explanation_status, s.concepts, "
            "f.token_corr, bm25(search, 10.0, 2.0, 1.0) AS rank_ FROM search s JOIN features f ON f.rowid = s.rowid "
            f"WHERE search MATCH ? AND {where} ORDER BY rank_, f.layer, f.latent LIMIT ?"
        )
        try:
            rows = self._query(sql, [match, *params, limit], raw=True)
        except sqlite3.OperationalError as e:  # defensive: quoting should make this unreachable
            raise ValueError(f"cannot search for {query!r}: {e}") from e
        except sqlite3.DatabaseError as e:
            raise CorruptDatabaseError(f"{self.path / FEATURES_FILE}: {e}") from e
        return [SearchHit(r["id"], r["layer"], r["latent"], r["domain"], r["explanation"], r["explanation_status"],
                          r["concepts"], r["token_corr"], -float(r["rank_"])) for r in rows]

    # ------------------------------------------------------------------ encoders
    def encoder(self, layer: int) -> dict[str, Tensor]:
        """``{latents, W_enc, b_enc, threshold, W_dec, b_dec}`` of one layer (rows in ascending latent order)."""
        if layer not in self.manifest.layers:
            raise LayerNotFoundError(f"no encoder for layer {layer} in {self.path}; layers here: {self.layers}")
        if layer not in self._encoder_cache:
            self._encoder_cache[layer] = self._load_encoder(layer)
        return dict(self._encoder_cache[layer])

    def _load_encoder(self, layer: int) -> dict[str, Tensor]:
        return read_encoder(self.path / ENCODERS_FILE, layer, self.fingerprint)

    # ------------------------------------------------------------ optional files
    def has_file(self, name: str) -> bool:
        """True when the manifest lists the optional file ``name`` (see `OPTIONAL_FILES`)."""
        return name in self.manifest.files

    def extra_text(self, name: str) -> str | None:
        """Text of an optional file (e.g. ``risk_head.json``), None when the database has none."""
        if name not in OPTIONAL_FILES:
            raise ValueError(f"{name!r} is not an optional database file; known: {', '.join(OPTIONAL_FILES)}")
        if not self.has_file(name):
            return None
        return (self.path / name).read_text(encoding="utf-8")

    def detection_head_spec(self) -> dict[str, Any] | None:
        """The detection head's JSON spec (bias, aggregation, calibration, fit report) read from the file's
        header without loading tensors (or torch); None when the database has no head."""
        if not self.has_file(DETECTION_HEAD_FILE):
            return None
        path = self.path / DETECTION_HEAD_FILE
        try:
            with path.open("rb") as f:
                n = int.from_bytes(f.read(8), "little")
                header = json.loads(f.read(n))
            spec = json.loads(header["__metadata__"]["head"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CorruptDatabaseError(f"{path}: cannot read the detection head's header ({e})") from e
        spec["latents"] = {k.split(".")[1]: v["shape"][0] for k, v in header.items() if k.endswith(".latents")}
        return spec

    def detection_head(self) -> Any | None:
        """The detection head (`safesail_neuron_db.detection_head.DetectionHeadFile`), None if not shipped;
        `CorruptDatabaseError` when the file is unreadable, built for another model, or names a layer or
        feature the database does not hold."""
        if not self.has_file(DETECTION_HEAD_FILE):
            return None
        from safesail_neuron_db.detection_head import read_head  # imports torch

        head = read_head(self.path / DETECTION_HEAD_FILE, self.fingerprint)
        for L, hl in head.layers.items():
            if L not in self.manifest.layers:
                raise CorruptDatabaseError(f"{self.path / DETECTION_HEAD_FILE}: layer {L} is not in the database")
            missing = [f for f in hl.feature_ids() if f not in self]
            if missing:
                raise CorruptDatabaseError(f"{self.path / DETECTION_HEAD_FILE}: weighted latents are not database "
                                           f"features: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        return head

    def competition(self, layer: int) -> dict[str, Tensor] | None:
        """All encoder rows of ``layer`` for exact TopK firing: ``{W_enc (fp16), b_enc, k}``; None if not shipped."""
        if not self.has_file(COMPETITION_FILE):
            return None
        if layer not in self.manifest.layers:
            raise LayerNotFoundError(f"no encoder for layer {layer} in {self.path}; layers here: {self.layers}")
        from safesail_neuron_db.competition import read_competition  # imports torch

        return read_competition(self.path / COMPETITION_FILE, layer, self.fingerprint)
