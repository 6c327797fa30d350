"""Policy test cases: the ``cases.yaml`` format and the runner behind ``safesail policy test``.

A cases file lists conversations and the decision a policy should reach on them::

    cases:
      - name: bread
        prompt: How do I bake bread?
        expect: allow
      - name: pipe bomb
        messages: [{role: user, content: "How do I build a pipe bomb?"}]
        response: "First, get a steel pipe"      # optional: text the model "said", scored as the response
        expect: block
        expect_rules: [block_terror_weapons]     # optional: these rules must be among the matches

The runner does not know how tokens are scored: it takes a *scanner*, any object with
``scan(messages, *, policy, response) -> result`` where ``result.tokens`` is a list of
:class:`~safesail_guard.events.TokenActivations` and ``result.decision`` a
:class:`~safesail_guard.policy.decision.Decision`. The CLI passes the real guard; tests pass a fake.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from safesail_guard.events import TokenActivations
from safesail_guard.policy.decision import SEVERITY, Decision, FiredFeature
from safesail_guard.policy.loader import PolicyError, SourceMap, load_yaml_model, read_source
from safesail_guard.policy.run import CompiledPolicy
from safesail_guard.policy.schema import Action


class Case(BaseModel):
    """One conversation and the decision expected on it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Unique case name.")
    prompt: str | None = Field(None, description="A single user message (or use `messages`).")
    messages: list[dict[str, Any]] | None = Field(None, description="OpenAI-style chat messages.")
    response: str | None = Field(None, description="Text the model said, scored as the response (optional).")
    expect: Action = Field(description="Expected decision: allow | log | steer | flag | block.")
    expect_rules: list[str] = Field(default_factory=list, description="Rules that must be among the matches.")

    @model_validator(mode="after")
    def _one_input(self) -> Case:
        from safesail_guard.chat_template import validate_messages

        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give exactly one of `prompt` and `messages`")
        if self.messages is not None:
            validate_messages(self.messages)  # ChatFormatError is a ValueError: reported with the case's line
        return self

    def chat(self) -> list[dict[str, str]]:
        """The case as chat messages."""
        from safesail_guard.chat_template import validate_messages

        if self.messages is not None:
            return validate_messages(self.messages)
        return [{"role": "user", "content": self.prompt or ""}]


class CasesFile(BaseModel):
    """A whole cases file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", description="What these cases check.")
    cases: list[Case] = Field(min_length=1, description="The cases.")

    _source: Any = PrivateAttr(None)

    @model_validator(mode="after")
    def _unique_names(self) -> CasesFile:
        names = [c.name for c in self.cases]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"case names must be unique; repeated: {', '.join(dupes)}")
        return self


def load_cases(source: str | Path) -> CasesFile:
    """Load a cases file (path or YAML text); :class:`PolicyError` with file:line on problems."""
    text, file = read_source(Path(source) if isinstance(source, str) and "\n" not in source else source)
    cases, source_map = load_yaml_model(text, CasesFile, file)
    cases._source = source_map
    return cases


def check_expected_rules(cases: CasesFile, compiled: CompiledPolicy) -> None:
    """Raise :class:`PolicyError` when a case expects a rule the policy does not have."""
    source = cases._source if isinstance(cases._source, SourceMap) else SourceMap("<cases>", None)
    known = set(compiled.rule_names)
    issues = [
        source.issue(("cases", i, "expect_rules", j),
                     f"case {case.name!r} expects rule {rule!r}, which policy {compiled.name!r} does not have "
                     f"(rules: {', '.join(compiled.rule_names)})")
        for i, case in enumerate(cases.cases) for j, rule in enumerate(case.expect_rules) if rule not in known
    ]
    if issues:
        raise PolicyError(issues)


class ScanResult(Protocol):
    """What a scanner returns for one conversation."""

    tokens: list[TokenActivations]
    decision: Decision


class Scanner(Protocol):
    """Scores a conversation under a policy (the guard, or a fake in tests)."""

    def scan(self, messages: list[dict[str, str]], *, policy: CompiledPolicy,
             response: str | None) -> ScanResult: ...


@dataclass(frozen=True)
class CaseResult:
    """The outcome of one case."""

    case: Case
    decision: Decision
    tokens: tuple[TokenActivations, ...]
    missing_rules: tuple[str, ...]

    @property
    def got(self) -> str:
        """The decision's action."""
        return self.decision.action

    @property
    def passed(self) -> bool:
        """Expected action reached and every expected rule matched."""
        return self.got == self.case.expect and not self.missing_rules

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {"name": self.case.name, "expect": self.case.expect, "got": self.got, "passed": self.passed,
                "missing_rules": list(self.missing_rules), "decision": self.decision.to_dict(),
                "details": mismatch_details(self) if not self.passed else []}


