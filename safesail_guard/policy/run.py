"""A compiled policy and its evaluation, token by token: :class:`CompiledPolicy` and :class:`PolicyRun`.

:class:`CompiledPolicy` (built by :func:`~safesail_guard.policy.compiler.compile_policy`) holds the compiled rules
of :mod:`safesail_guard.policy.rules`; it is immutable and safe to share between threads.
``compiled.start(prompt_text)`` returns a :class:`PolicyRun`, the per-request state. The two live in one module
because each needs the other (a policy starts runs, a run reads its policy), and this keeps the package free of
import cycles.

At start a run detects the prompt's language (``multilingual_gap`` rules; of the whole prompt and of each
message), finds benign framings (``over_refusal`` rules, which set per-feature damping factors) and fires
unconditional rules. The prompt text may carry each message's role (:mod:`safesail_guard.policy.segments`); the
policy's ``roles`` (default: all) choose which messages its rules read, there and token by token.
``run.observe(tok)`` then takes one :class:`~safesail_guard.events.TokenActivations` at a time and returns
the matches that became true at that token; each leaf condition keeps its own sliding-window state
(:mod:`safesail_guard.policy.window`), so a token costs O(leaves x hits) and the history is never re-scanned.
``run.snapshot()`` / ``run.finish()`` return the :class:`~safesail_guard.policy.decision.Decision`.

Evaluation order at one token: damping is applied to the token's hits; allow rules are updated first (so an
allow rule that matches at the same token suppresses the rules it overrides), then the other rules in file
order. Every rule fires at most once per run.

``kind: risk`` rules read the guard's risk head. With the sparse head they pool each weighted feature's peak and
fire at the token where the score crosses the bar. With a *detection head* (the rule's ``head``) each read token
of the rule's scope adds its logit to a running aggregate (mean or rolling_max, bounded memory, see
`safesail_guard.runtime.detection_head`), and the risk is ``sigmoid(aggregate)``, the same number the verdict
reports for that scope:

- a ``prompt`` rule is decided once, when the prompt is complete: at the first response token, at
  :meth:`PolicyRun.end_prompt` (guarded generation calls it after reading the prompt, before generating) or
  at :meth:`PolicyRun.finish`; its span ends at the last prompt token;
- a ``response`` rule is checked at every response token against the score of the response so far (for
  rolling_max: the best complete window, or the plain mean while the response is shorter than the window), so
  it can block while streaming; ``both`` is checked at the end of the prompt and then at every response token.

A domain rule compares the domain's attribution (its features' share of the positive named contribution times
the risk) with its bar. Over-refusal damping scales the damped features' activations in the named part.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from safesail_guard.events import FeatureCatalog, TokenActivations
from safesail_guard.policy.decision import (
    BEFORE_TOKENS,
    Damping,
    Decision,
    FiredFeature,
    PivotRequest,
    RuleMatch,
    SteerOp,
    most_severe,
)
from safesail_guard.policy.language import LanguageGuess, detect_language
from safesail_guard.policy.rules import (
    CompiledDamper,
    CompiledLanguageRule,
    CompiledRiskRule,
    CompiledRule,
    feature_order,
)
from safesail_guard.policy.schema import PolicyFile
from safesail_guard.policy.segments import ALL_ROLES, prompt_segments, prompt_text_of
from safesail_guard.policy.window import Hit, LeafState, RuleState, build_state, evidence_of

TOP_FEATURES = 5
"""How many of the strongest features a match keeps as evidence."""
SPAN_TEXT_CHARS = 200
"""Longest ``span_text`` kept in a match (longer spans keep their head and tail)."""


@dataclass(frozen=True)
class CompiledPolicy:
    """A policy resolved against one feature catalog. Immutable; start one :class:`PolicyRun` per request."""

    name: str
    catalog: FeatureCatalog
    rules: tuple[CompiledRule, ...]
    dampers: tuple[CompiledDamper, ...]
    language_rules: tuple[CompiledLanguageRule, ...]
    refusal_message: str
    rule_names: tuple[str, ...] = ()  # every rule, in file order
    risk_rules: tuple[CompiledRiskRule, ...] = ()
    warnings: tuple[str, ...] = ()
    policy: PolicyFile | None = field(default=None, compare=False, repr=False)
    roles: frozenset[str] = ALL_ROLES  # prompt messages the rules read, by role

    def reads(self, tok: TokenActivations) -> bool:
        """Whether the rules read ``tok``: a content token of the response, of plain text, or of a prompt message
        whose role is among the policy's ``roles``."""
        if not tok.content:
            return False
        return tok.scope != "prompt" or tok.role not in ALL_ROLES or tok.role in self.roles

    @property
    def watched_features(self) -> frozenset[str]:
        """Every feature some condition or damping reads (the guard must encode at least these)."""
        out: set[str] = set()
        for rule in self.rules:
            out.update(rule.features)
        for d in self.dampers:
            out.update(d.features)
        for r in self.risk_rules:
            out.update(r.weights)
        return frozenset(out)

    @property
    def layers(self) -> list[int]:
        """Layers of the watched and steered features, ascending."""
        ids = set(self.watched_features) | {op.feature_id for r in self.rules for op in r.steer}
        return sorted({self.catalog[f].layer for f in ids})

    def start(self, prompt_text: str = "") -> PolicyRun:
        """Begin evaluating one request whose prompt (as plain text) is ``prompt_text``."""
        return PolicyRun(self, prompt_text)

    def evaluate(self, tokens: Iterable[TokenActivations], prompt_text: str | None = None) -> Decision:
        """Run the whole policy over ``tokens`` (prompt then response, in position order) and decide.

        ``prompt_text`` defaults to the text of the prompt's content tokens.
        """
        tokens = list(tokens)
        if prompt_text is None:
            prompt_text = prompt_text_of(tokens)
        run = self.start(prompt_text)
        for tok in tokens:
            run.observe(tok)
        return run.finish()


