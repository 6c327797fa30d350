"""The policy engine: YAML policies that turn per-token safety-feature activations into decisions.

Pipeline: :func:`load_policy` (YAML -> validated :class:`PolicyFile`, errors name file:line: field) ->
:func:`compile_policy` (resolve selections against a :class:`~safesail_guard.runtime.events.FeatureCatalog`,
reject contradictions) -> ``compiled.start(prompt_text)`` -> ``run.observe(token)`` per token ->
``run.finish()`` -> :class:`Decision`. The grammar is documented in ``policies/README.md``.

Modules: ``schema`` (pydantic models of the YAML), ``loader`` (YAML with line numbers), ``engine`` (compile and
evaluate), ``decision`` (result types), ``language`` (language/script detection), ``cases`` (the
``safesail policy test`` runner).
"""

from safesail_guard.policy.decision import (
    ACTIONS,
    BEFORE_TOKENS,
    SEVERITY,
    Damping,
    Decision,
    FiredFeature,
    PivotRequest,
    RuleMatch,
    SteerOp,
    most_severe,
)
from safesail_guard.policy.engine import CompiledPolicy, PolicyRun, compile_policy
from safesail_guard.policy.language import LanguageGuess, detect_language
from safesail_guard.policy.loader import PolicyError, PolicyIssue, load_policy
from safesail_guard.policy.schema import PolicyFile, json_schema

__all__ = [
    "ACTIONS",
    "BEFORE_TOKENS",
    "SEVERITY",
    "CompiledPolicy",
    "Damping",
    "Decision",
    "FiredFeature",
    "LanguageGuess",
    "PivotRequest",
    "PolicyError",
    "PolicyFile",
    "PolicyIssue",
    "PolicyRun",
    "RuleMatch",
    "SteerOp",
    "compile_policy",
    "detect_language",
    "json_schema",
    "load_policy",
    "most_severe",
]
