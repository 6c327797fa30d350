"""Pydantic models of a policy YAML file (the grammar documented in ``policies/README.md``).

These models check everything that can be checked without the neuron database: types, ranges, unknown keys
(every model forbids extra fields), and single-rule consistency (steer ops only on steer rules, window >=
min_tokens, a steer op names exactly one target...). Checks that need the feature catalog or look across rules
(unknown feature ids, overrides, contradictory rules) live in :mod:`safesail_guard.policy.compiler`.

The loader (:mod:`safesail_guard.policy.loader`) maps every validation error back to the YAML file and line.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, field_validator, model_validator

Action = Literal["allow", "log", "steer", "flag", "block"]
ScopeName = Literal["prompt", "response", "both"]
RoleName = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: tuple[str, ...] = ("system", "developer", "user", "assistant", "tool")
"""Every chat role a client can send; a policy reads all of them unless its ``roles`` says otherwise."""
SteerKind = Literal["clamp", "scale", "add"]

DEFAULT_MIN_ACTIVATION = 0.3
DEFAULT_REFUSAL = "I can't help with that request."
RULE_KINDS: tuple[str, ...] = ("features", "over_refusal", "multilingual_gap", "risk")
RULE_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]*$"

# tags of the unions below; they appear in pydantic error locations and the loader drops them
UNION_TAGS = frozenset({"leaf", "any_of", "all_of", "features_rule", "over_refusal_rule", "multilingual_gap_rule"})


class _Model(BaseModel):
    """Base: unknown keys are errors (a typo must never silently disable a rule)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Defaults(_Model):
    """Values rules fall back on when they do not set their own."""

    refusal_message: str = Field(DEFAULT_REFUSAL, min_length=1,
                                 description="Text returned instead of the response when a block rule without "
                                             "its own `message` fires.")
    min_activation: float = Field(DEFAULT_MIN_ACTIVATION, ge=0, le=1,
                                  description="Normalized activation (activation / max_act) a feature must reach "
                                              "at a token for a condition without its own `min_activation`.")


class Selection(_Model):
    """Which features a condition (or damping) watches.

    ``features``, ``domains`` and ``concepts`` are united; ``layers`` then keeps only features at those layers
    (alone, it selects every feature of those layers); ``exclude`` removes ids last.
    """

    features: list[str] = Field(default_factory=list, description='Feature ids "<layer>_<latent>", e.g. 14_21.')
    domains: list[str] = Field(default_factory=list, description="Level-0 concepts, e.g. weapons, self_harm.")
    concepts: list[str] = Field(default_factory=list,
                                description='Level-1 concepts, "level0/level1" (weapons/firearms) or bare level1.')
    layers: list[int] = Field(default_factory=list, description="Keep only features of these layers.")
    exclude: list[str] = Field(default_factory=list, description="Feature ids removed from the selection.")

    @model_validator(mode="after")
    def _not_empty(self) -> Selection:
        if not (self.features or self.domains or self.concepts or self.layers):
            raise ValueError("select needs at least one of features, domains, concepts, layers")
        return self

    def describe(self) -> str:
        """Short human summary, e.g. "domains weapons, terror; layers 14"."""
        parts = [f"{key} {', '.join(str(v) for v in values)}"
                 for key, values in (("features", self.features), ("domains", self.domains),
                                     ("concepts", self.concepts), ("layers", self.layers)) if values]
        if self.exclude:
            parts.append(f"except {', '.join(self.exclude)}")
        return "; ".join(parts)


