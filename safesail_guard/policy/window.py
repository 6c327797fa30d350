"""The running state of a rule's condition: sliding-window counters per leaf, ``any``/``all`` above them.

:class:`~safesail_guard.policy.run.PolicyRun` builds one :class:`RuleState` per ``features`` rule with
:func:`build_state`, mirroring the rule's compiled condition tree (:mod:`safesail_guard.policy.rules`): a
:class:`LeafState` per :class:`~safesail_guard.policy.rules.CompiledLeaf`, a :class:`ComboState` per
:class:`~safesail_guard.policy.rules.CompiledCombo`. Each token's (damped) hits update every leaf that is not yet
true; a leaf keeps its own window, so a token costs O(leaves x hits) and the history is never re-scanned. Once a
leaf is true it stays true and keeps its :class:`Evidence` (span, scopes, strongest features), which the run
turns into a :class:`~safesail_guard.policy.decision.RuleMatch` (:func:`evidence_of` picks the evidence of the
children that made a combinator true).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from safesail_guard.policy.rules import CompiledCondition, CompiledLeaf, CompiledRule

Hit = tuple[str, float, float]
"""One feature firing at a token: (feature id, normalized activation after damping, raw activation)."""


@dataclass
class Evidence:
    """Why a leaf became true."""

    first: int
    last: int
    n_tokens: int
    n_features: int
    scopes: set[str]
    best: dict[str, tuple[float, float, int]]  # fid -> (normalized, activation, position)


class LeafState:
    """Sliding-window counters of one leaf condition. ``update`` is O(hits) amortised."""

    __slots__ = ("leaf", "seen", "entries", "feature_counts", "best", "count", "first", "scopes", "evidence")

    def __init__(self, leaf: CompiledLeaf) -> None:
        self.leaf = leaf
        self.seen = 0  # content tokens of the leaf's scope seen so far
        self.entries: deque[tuple[int, int, str, tuple[Hit, ...]]] = deque()  # window mode: qualifying tokens
        self.feature_counts: dict[str, int] = {}  # window mode: entries containing each feature
        self.best: dict[str, tuple[float, float, int]] = {}  # no-window mode: strongest hit per feature
        self.count = 0  # no-window mode: qualifying tokens
        self.first: int | None = None  # no-window mode: first qualifying position
        self.scopes: set[str] = set()
        self.evidence: Evidence | None = None

    @property
    def satisfied(self) -> bool:
        return self.evidence is not None

    def update(self, position: int, scope: str, hits: Sequence[Hit]) -> bool:
        """Count one content token; True when the leaf became true at it."""
        leaf = self.leaf
        if scope not in leaf.scopes:
            return False
        self.seen += 1
        if leaf.window is not None:
            self._evict(self.seen - leaf.window)
        qual = tuple(h for h in hits if h[0] in leaf.features and h[1] > 0 and h[1] >= leaf.min_activation)
        if not qual:
            return False
        if leaf.window is not None:
            self.entries.append((self.seen, position, scope, qual))
            for fid in {h[0] for h in qual}:
                self.feature_counts[fid] = self.feature_counts.get(fid, 0) + 1
            n_tokens, n_features = len(self.entries), len(self.feature_counts)
        else:
            self.count += 1
            self.first = position if self.first is None else self.first
            self.scopes.add(scope)
            for fid, norm, act in qual:
                if fid not in self.best or norm > self.best[fid][0]:
                    self.best[fid] = (norm, act, position)
            n_tokens, n_features = self.count, len(self.best)
        if n_tokens >= leaf.min_tokens and n_features >= leaf.min_features:
            self.evidence = self._evidence(position, n_tokens, n_features)
            return True
        return False

    def _evict(self, cutoff: int) -> None:
        while self.entries and self.entries[0][0] <= cutoff:
            _, _, _, old = self.entries.popleft()
            for fid in {h[0] for h in old}:
                left = self.feature_counts[fid] - 1
                if left:
                    self.feature_counts[fid] = left
                else:
                    del self.feature_counts[fid]

    def _evidence(self, position: int, n_tokens: int, n_features: int) -> Evidence:
        if self.leaf.window is None:
            assert self.first is not None
            return Evidence(self.first, position, n_tokens, n_features, set(self.scopes), dict(self.best))
        best: dict[str, tuple[float, float, int]] = {}
        scopes: set[str] = set()
        for _, pos, scope, qual in self.entries:
            scopes.add(scope)
            for fid, norm, act in qual:
                if fid not in best or norm > best[fid][0]:
                    best[fid] = (norm, act, pos)
        return Evidence(self.entries[0][1], position, n_tokens, n_features, scopes, best)

    def reason(self) -> str:
        leaf, ev = self.leaf, self.evidence
        assert ev is not None
        scope = {"prompt": "prompt", "response": "response", "both": "prompt or response"}[leaf.scope]
        tokens = f"{ev.n_tokens} token{'s' if ev.n_tokens != 1 else ''}"
        window = f" within {leaf.window}" if leaf.window is not None else ""
        text = f"{leaf.selection} reached {leaf.min_activation:g} on {tokens}{window} of the {scope}"
        if leaf.min_features > 1:
            text += f" ({ev.n_features} distinct features, {leaf.min_features} needed)"
        return text


class ComboState:
    """``any``/``all`` over child states; a child that became true stays true."""

    __slots__ = ("op", "children")

    def __init__(self, op: str, children: list[LeafState | ComboState]) -> None:
        self.op = op
        self.children = children

    @property
    def satisfied(self) -> bool:
        test = any if self.op == "any" else all
        return test(c.satisfied for c in self.children)

    def satisfied_children(self) -> list[LeafState | ComboState]:
        return [c for c in self.children if c.satisfied]

    def reason(self) -> str:
        parts = [c.reason() for c in self.satisfied_children()]
        if self.op == "any":
            return parts[0]
        return "all of: " + "; ".join(f"({p})" for p in parts)


def build_state(node: CompiledCondition, leaves: list[LeafState]) -> LeafState | ComboState:
    """Fresh state for the condition tree ``node``; every leaf state is also appended to ``leaves``."""
    if isinstance(node, CompiledLeaf):
        state = LeafState(node)
        leaves.append(state)
        return state
    return ComboState(node.op, [build_state(c, leaves) for c in node.children])


def evidence_of(state: LeafState | ComboState) -> list[Evidence]:
    """The evidence that made ``state`` true: every satisfied child of ``all``, the first of ``any``."""
    if isinstance(state, LeafState):
        return [state.evidence] if state.evidence is not None else []
    chosen = state.satisfied_children()
    if state.op == "any":
        chosen = chosen[:1]
    return [ev for c in chosen for ev in evidence_of(c)]


@dataclass
class RuleState:
    """One ``features`` rule of a run: its compiled form, its condition state (None: unconditional), its leaves."""

    rule: CompiledRule
    root: LeafState | ComboState | None
    leaves: list[LeafState]