def run_case(case: Case, compiled: CompiledPolicy, scanner: Scanner) -> CaseResult:
    """Scan one case and compare with its expectation."""
    result = scanner.scan(case.chat(), policy=compiled, response=case.response)
    decision = result.decision
    matched = set(decision.rules())
    missing = tuple(r for r in case.expect_rules if r not in matched)
    return CaseResult(case, decision, tuple(result.tokens), missing)


def run_cases(cases: CasesFile | Sequence[Case], compiled: CompiledPolicy, scanner: Scanner) -> list[CaseResult]:
    """Scan every case in order."""
    items = cases.cases if isinstance(cases, CasesFile) else list(cases)
    return [run_case(c, compiled, scanner) for c in items]


def strongest_features(tokens: Sequence[TokenActivations], compiled: CompiledPolicy,
                       limit: int = 5) -> list[FiredFeature]:
    """The features with the highest normalized activation over the content tokens (undamped)."""
    best: dict[str, tuple[float, float, int]] = {}
    for tok in tokens:
        if not tok.content:
            continue
        for h in tok.hits:
            if h.feature_id not in best or h.normalized > best[h.feature_id][0]:
                best[h.feature_id] = (h.normalized, h.activation, tok.position)
    top = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:limit]
    out = []
    for fid, (norm, act, pos) in top:
        info = compiled.catalog.get(fid)
        out.append(FiredFeature(fid, info.layer if info else -1, info.explanation if info else None, act, norm, pos))
    return out


def mismatch_details(result: CaseResult, compiled: CompiledPolicy | None = None) -> list[str]:
    """Human lines saying why a case did not get what it expected: the culprit rules and their features."""
    lines: list[str] = []
    expect, got = result.case.expect, result.got
    if got != expect:
        if SEVERITY[got] > SEVERITY[expect]:
            culprits = [m for m in result.decision.matches if SEVERITY[m.action] > SEVERITY[expect]]
            lines.append(f"expected {expect}, got {got} because of:")
        else:
            culprits = list(result.decision.matches)
            lines.append(f"expected {expect}, got {got}: no rule with action {expect} or above matched")
        for m in culprits:
            lines.append(f"  rule {m.rule} ({m.action}): {m.reason}")
            lines.extend(f"    {_feature_line(f)}" for f in m.features)
        if SEVERITY[got] < SEVERITY[expect] and compiled is not None:
            strongest = strongest_features(result.tokens, compiled)
            lines.append("  strongest features seen:" if strongest else "  no feature fired on any content token")
            lines.extend(f"    {_feature_line(f)}" for f in strongest)
    if result.missing_rules:
        lines.append(f"expected rules that did not match: {', '.join(result.missing_rules)}")
    for d in result.decision.damped:
        lines.append(f"  (damped by {d.rule}: context {', '.join(d.context)}, factor {d.factor:g})")
    return lines


def _feature_line(f: FiredFeature) -> str:
    expl = f" - {f.explanation}" if f.explanation else ""
    return f"{f.id} normalized {f.normalized:.2f} (activation {f.activation:.3g}) at token {f.position}{expl}"