class Leaf(_Model):
    """A condition on the selected features over a run's tokens.

    It becomes true at the first content token where, counting only tokens in ``scope``: at least
    ``min_tokens`` tokens had some selected feature at normalized activation >= ``min_activation`` (all within
    the last ``window`` tokens of the scope, when ``window`` is set), and at least ``min_features`` distinct
    selected features reached that activation (within the same window). Once true it stays true.
    """

    select: Selection = Field(description="The features this condition watches.")
    scope: ScopeName = Field("both", description="Which tokens count: prompt, response or both.")
    min_activation: float | None = Field(None, ge=0, le=1,
                                         description="Normalized activation threshold (default: "
                                                     "defaults.min_activation, else 0.3).")
    min_tokens: int = Field(1, ge=1, description="Tokens that must reach the threshold.")
    window: int | None = Field(None, ge=1, description="The min_tokens must fall within this many consecutive "
                                                       "tokens of the scope (default: anywhere in the run).")
    min_features: int = Field(1, ge=1, description="Distinct selected features that must reach the threshold.")

    @model_validator(mode="after")
    def _window_fits(self) -> Leaf:
        if self.window is not None and self.window < self.min_tokens:
            raise ValueError(f"window ({self.window}) is smaller than min_tokens ({self.min_tokens}); "
                             "the condition could never be true")
        return self


class AnyOf(_Model):
    """True as soon as any of its conditions is true."""

    any: list[Condition] = Field(min_length=1, description="Conditions, at least one.")


class AllOf(_Model):
    """True once every one of its conditions has been true (not necessarily at the same token)."""

    all: list[Condition] = Field(min_length=1, description="Conditions, at least one.")


def _condition_tag(value: Any) -> str:
    data = value if isinstance(value, dict) else getattr(value, "__dict__", {})
    if "any" in data:
        return "any_of"
    if "all" in data:
        return "all_of"
    return "leaf"


Condition = Annotated[
    Annotated[Leaf, Tag("leaf")] | Annotated[AnyOf, Tag("any_of")] | Annotated[AllOf, Tag("all_of")],
    Discriminator(_condition_tag),
]
AnyOf.model_rebuild()
AllOf.model_rebuild()


class SteerSpec(_Model):
    """One steering op on a feature, or on every feature of a domain or concept."""

    feature: str | None = Field(None, description="A feature id.")
    domain: str | None = Field(None, description="Every feature of this level-0 concept.")
    concept: str | None = Field(None, description="Every feature of this level-1 concept.")
    op: SteerKind = Field(description="clamp: set the activation to value; scale: multiply it by value; add: add "
                                      "value x the feature's decoder direction.")
    value: float = Field(description="For clamp and add in normalized units (x max_act); for scale a factor.")

    @model_validator(mode="after")
    def _one_target(self) -> SteerSpec:
        targets = [k for k in ("feature", "domain", "concept") if getattr(self, k) is not None]
        if len(targets) != 1:
            raise ValueError("a steer op names exactly one of feature, domain, concept"
                             + (f" (got {', '.join(targets)})" if targets else ""))
        if not math.isfinite(self.value):
            raise ValueError("value must be a finite number")
        return self

    @property
    def target(self) -> tuple[str, str]:
        """``(kind, name)``, e.g. ``("domain", "weapons")``."""
        for key in ("feature", "domain", "concept"):
            name = getattr(self, key)
            if name is not None:
                return key, name
        raise AssertionError("validated above")


class _RuleBase(_Model):
    name: str = Field(pattern=RULE_NAME_PATTERN, max_length=80,
                      description="Unique rule name (letters, digits, _ . -), used in decisions and overrides.")
    description: str = Field("", description="What the rule is for.")