class PolicyRun:
    """The evaluation of one request. Not thread-safe; create one per request with ``CompiledPolicy.start``.

    Call :meth:`observe` for every token in position order (prompt tokens, then response tokens as they are
    generated). Matches decided before any token (unconditional rules, ``multilingual_gap``) are visible in
    :attr:`matches` right after start and are also returned by the first :meth:`observe` call, so a consumer
    that only reads ``observe`` sees every match exactly once.
    """

    def __init__(self, compiled: CompiledPolicy, prompt_text: str) -> None:
        self.compiled = compiled
        read = [text for role, text in prompt_segments(prompt_text or "")
                if role is None or role not in ALL_ROLES or role in compiled.roles]
        self.prompt_text = "\n".join(read)  # the messages of the policy's roles
        self.language: LanguageGuess = detect_language(self.prompt_text)
        # each message on its own too: a long English system prompt must not hide a user turn in another language
        self._message_languages = [detect_language(t) for t in read] if len(read) > 1 else []
        self._matches: list[RuleMatch] = []
        self._suppressed: list[RuleMatch] = []
        self._overridden: dict[str, str] = {}  # target rule -> allow rule that overrode it
        self._steer: list[SteerOp] = []
        self._steer_view: tuple[SteerOp, ...] = ()
        self._blocked: RuleMatch | None = None
        self._unreported: list[RuleMatch] = []
        self._positions: list[int] = []
        self._texts: list[str] = []
        self._finished: Decision | None = None
        self._pivot: PivotRequest | None = None
        self._damp, self._damped = self._apply_dampers()
        # allow rules first, so an allow matching at a token suppresses what it overrides at that same token
        ordered = sorted(compiled.rules, key=lambda r: r.action != "allow")
        self._pending: list[RuleState] = []
        for rule in ordered:
            leaves: list[LeafState] = []
            root = build_state(rule.condition, leaves) if rule.condition is not None else None
            self._pending.append(RuleState(rule, root, leaves))
        self._risk_pending = [r for r in compiled.risk_rules if r.head is None]
        self._risk_pooled: dict[str, dict[str, tuple[float, float, int]]] = {r.name: {} for r in self._risk_pending}
        self._risk_scored: set[str] = set()
        # detection-head risk rules: one running aggregate per distinct scope set (see the module docstring)
        self._det_pending = [r for r in compiled.risk_rules if r.head is not None]
        self._det_aggs: dict[frozenset[str], Any] = {}
        for r in self._det_pending:
            self._det_aggs.setdefault(r.scopes, r.head.aggregate())
        self._prompt_ended = False
        self._fire_at_start()

    # -- public ------------------------------------------------------------------------------------------

    @property
    def blocked(self) -> RuleMatch | None:
        """The first effective block match so far (the guard stops streaming there), else None."""
        return self._blocked

    @property
    def matches(self) -> list[RuleMatch]:
        """Effective matches so far, in firing order."""
        return list(self._matches)

    @property
    def damped(self) -> list[Damping]:
        """Over-refusal dampings in force for this run."""
        return list(self._damped)

    def active_steering(self) -> list[SteerOp]:
        """Steering ops in force now, in the order they are to be applied."""
        return list(self._steer_view)

    def observe(self, tok: TokenActivations) -> list[RuleMatch]:
        """Feed one token; returns the effective matches that became true at it (plus start-time matches once).

        The first response token ends the prompt (see :meth:`end_prompt`)."""
        if self._finished is not None:
            raise RuntimeError("observe() after finish(): start a new run for a new request")
        if self._positions and tok.position <= self._positions[-1]:
            raise ValueError(f"tokens must be observed in increasing position order: got {tok.position} after "
                             f"{self._positions[-1]}")
        if tok.scope == "response" and not self._prompt_ended:
            self.end_prompt()
        self._positions.append(tok.position)
        self._texts.append(tok.text)
        new, self._unreported = self._unreported, []
        if not self.compiled.reads(tok) or not (self._pending or self._risk_pending or self._det_pending):
            return new
        hits = self._damped_hits(tok)
        if self._risk_pending:
            new.extend(self._observe_risk(tok, hits))
        if self._det_pending:
            new.extend(self._observe_detection(tok))
        still: list[RuleState] = []
        for state in self._pending:
            changed = False
            for leaf in state.leaves:
                if not leaf.satisfied and leaf.update(tok.position, tok.scope, hits):
                    changed = True
            if changed and state.root is not None and state.root.satisfied:
                match = self._fire(state, tok.position)
                if match is not None:
                    new.append(match)
            else:
                still.append(state)
        self._pending = still
        return new

    def snapshot(self) -> Decision:
        """The decision for everything observed so far, leaving the run open (e.g. the prompt's verdict before
        the response streams)."""
        return self._finished if self._finished is not None else self._decision()

    def finish(self) -> Decision:
        """The decision for everything observed so far (the prompt counts as complete); further ``observe``
        calls are refused."""
        if self._finished is None:
            self.end_prompt()
            self._finished = self._decision()
        return self._finished

    def end_prompt(self) -> None:
        """The prompt is complete: decide the detection-head risk rules that read it (``prompt`` rules once and
        for all, ``both`` rules on the prompt so far). Idempotent; called by the first response token and by
        :meth:`finish`, and by a consumer that must know the prompt's verdict before any response token (guarded
        generation, the response monitor). Matches show in :attr:`matches` / :attr:`blocked` at once and are
        returned by the next :meth:`observe` call."""
        if self._prompt_ended or self._finished is not None:
            return
        self._prompt_ended = True
        position = self._positions[-1] if self._positions else None
        still = []
        for rule in self._det_pending:
            if "prompt" not in rule.scopes:
                still.append(rule)
                continue
            match = self._detection_match(rule, position)
            if match is None:
                if "response" in rule.scopes:
                    still.append(rule)
            elif self._record(match) and match.position is not None:
                self._unreported.append(match)
        self._det_pending = still

    def _observe_detection(self, tok: TokenActivations) -> list[RuleMatch]:
        """Add ``tok``'s logit to the aggregates of the pending detection rules' scopes; at a response token,
        fire the rules reading the response whose score reaches the bar."""
        scopes = {r.scopes for r in self._det_pending if tok.scope in r.scopes}
        if not scopes:
            return []
        head = self._det_pending[0].head
        parts = head.token_parts(tok, self._damp)  # MissingHeadTermsError when the token was not scanned for it
        for s in scopes:
            self._det_aggs[s].push(parts)
        if tok.scope != "response":
            return []  # prompt tokens: decided when the prompt is complete (`end_prompt`)
        fired: list[RuleMatch] = []
        still = []
        for rule in self._det_pending:
            match = self._detection_match(rule, tok.position) if "response" in rule.scopes else None
            if match is None:
                still.append(rule)
            elif self._record(match):
                fired.append(match)
        self._det_pending = still
        return fired

    def _detection_match(self, rule: CompiledRiskRule, position: int | None) -> RuleMatch | None:
        """The match of detection rule ``rule`` when its score over its scope so far reaches the bar, else
        None; ``position`` is the token where it is decided (None: before any token)."""
        head, agg = rule.head, self._det_aggs[rule.scopes]
        risk = head.risk_of(agg)
        score = risk
        if rule.domain is not None and risk >= rule.min_score:  # a domain's attribution is at most the risk
            score = head.domain_risk(agg, rule.domain)
        if score < rule.min_score:
            return None
        win = agg.winner()
        named, rem = head.contributions(win)
        total = math.fsum(abs(c) for c in named.values()) + abs(rem)
        peaks = win.peaks if win is not None else {}
        cands = [(f, c) for f, c in named.items() if c > 0 and f in peaks
                 and (rule.domain is None or rule.domain in self.compiled.catalog[f].domains)]
        cands.sort(key=lambda kv: (-kv[1], kv[0]))
        features = tuple(self._fired_feature(f, self.compiled.catalog[f].normalize(peaks[f][0]), peaks[f][0],
                                             peaks[f][1]) for f, _ in cands[:TOP_FEATURES])
        what = f"{rule.domain} risk score" if rule.domain else "risk score"
        n = win.n if win is not None else 0
        split = (f"named {(total - abs(rem)) / total:.0%}, remainder {abs(rem) / total:.0%}" if total else "bias only")
        reason = (f"{what} {score:.2f} >= {rule.min_score} (detection head, {agg.kind} over {n} token"
                  f"{'s' if n != 1 else ''} of the {rule.scope}; {split})")
        if position is None:
            span = BEFORE_TOKENS
        else:
            span = (win.first if win is not None else position, position)
        return RuleMatch(rule=rule.name, kind="risk", action=rule.action, scope=rule.scope, span=span,
                         span_text=self._span_text(*span) if position is not None else "", features=features,
                         reason=reason, message=rule.message, position=position)

    def _decision(self) -> Decision:
        matches = tuple(self._matches)
        first_block = self._blocked
        return Decision(
            action=most_severe([m.action for m in matches]),
            matches=matches,
            refusal=first_block.message if first_block is not None else None,
            steer=tuple(self._steer),
            language=self.language,
            damped=tuple(self._damped),
            pivot_requested=self._pivot is not None,
            pivot=self._pivot,
            suppressed=tuple(self._suppressed),
            policy=self.compiled.name,
            tokens_seen=len(self._positions),
        )

    def _observe_risk(self, tok: TokenActivations, hits: list[Hit]) -> list[RuleMatch]:
        """Update each pending risk rule's pooled features with this token; fire those that reach their bar."""
        fired: list[RuleMatch] = []
        still = []
        for rule in self._risk_pending:
            pooled = self._risk_pooled[rule.name]
            changed = rule.name not in self._risk_scored  # the first content token always scores (bias alone)
            self._risk_scored.add(rule.name)
            if tok.scope in rule.scopes:
                for fid, norm, act in hits:
                    if fid in rule.weights and norm > pooled.get(fid, (0.0, 0.0, -1))[0]:
                        pooled[fid] = (norm, act, tok.position)
                        changed = True
            if not changed:  # the score only moves when a weighted feature's peak rises
                still.append(rule)
                continue
            logit = rule.bias + sum(rule.weights[f] * v[0] for f, v in pooled.items())
            if logit < rule.min_logit:
                still.append(rule)
                continue
            score = 1 / (1 + math.exp(-logit))
            contrib = sorted(pooled.items(), key=lambda kv: (-rule.weights[kv[0]] * kv[1][0], kv[0]))[:TOP_FEATURES]
            features = tuple(self._fired_feature(f, n, a, pos) for f, (n, a, pos) in contrib)
            first = min((v[2] for v in pooled.values()), default=tok.position)
            what = f"{rule.domain} risk score" if rule.domain else "risk score"
            match = RuleMatch(rule=rule.name, kind="risk", action=rule.action,
                              scope="both" if len(rule.scopes) > 1 else next(iter(rule.scopes)),
                              span=(first, tok.position), span_text=self._span_text(first, tok.position),
                              features=features, reason=f"{what} {score:.2f} >= {rule.min_score}",
                              message=rule.message, position=tok.position)
            if self._record(match):
                fired.append(match)
        self._risk_pending = still
        return fired

    # -- start -------------------------------------------------------------------------------------------

    def _apply_dampers(self) -> tuple[dict[str, float], list[Damping]]:
        factors: dict[str, float] = {}
        records: list[Damping] = []
        for damper in self.compiled.dampers:
            words = damper.context_found(self.prompt_text)
            if not words:
                continue
            for fid in damper.features:
                factors[fid] = factors.get(fid, 1.0) * damper.factor
            records.append(Damping(damper.name, words, damper.factor, damper.selection, len(damper.features),
                                   bool(damper.steer)))
            self._add_steer(damper.steer)
        return factors, records

    def _fire_at_start(self) -> None:
        for state in [s for s in self._pending if s.root is None]:
            self._pending.remove(state)
            self._fire(state, None)
        for rule in self.compiled.language_rules:
            if rule.gap(self.language):
                self._record(self._language_match(rule, self.language, "prompt"))
                continue
            guess = next((g for g in self._message_languages if rule.gap(g)), None)
            if guess is not None:
                self._record(self._language_match(rule, guess, "a prompt message's"))

    def _language_match(self, rule: CompiledLanguageRule, g: LanguageGuess, what: str) -> RuleMatch:
        strong = ", ".join(sorted(rule.strong_languages))
        reason = (f"{what} language {g.code} ({g.script}, confidence {g.confidence:.2f}) is not among the strong "
                  f"languages ({strong})" + ("; an English pivot translation is requested" if rule.pivot else ""))
        message = (rule.message or self.compiled.refusal_message) if rule.action == "block" else None
        return RuleMatch(rule=rule.name, kind="multilingual_gap", action=rule.action, scope="prompt",
                         span=BEFORE_TOKENS, span_text=_clip(self.prompt_text), features=(), reason=reason,
                         message=message)

    # -- firing ------------------------------------------------------------------------------------------

    def _damped_hits(self, tok: TokenActivations) -> list[Hit]:
        damp = self._damp
        if not damp:
            return [(h.feature_id, h.normalized, h.activation) for h in tok.hits]
        return [(h.feature_id, h.normalized * damp.get(h.feature_id, 1.0), h.activation) for h in tok.hits]

    def _fire(self, state: RuleState, position: int | None) -> RuleMatch | None:
        """Build the rule's match, record it; returns it when effective (None when suppressed)."""
        rule = state.rule
        if state.root is None:
            match = RuleMatch(rule=rule.name, kind=rule.kind, action=rule.action, scope="both",
                              span=BEFORE_TOKENS, span_text="", features=(), reason="unconditional rule (no `when`)",
                              message=rule.message, position=None)
        else:
            match = self._match_from_evidence(state, position)
        recorded = self._record(match)
        if recorded and rule.action == "steer":
            self._add_steer(rule.steer)
        if recorded and rule.action == "allow":
            for target in rule.overrides:
                self._overridden.setdefault(target, rule.name)
        return match if recorded and position is not None else None

    def _record(self, match: RuleMatch) -> bool:
        """Append ``match`` to the effective or suppressed list; True when effective."""
        by = self._overridden.get(match.rule)
        if by is not None:
            self._suppressed.append(_suppress(match, by))
            return False
        self._matches.append(match)
        if match.position is None:
            self._unreported.append(match)
        if match.action == "block" and self._blocked is None:
            self._blocked = match
        if match.kind == "multilingual_gap" and self._pivot is None:
            rule = next(r for r in self.compiled.language_rules if r.name == match.rule)
            self._pivot = rule.pivot
        return True

    def _match_from_evidence(self, state: RuleState, position: int | None) -> RuleMatch:
        assert state.root is not None and position is not None
        evidence = evidence_of(state.root)
        first = min(ev.first for ev in evidence)
        scopes = set().union(*(ev.scopes for ev in evidence))
        best: dict[str, tuple[float, float, int]] = {}
        for ev in evidence:
            for fid, value in ev.best.items():
                if fid not in best or value[0] > best[fid][0]:
                    best[fid] = value
        top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:TOP_FEATURES]
        features = tuple(self._fired_feature(fid, norm, act, pos) for fid, (norm, act, pos) in top)
        rule = state.rule
        return RuleMatch(rule=rule.name, kind=rule.kind, action=rule.action,
                         scope="both" if len(scopes) > 1 else next(iter(scopes)), span=(first, position),
                         span_text=self._span_text(first, position), features=features,
                         reason=state.root.reason(), message=rule.message, position=position)

    def _fired_feature(self, fid: str, norm: float, act: float, pos: int) -> FiredFeature:
        info = self.compiled.catalog.get(fid)
        layer = info.layer if info is not None else feature_order(fid)[0]
        return FiredFeature(fid, layer, info.explanation if info is not None else None, act, norm, pos)

    def _span_text(self, first: int, last: int) -> str:
        lo = bisect.bisect_left(self._positions, first)
        hi = bisect.bisect_right(self._positions, last)
        return _clip("".join(self._texts[lo:hi]))

    def _add_steer(self, ops: Sequence[SteerOp]) -> None:
        if ops:
            self._steer.extend(ops)
            self._steer_view = tuple(self._steer)


def _clip(text: str, limit: int = SPAN_TEXT_CHARS) -> str:
    """``text`` cut to ``limit`` characters, keeping head and tail."""
    if len(text) <= limit:
        return text
    half = (limit - 3) // 2
    return text[:half] + " … " + text[-half:]


def _suppress(match: RuleMatch, by: str) -> RuleMatch:
    return replace(match, suppressed_by=by)
