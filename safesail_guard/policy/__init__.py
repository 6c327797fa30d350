"""The policy engine: YAML policies that turn per-token safety-feature activations into decisions.

Pipeline: :func:`load_policy` (YAML -> validated :class:`PolicyFile`, errors name file:line: field) ->
:func:`compile_policy` (resolve selections against a :class:`~safesail_guard.events.FeatureCatalog`,
reject contradictions) -> ``compiled.start(prompt_text)`` -> ``run.observe(token)`` per token ->
``run.finish()`` -> :class:`Decision`. :func:`compile_policy_source` loads and compiles in one call (a shipped
name, a file or YAML text). The grammar is documented in ``policies/README.md``.

Modules, in the order a policy passes through them: ``schema`` (pydantic models of the YAML), ``loader`` (YAML
with line numbers), ``compiler`` (schema -> compiled rules against the catalog and risk head), ``rules`` (the
compiled rule forms), ``run`` (``CompiledPolicy`` and ``PolicyRun``, the per-request state machine), ``window``
(the sliding-window state of a rule's condition), ``segments`` (a prompt text that keeps each message's role),
``decision`` (result types), ``language`` (language/script detection), ``cases`` (the ``safesail policy test``
runner).
"""

from safesail_guard.policy.compiler import compile_policy, compile_policy_source
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
from safesail_guard.policy.language import LanguageGuess, detect_language
from safesail_guard.policy.loader import PolicyError, PolicyIssue, load_policy
from safesail_guard.policy.run import CompiledPolicy, PolicyRun
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
    "compile_policy_source",
    "detect_language",
    "json_schema",
    "load_policy",
    "most_severe",
]