class FeatureRule(_RuleBase):
    """``kind: features`` (the default): watch features and act when a condition becomes true."""

    kind: Literal["features"] = "features"
    action: Action = Field(description="allow | log | steer | flag | block.")
    message: str | None = Field(None, min_length=1,
                                description="Refusal text for a block (default: defaults.refusal_message).")
    when: Condition | None = Field(None, description="Condition; omitted = unconditional (matches at the start).")
    steer: list[SteerSpec] = Field(default_factory=list, description="Steering ops (action steer only).")
    overrides: list[str] = Field(default_factory=list,
                                 description="Allow rules only: names of rules whose matches this rule suppresses "
                                             "when it has matched at or before their token.")

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        if value not in RULE_KINDS:
            raise ValueError(f"unknown rule kind {value!r}; valid kinds: {', '.join(RULE_KINDS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> FeatureRule:
        if self.action == "steer" and not self.steer:
            raise ValueError(f"rule {self.name!r}: action steer needs a `steer` list of ops")
        if self.action != "steer" and self.steer:
            raise ValueError(f"rule {self.name!r}: `steer` ops are only allowed with action steer "
                             f"(this rule's action is {self.action})")
        if self.overrides and self.action != "allow":
            raise ValueError(f"rule {self.name!r}: only allow rules can override other rules "
                             f"(this rule's action is {self.action})")
        if self.message is not None and self.action != "block":
            raise ValueError(f"rule {self.name!r}: `message` is the refusal text of a block rule "
                             f"(this rule's action is {self.action})")
        return self


class ContextSpec(_Model):
    """Prompt framing that makes risk features fire on benign text (matched case-insensitively, whole words)."""

    keywords: list[str] = Field(default_factory=list, description="Words or phrases, matched literally.")
    patterns: list[str] = Field(default_factory=list, description="Regular expressions (Python syntax).")
    min_matches: int = Field(1, ge=1, description="Distinct keywords/patterns that must be present.")
    unless: list[str] = Field(default_factory=list,
                              description="Words or phrases that cancel the context when present "
                                          "(e.g. 'step by step' inside a 'story').")

    @field_validator("keywords", "unless")
    @classmethod
    def _non_blank(cls, values: list[str]) -> list[str]:
        for v in values:
            if not v.strip():
                raise ValueError("keywords must not be blank")
        return values

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, values: list[str]) -> list[str]:
        for v in values:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"pattern {v!r} is not a valid regular expression: {exc}") from None
        return values

    @model_validator(mode="after")
    def _something(self) -> ContextSpec:
        if not (self.keywords or self.patterns):
            raise ValueError("context needs keywords or patterns")
        if self.min_matches > len(self.keywords) + len(self.patterns):
            raise ValueError(f"min_matches ({self.min_matches}) exceeds the number of keywords and patterns")
        return self


class DampSpec(_Model):
    """Which features to damp, and by how much."""

    select: Selection = Field(description="Features whose normalized activations are multiplied by factor.")
    factor: float = Field(ge=0, le=1, description="Multiplier in [0, 1]; 0 means the features do not count.")


class OverRefusalRule(_RuleBase):
    """``kind: over_refusal``: damp risk features when the prompt has a benign framing."""

    kind: Literal["over_refusal"]
    context: ContextSpec = Field(description="Framing to look for in the prompt.")
    damp: DampSpec = Field(description="Features to damp and the factor.")
    steer: bool = Field(False, description="Also steer generation: scale the damped features by factor.")


class PivotSpec(_Model):
    """Where to get an English translation of the prompt (the guard does the translating)."""

    base_url: str | None = Field(None, description="OpenAI-compatible API root (default: the guard's setting).")
    model: str | None = Field(None, description="Model name at that endpoint.")
    api_key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
                                    description="Environment variable holding the API key.")


class MultilingualGapRule(_RuleBase):
    """``kind: multilingual_gap``: act on prompts in languages where the safety features are weak."""

    kind: Literal["multilingual_gap"]
    action: Action = Field("flag", description="Action when the prompt's language is not a strong one.")
    message: str | None = Field(None, min_length=1, description="Refusal text when action is block.")
    strong_languages: list[str] = Field(default_factory=lambda: ["en"], min_length=1,
                                        description="ISO 639-1 codes the features cover well.")
    min_confidence: float = Field(0.3, ge=0, le=1, description="Least detection confidence to act on.")
    pivot: PivotSpec | None = Field(None, description="Ask the guard to score an English translation too.")

    @field_validator("strong_languages")
    @classmethod
    def _codes(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"[a-z]{2,3}", v):
                raise ValueError(f"{v!r} is not an ISO 639 language code such as en, it, zh")
        return values

    @model_validator(mode="after")
    def _consistent(self) -> MultilingualGapRule:
        if self.action == "steer":
            raise ValueError(f"rule {self.name!r}: a multilingual_gap rule cannot steer (it has no features)")
        if self.message is not None and self.action != "block":
            raise ValueError(f"rule {self.name!r}: `message` is only used with action block")
        return self


