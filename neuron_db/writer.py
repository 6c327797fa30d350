"""`DatabaseWriter`: collect encoders and feature records, validate them, then write a database directory in one
atomic step.

Layout written by `finish` (see `safesail_neuron_db.manifest` for the manifest fields)::

    <directory>/manifest.json           model, site, layers, SAE configs, build params, counts, file checksums
    <directory>/features.sqlite         features / concepts / examples / scores tables + FTS5 index `search`
    <directory>/encoders.safetensors    layers.<L>.{latents, W_enc, b_enc, threshold, W_dec, b_dec}

This module holds the checks (every record is validated when added, and the whole set once more before
writing: ids, finite numbers, concepts, statuses, one encoder row per feature, no absolute paths in stored
configs). Each file has its own module: `safesail_neuron_db.features_sqlite` (tables and rows),
`safesail_neuron_db.encoders` (encoder rows), `safesail_neuron_db.manifest`; `safesail_neuron_db.publish` swaps
the finished directory into place. The records come from `safesail_neuron_db.records`; the pipeline's
`safesail build-db` (`safesail_training.build_db`) is the caller.

Determinism: rows are inserted in (layer, latent) order, files are serialized canonically and nothing time- or
path-dependent is stored, so the same content gives byte-identical files (with the same SQLite library).

Atomicity: everything is written into a temporary sibling directory, fsynced, then swapped in. A crash or error
leaves either the old database or the new one at ``directory``, never a half-written one.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safesail_neuron_db.encoders import write_encoders
from safesail_neuron_db.features_sqlite import PendingFeature, write_features
from safesail_neuron_db.fileio import sha256_file
from safesail_neuron_db.manifest import (
    ENCODERS_FILE,
    FEATURES_FILE,
    SCHEMA_VERSION,
    Counts,
    FileInfo,
    Manifest,
    ModelInfo,
    created_by,
)
from safesail_neuron_db.publish import check_replaceable, publish
from safesail_neuron_db.records import (
    ConceptHit,
    Explanation,
    FeatureRecords,
    SimulationScore,
    SuperpositionScore,
    feature_id,
    parse_feature_id,
)

if TYPE_CHECKING:
    from torch import Tensor

__all__ = ["DatabaseWriter"]


def _finite(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)


def _json_ready(name: str, value: Any) -> Any:
    """Round-trip through strict JSON so the manifest is guaranteed to serialize; a clear error otherwise."""
    try:
        return json.loads(json.dumps(value, allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be JSON-serializable (plain str/int/float/bool/list/dict): {e}") from e


def _reject_absolute_paths(name: str, value: Any) -> None:
    """Databases must not depend on the build machine: refuse absolute paths inside stored configs."""
    if isinstance(value, dict):
        for k, v in value.items():
            _reject_absolute_paths(f"{name}[{k!r}]", v)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _reject_absolute_paths(f"{name}[{i}]", v)
    elif isinstance(value, str) and (value.startswith(("/", "\\", "~/")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        raise ValueError(f"{name} = {value!r} looks like an absolute path; store it relative or drop it "
                         "(a database must not depend on the machine it was built on)")


class DatabaseWriter:
    """Collects one model + hook site's encoders and feature records, and writes them with `finish`."""

    def __init__(
        self,
        directory: Path,
        *,
        model: dict,
        site: str,
        sae_configs: dict[int, dict],
        build: dict,
        seed: int,
        map_method: str = "none",
    ) -> None:
        """``model`` needs ``name``, ``source`` and ``fingerprint`` (other keys such as ``path`` are dropped)."""
        self.directory = Path(directory)
        missing = [k for k in ("name", "source", "fingerprint") if not isinstance(model.get(k), str)]
        if missing or not model["name"] or not model["fingerprint"]:
            raise ValueError(f"model must give non-empty string 'name', 'source' and 'fingerprint'; got {model!r}")
        self._model = ModelInfo(name=model["name"], source=model["source"], fingerprint=model["fingerprint"])
        if not isinstance(site, str) or not site:
            raise ValueError(f"site must be a non-empty string such as 'mlp_out', got {site!r}")
        self._site = site
        self._sae = {int(layer): _json_ready(f"sae_configs[{layer}]", cfg) for layer, cfg in sae_configs.items()}
        self._build = _json_ready("build", build)
        _reject_absolute_paths("build", self._build)
        for layer, cfg in self._sae.items():
            _reject_absolute_paths(f"sae_configs[{layer}]", cfg)
        if not isinstance(self._build, dict):
            raise ValueError("build must be a dict of build parameters")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self._seed = seed
        self._map_method = map_method
        self._encoders: dict[int, dict[str, Tensor]] = {}
        self._features: dict[str, PendingFeature] = {}
        self._finished = False

    # ------------------------------------------------------------------ collecting
    def add_encoder(
        self,
        layer: int,
        *,
        latents: Tensor,
        W_enc: Tensor,
        b_enc: Tensor,
        threshold: Tensor,
        W_dec: Tensor,
        b_dec: Tensor,
    ) -> None:
        """Add the encoder/decoder rows of one layer's selected latents (rows in the order of ``latents``).

        Rows are re-ordered to ascending latent; weights are stored as float32, latents as int64.
        """
        import torch

        if layer in self._encoders:
            raise ValueError(f"layer {layer}: encoder added twice")
        if layer not in self._sae:
            raise ValueError(f"layer {layer}: no SAE config given for it (sae_configs has {sorted(self._sae)})")
        given = {"latents": latents, "W_enc": W_enc, "b_enc": b_enc, "threshold": threshold, "W_dec": W_dec, "b_dec": b_dec}
        for name, t in given.items():
            if not isinstance(t, torch.Tensor):
                raise ValueError(f"layer {layer}: {name} must be a torch.Tensor, got {type(t).__name__}")
        if latents.ndim != 1 or latents.dtype.is_floating_point or latents.dtype == torch.bool:
            raise ValueError(f"layer {layer}: latents must be a 1-D integer tensor, got {latents.dtype} {tuple(latents.shape)}")
        n = latents.shape[0]
        if n == 0:
            raise ValueError(f"layer {layer}: latents is empty")
        if W_enc.ndim != 2 or W_enc.shape[0] != n:
            raise ValueError(f"layer {layer}: W_enc must be [n_latents={n}, d_in], got {tuple(W_enc.shape)}")
        d_in = W_enc.shape[1]
        expected = {"b_enc": (n,), "threshold": (n,), "W_dec": (n, d_in), "b_dec": (d_in,)}
        for name, shape in expected.items():
            t = given[name]
            if tuple(t.shape) != shape:
                raise ValueError(f"layer {layer}: {name} must have shape {list(shape)}, got {list(t.shape)}")
        for name in ("W_enc", "b_enc", "threshold", "W_dec", "b_dec"):
            t = given[name]
            if not t.dtype.is_floating_point:
                raise ValueError(f"layer {layer}: {name} must be a floating-point tensor, got {t.dtype}")
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"layer {layer}: {name} contains NaN or infinite values")
        lat = latents.detach().cpu().to(torch.int64)
        if bool((lat < 0).any()):
            raise ValueError(f"layer {layer}: latents must be >= 0")
        order = torch.argsort(lat, stable=True)
        lat = lat[order]
        if n > 1 and bool((lat[1:] == lat[:-1]).any()):
            dup = sorted({int(v) for v in lat[1:][lat[1:] == lat[:-1]]})
            raise ValueError(f"layer {layer}: duplicate latents {dup[:10]}")

        def f32(t: Tensor) -> Tensor:
            return t.detach().cpu().to(torch.float32).contiguous()

        self._encoders[layer] = {
            "latents": lat.contiguous(),
            "W_enc": f32(W_enc)[order].contiguous(),
            "b_enc": f32(b_enc)[order].contiguous(),
            "threshold": f32(threshold)[order].contiguous(),
            "W_dec": f32(W_dec)[order].contiguous(),
            "b_dec": f32(b_dec),
        }

    def add_feature(
        self,
        rec: FeatureRecords,
        *,
        explanation: Explanation | None,
        scores: list[SimulationScore],
        sp: SuperpositionScore | None,
        map_xy: tuple[float, float] | None,
        threshold: float,
    ) -> None:
        """Add one feature with its explanation, simulation scores, SpScore, map position and firing threshold."""
        fid = rec.feature_id
        if parse_feature_id(fid) != (rec.layer, rec.latent):
            raise ValueError(f"feature {fid!r}: id does not match layer {rec.layer} / latent {rec.latent} "
                             f"(expected {feature_id(rec.layer, rec.latent)!r})")
        if fid in self._features:
            raise ValueError(f"feature {fid}: added twice (duplicate feature id)")
        _finite(f"{fid}: max_act", rec.max_act)
        _finite(f"{fid}: fire_rate", rec.fire_rate)
        _finite(f"{fid}: threshold", threshold)
        if map_xy is not None:
            if len(map_xy) != 2:
                raise ValueError(f"{fid}: map_xy must be (x, y), got {map_xy!r}")
            map_xy = (_finite(f"{fid}: map_x", map_xy[0]), _finite(f"{fid}: map_y", map_xy[1]))
        self._check_concepts(fid, rec.concepts)
        for i, ex in enumerate(rec.examples):
            if not (len(ex.tokens) == len(ex.acts) == len(ex.levels)):
                raise ValueError(f"{fid}: example {i} has {len(ex.tokens)} tokens, {len(ex.acts)} acts, "
                                 f"{len(ex.levels)} levels (must be equal)")
            _finite(f"{fid}: example {i} max_act", ex.max_act)
            for a in ex.acts:
                _finite(f"{fid}: example {i} activation", a)
        if explanation is not None:
            self._check_explanation(fid, explanation)
        for s in scores:
            self._check_simulation(fid, s)
        if sp is not None:
            self._check_status_value(fid, "superposition score", sp.feature_id, sp.status, sp.value)
        self._features[fid] = PendingFeature(rec, explanation, list(scores), sp, map_xy, float(threshold))

    @staticmethod
    def _check_concepts(fid: str, concepts: list[ConceptHit]) -> None:
        seen: set[tuple[str, str]] = set()
        for c in concepts:
            key = (c.level0, c.level1)
            if key in seen:
                raise ValueError(f"{fid}: concept {c.level0}/{c.level1} listed twice")
            seen.add(key)
            _finite(f"{fid}: concept precision", c.precision)
            _finite(f"{fid}: concept recall", c.recall)

    @staticmethod
    def _check_explanation(fid: str, e: Explanation) -> None:
        if e.feature_id != fid:
            raise ValueError(f"{fid}: explanation is for feature {e.feature_id!r}")
        if e.status == "ok" and not (isinstance(e.text, str) and e.text.strip()):
            raise ValueError(f"{fid}: explanation status 'ok' needs a non-empty text")
        if e.status != "ok" and e.text is not None:
            raise ValueError(f"{fid}: explanation with status {e.status!r} must have text None")
        if not e.method:
            raise ValueError(f"{fid}: explanation method (the explainer) is empty")

    @classmethod
    def _check_simulation(cls, fid: str, s: SimulationScore) -> None:
        if s.method not in ("token", "segment"):
            raise ValueError(f"{fid}: simulation method must be 'token' or 'segment', got {s.method!r}")
        cls._check_status_value(fid, f"{s.method} score", s.feature_id, s.status, s.corr)

    @staticmethod
    def _check_status_value(fid: str, what: str, owner: str, status: str, value: float | None) -> None:
        if owner != fid:
            raise ValueError(f"{fid}: {what} is for feature {owner!r}")
        if status == "ok":
            _finite(f"{fid}: {what} value", value)
        elif value is not None:
            raise ValueError(f"{fid}: {what} with status {status!r} must have value None")

    # ------------------------------------------------------------------ writing
    def finish(self) -> Path:
        """Write the database into a temporary sibling directory, fsync it and swap it in at ``directory``."""
        if self._finished:
            raise ValueError("finish() was already called on this writer")
        self._check_complete()
        target = self.directory.absolute()
        target.parent.mkdir(parents=True, exist_ok=True)
        check_replaceable(target)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-", dir=target.parent))
        try:
            write_features(tmp / FEATURES_FILE, self._sorted())
            write_encoders(tmp / ENCODERS_FILE, self._encoders, self._model.fingerprint)
            files = {
                name: FileInfo(sha256=sha256_file(tmp / name, fsync=True), bytes=(tmp / name).stat().st_size)
                for name in (FEATURES_FILE, ENCODERS_FILE)
            }
            publish(tmp, target, self._manifest(files).to_json())
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._finished = True
        return self.directory

    def _check_complete(self) -> None:
        if not self._features:
            raise ValueError("no features were added; a database needs at least one feature")
        by_layer: dict[int, set[int]] = {}
        for p in self._features.values():
            by_layer.setdefault(p.rec.layer, set()).add(p.rec.latent)
        for layer in sorted(set(by_layer) | set(self._encoders)):
            if layer not in self._encoders:
                raise ValueError(f"layer {layer} has features but no encoder; call add_encoder({layer}, ...) first")
            enc_latents = set(self._encoders[layer]["latents"].tolist())
            feats = by_layer.get(layer, set())
            no_rows = sorted(feats - enc_latents)
            if no_rows:
                ids = [feature_id(layer, lat) for lat in no_rows[:10]]
                raise ValueError(f"features {ids} have no row in the layer {layer} encoder")
            no_feature = sorted(enc_latents - feats)
            if no_feature:
                ids = [feature_id(layer, lat) for lat in no_feature[:10]]
                raise ValueError(f"layer {layer} encoder has rows without a feature record: {ids}; "
                                 "pass only the rows of the selected features")
        rows = {layer: {lat: i for i, lat in enumerate(enc["latents"].tolist())} for layer, enc in self._encoders.items()}
        for p in self._features.values():
            stored = float(self._encoders[p.rec.layer]["threshold"][rows[p.rec.layer][p.rec.latent]])
            if abs(stored - p.threshold) > 1e-6 * max(1.0, abs(p.threshold)):
                raise ValueError(f"{p.rec.feature_id}: threshold {p.threshold} differs from the encoder's "
                                 f"threshold row {stored}")

    def _sorted(self) -> list[PendingFeature]:
        return sorted(self._features.values(), key=lambda p: (p.rec.layer, p.rec.latent))

    def _manifest(self, files: dict[str, FileInfo]) -> Manifest:
        per_layer: dict[str, int] = {}
        per_domain: dict[str, int] = {}
        for p in self._sorted():
            per_layer[str(p.rec.layer)] = per_layer.get(str(p.rec.layer), 0) + 1
            for d in p.rec.domains:
                per_domain[d] = per_domain.get(d, 0) + 1
        return Manifest(
            schema_version=SCHEMA_VERSION,
            created_by=created_by(),
            model=self._model,
            site=self._site,
            layers=sorted(self._encoders),
            sae={str(layer): cfg for layer, cfg in sorted(self._sae.items())},
            build=self._build,
            seed=self._seed,
            counts=Counts(features=len(self._features), per_layer=per_layer, per_domain=per_domain),
            map_method=self._map_method,
            files=files,
        )
