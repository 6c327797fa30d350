"""What the runtime guard sees, token by token, and the static facts about the features it watches.

These are the types shared by the guard (`safesail_guard.runtime`, which produces `TokenActivations`), the
policy engine (`safesail_guard.policy`, which turns a stream of them into decisions) and the scorers/CLI/server
(which print or serialise them). They sit at the top of the guard package, below both the runtime and the
policy, so that neither has to import the other to share them; this module imports only the neuron database
(for `FeatureCatalog.from_db`, at type-checking time). They hold plain Python values only - no tensors - so
decisions can be logged, compared in tests and sent over the wire.

Activation values:

- ``activation``  the SAE feature's activation at that token (its pre-activation, > 0 when it fires);
- ``normalized``  ``activation / max_act`` where ``max_act`` is the feature's largest activation on the
  database's explanation set, so 1.0 means "as strong as the strongest example the database saw" (it can
  exceed 1). Policy thresholds are written on this scale so one number means the same for every feature.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from safesail_neuron_db import NeuronDB

Scope = Literal["prompt", "response"]


@dataclass(frozen=True)
class FeatureInfo:
    """Static facts about one database feature, as the guard and policies need them."""

    id: str  # "<layer>_<latent>", e.g. "14_4141"
    layer: int
    latent: int
    domains: tuple[str, ...]  # level-0 concepts, e.g. ("weapons",)
    concepts: tuple[str, ...]  # level-1 concepts as "level0/level1", e.g. ("weapons/firearms",)
    explanation: str | None
    max_act: float  # largest activation on the explanation set (> 0)

    def normalize(self, activation: float) -> float:
        """``activation / max_act`` (0 when max_act is not positive)."""
        return activation / self.max_act if self.max_act > 0 else 0.0


class FeatureCatalog(Mapping[str, FeatureInfo]):
    """All features of one database by id, with lookups by domain, concept and layer."""

    def __init__(self, features: Iterable[FeatureInfo]) -> None:
        self._by_id: dict[str, FeatureInfo] = {}
        for f in features:
            if f.id in self._by_id:
                raise ValueError(f"feature {f.id!r} listed twice")
            self._by_id[f.id] = f

    @classmethod
    def from_db(cls, db: NeuronDB) -> FeatureCatalog:
        """Read every feature's id, layer, concepts, explanation and max_act from an open database."""
        rows = db._query("SELECT id, layer, latent, explanation, max_act FROM features ORDER BY layer, latent")
        concepts: dict[str, list[tuple[str, str]]] = {}
        for r in db._query("SELECT feature_id, level0, level1 FROM concepts ORDER BY feature_id, rank"):
            concepts.setdefault(r["feature_id"], []).append((r["level0"], r["level1"]))
        out = []
        for r in rows:
            cs = concepts.get(r["id"], [])
            out.append(FeatureInfo(
                id=r["id"], layer=int(r["layer"]), latent=int(r["latent"]),
                domains=tuple(sorted({a for a, _ in cs})),
                concepts=tuple(dict.fromkeys(f"{a}/{b}" for a, b in cs)),
                explanation=r["explanation"], max_act=float(r["max_act"]),
            ))
        return cls(out)

    def __getitem__(self, fid: str) -> FeatureInfo:
        return self._by_id[fid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def layers(self) -> list[int]:
        """Layers that have features, ascending."""
        return sorted({f.layer for f in self._by_id.values()})

    @property
    def domains(self) -> list[str]:
        """All level-0 concepts, sorted."""
        return sorted({d for f in self._by_id.values() for d in f.domains})

    @property
    def concepts(self) -> list[str]:
        """All level-1 concepts as "level0/level1", sorted."""
        return sorted({c for f in self._by_id.values() for c in f.concepts})

    def by_domain(self, domain: str) -> list[FeatureInfo]:
        """Features with `domain` among their level-0 concepts (case-insensitive)."""
        d = domain.lower()
        return [f for f in self._by_id.values() if d in (x.lower() for x in f.domains)]

    def by_concept(self, concept: str) -> list[FeatureInfo]:
        """Features with the level-1 concept, written "level0/level1" or just "level1" (case-insensitive)."""
        c = concept.lower()
        return [f for f in self._by_id.values()
                if any(c == x.lower() or c == x.split("/", 1)[1].lower() for x in f.concepts)]


@dataclass(frozen=True)
class FeatureHit:
    """One feature firing at one token."""

    feature_id: str
    activation: float
    normalized: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)


@dataclass
class TokenActivations:
    """The features that fired at one token, in order of decreasing normalized activation.

    ``position`` counts tokens from 0 over the whole sequence the guard saw (prompt then response);
    ``text`` is the piece of rendered text the token covers (may be '' for a byte-split character or a
    special token); ``scope`` says whether it belongs to the prompt or to the generated response;
    ``content`` is False for chat-template scaffolding (including a default system prompt the template adds
    on its own) and special tokens, which policies and scores ignore; every client-supplied message is content,
    whatever its role; ``role`` is the chat role whose content the token is in ("system", "developer", "user",
    "assistant", "tool", "text" for plain text) or None for scaffolding. ``head_terms`` holds, per layer of the
    database's detection head, the token's remainder term ``w_e . x - v . z - c`` (computed by the guard's
    encoder from the same TopK it fires with; see `safesail_guard.runtime.detection_head`); None when the guard
    has no detection head. A guard with a head refuses to score a token that lacks them.
    """

    position: int
    token_id: int
    text: str
    scope: Scope
    content: bool = True
    hits: list[FeatureHit] = field(default_factory=list)
    role: str | None = None
    head_terms: dict[int, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (``head_terms`` only when set, keyed by the layer as a string)."""
        out = {"position": self.position, "token_id": self.token_id, "text": self.text, "scope": self.scope,
               "content": self.content, "role": self.role, "hits": [h.to_dict() for h in self.hits]}
        if self.head_terms is not None:
            out["head_terms"] = {str(layer): round(v, 6) for layer, v in sorted(self.head_terms.items())}
        return out