class RiskRule(_RuleBase):
    """``kind: risk``: act when the guard's risk score over ``scope`` reaches ``min_score``.

    With the database's detection head (when it ships one) the score is the head's calibrated risk,
    ``sigmoid`` of its token logits aggregated over the scope's tokens (the number the verdict reports): a
    ``prompt`` rule is decided when the prompt is complete, a ``response`` rule at every response token on the
    response so far (it can block while streaming), ``both`` at the end of the prompt and then per response
    token; ``domain`` compares that domain's attribution (its features' share of the positive named
    contribution, times the risk). With the older sparse risk head the score is ``sigmoid(b + sum_i w_i x_i)``
    over the features' largest normalized activations in ``scope`` so far, updated token by token, and
    ``domain`` restricts it to one domain's features. Both apply over-refusal damping; the match lists the
    features that contributed most.
    """

    kind: Literal["risk"]
    action: Action = Field(description="allow | log | flag | block (not steer: the score has no direction).")
    message: str | None = Field(None, min_length=1, description="Refusal text when action is block.")
    min_score: float = Field(gt=0, lt=1, description="Score in (0, 1) at which the rule matches.")
    domain: str | None = Field(None, description="Use this domain's score instead of the overall score.")
    scope: ScopeName = Field("prompt", description="Which tokens the score reads: prompt (default; what the head "
                                                   "was fitted on) | response | both.")

    @model_validator(mode="after")
    def _consistent(self) -> RiskRule:
        if self.action == "steer":
            raise ValueError(f"rule {self.name!r}: a risk rule cannot steer (a score has no direction)")
        if self.message is not None and self.action != "block":
            raise ValueError(f"rule {self.name!r}: `message` is only used with action block")
        return self


def _rule_tag(value: Any) -> str:
    kind = value.get("kind", "features") if isinstance(value, dict) else getattr(value, "kind", "features")
    return {"over_refusal": "over_refusal_rule", "multilingual_gap": "multilingual_gap_rule",
            "risk": "risk_rule"}.get(kind, "features_rule")


Rule = Annotated[
    Annotated[FeatureRule, Tag("features_rule")]
    | Annotated[OverRefusalRule, Tag("over_refusal_rule")]
    | Annotated[MultilingualGapRule, Tag("multilingual_gap_rule")]
    | Annotated[RiskRule, Tag("risk_rule")],
    Discriminator(_rule_tag),
]


class PolicyFile(_Model):
    """A whole policy file."""

    version: Literal[1] = Field(description="Grammar version; 1.")
    name: str = Field(min_length=1, description="Policy name, shown in decisions.")
    description: str = Field("", description="What the policy is for.")
    defaults: Defaults = Field(default_factory=Defaults, description="Fallback values for rules.")
    roles: list[RoleName] = Field(default_factory=lambda: list(ROLES), min_length=1,
                                  description="Which prompt messages, by role, the rules read (feature and risk "
                                              "rules, language detection, over-refusal framing). Default: all "
                                              "of system, developer, user, assistant, tool. The model's response "
                                              "is always read.")
    rules: list[Rule] = Field(min_length=1, description="The rules, evaluated together on every token.")

    # set by the loader: a SourceMap giving compile errors their file and line
    _source: Any = PrivateAttr(None)


def json_schema() -> dict[str, Any]:
    """The JSON schema of a policy file."""
    schema = PolicyFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "safesail-guard policy"
    return schema
