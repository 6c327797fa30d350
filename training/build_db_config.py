"""The settings of `safesail build-db` (:class:`BuildDBConfig`): which SAEs, which bars, which backends.

Read by every stage of the build (:mod:`safesail_training.build_db` runs them); the CLI builds it from its
options (``safesail build-db``), and the defaults build the shipped database for the embedded model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from safesail_guard.hooks import HookPoint

DEFAULT_POINTS = ["layers.6.mlp_out", "layers.14.mlp_out", "layers.24.mlp_out"]


class BuildDBConfig(BaseModel):
    """Settings of `safesail build-db`; the defaults build the shipped database for the embedded model."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default="embedded", description="Model spec: 'embedded', a HF directory, a .gguf file or a cached HF id.")
    work_dir: Path = Field(default=Path("runs/smollm2-135m-instruct"), description="Build directory shared with build-sae (not committed).")
    out: Path | None = Field(default=None, description="Database directory to write (default: <work_dir>/neuron_db).")
    points: list[str] = Field(default=DEFAULT_POINTS, description="Hook points (one site, several layers).")
    k: int = Field(default=128, ge=1, description="TopK of the SAEs to use (chosen by build-sae's selection).")
    train_tokens: int = Field(default=600_000, gt=0, description="Activations to harvest per point when an SAE has to be trained (the shipped database: 600k, see docs/decisions.md).")
    head: bool = Field(default=True, description="Fit the detection head (linear over SAE codes and error) on the safety set and ship it.")
    head_max_tokens: int = Field(default=256, ge=16, description="Detection head: tokens per training text (the rest is cut).")
    head_aggregation: Literal["mean", "rolling_max"] = Field(default="rolling_max", description="Detection head: how token logits become one score (chosen by benchmarks/bench_detection_head.py).")
    head_window: int = Field(default=32, ge=1, description="Detection head: rolling_max window in tokens.")
    safety_mix: int = Field(default=3, ge=0, description="SAE corpus: one chat-formatted safety-set record after every N general records (0 = the general corpus only).")
    expansion: int = Field(default=10, ge=1)
    min_precision: float = Field(default=0.75, gt=0, le=1)
    min_recall: float = Field(default=0.2, gt=0, le=1, description="Lowest recall bar; raised per layer when target_fdr is set.")
    target_fdr: float | None = Field(default=0.1, gt=0, lt=1, description="Raise the recall bar until the side-swap null predicts at most this false-discovery rate (None: the fixed paper bars).")
    max_features_per_layer: int = Field(default=400, ge=1, description="Cap per layer (best precision x recall first) to keep the database small.")
    explain_tokens: int = Field(default=150_000, ge=1000, description="Token budget of the explanation set.")
    risky_share: float = Field(default=0.3, ge=0, le=1, description="Share of the explanation set drawn from safety-rich text.")
    scoring_features: int = Field(default=0, ge=0, le=1000, description="Also keep up to this many latents (over all layers) that a sparse non-negative head fitted on the pairs over the *whole* dictionary weights most, as scoring features without a concept (0 = off).")
    min_top_risky: float = Field(default=0.5, ge=0, le=1, description="Keep a feature only if at least this share of its top-activating explanation windows come from safety-rich text (0 turns the check off).")
    explainer: Literal["offline", "openai"] = "offline"
    simulator: Literal["embedding", "openai"] = "embedding"
    spscorer: Literal["offline", "openai"] = "offline"
    n_segments: int = Field(default=8, ge=1)
    sim_examples: int = Field(default=6, ge=2)
    map_method: Literal["auto", "umap", "pca"] = "auto"
    seed: int = 0
    pairs: list[Path] = Field(default_factory=list, description="Concept-pair JSONL files (default: the built-in pairs).")

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[str]) -> list[str]:
        parsed = [HookPoint.parse(p) for p in v]
        if not parsed:
            raise ValueError("points must name at least one hook point, e.g. layers.14.mlp_out")
        if len({p.site for p in parsed}) != 1:
            raise ValueError(f"one database holds one hook site; got {sorted({p.site for p in parsed})}")
        if len({p.layer for p in parsed}) != len(parsed):
            raise ValueError("points repeat a layer")
        return [p.name for p in sorted(parsed, key=lambda p: p.layer)]

    @property
    def db_dir(self) -> Path:
        """The database directory to write: ``out``, else ``<work_dir>/neuron_db``."""
        return self.out if self.out is not None else self.work_dir / "neuron_db"
