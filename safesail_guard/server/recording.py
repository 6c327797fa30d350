"""Recording a chat's verdicts: one span event on the request's trace and one audit record per verdict.

`record_verdict` commits one verdict to the audit log (on a thread; it returns once the record is durable), so
`server/responses.py` calls it before the part of the answer that depends on the verdict leaves the server: the
prompt's before the first byte (stream headers included), the final one before the last chunk or the JSON
completion. `record_outcome` adds usage and guard time to the trace and records what is left of a finished
chat. `local_stage` opens the telemetry stage spans the app owns in local mode (upstream mode's backend traces
its own, `ChatJob.stage`).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from safesail_guard.runtime.verdict import Verdict
from safesail_guard.server.jobs import ChatJob, Outcome
from safesail_guard.server.state import ServerState

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

    from safesail_guard.server.backend import GuardBackend
    from safesail_guard.telemetry import RequestTrace

TRACE_STAGE = {"prompt": "prompt_scoring", "final": "response_scoring"}
"""Verdict stage -> the telemetry stage whose span event carries it."""
ENDPOINT = "/v1/chat/completions"


def local_stage(be: GuardBackend, trace: RequestTrace, name: str) -> AbstractContextManager[Any]:
    """A telemetry stage span in local mode; upstream mode traces its own stages (`ChatJob.stage`)."""
    return trace.stage(name) if be.mode == "local" else contextlib.nullcontext()


async def record_verdict(st: ServerState, job: ChatJob, verdict: Verdict, *, key_id: str | None,
                         trace: RequestTrace, model: str, latency_ms: float | None = None,
                         extra: dict[str, Any] | None = None) -> None:
    """Trace one verdict (a span event) and commit it to the audit log (on a thread; returns once durable)."""
    from safesail_guard.audit import AuditRecord

    trace.decision(TRACE_STAGE[verdict.stage], verdict.decision.to_dict() if verdict.decision is not None else None,
                   score=verdict.score, concepts=verdict.concepts, key_id=key_id)
    pivot = verdict.pivot_summary()
    rec = AuditRecord(request_id=job.request_id, stage=verdict.stage, action=verdict.action,
                      policy=st.served.policy_name, rules=verdict.rules, features=verdict.top_features(),
                      concepts=verdict.concepts, score=verdict.score, key_id=key_id, model=model,
                      mode=st.config.mode, endpoint=ENDPOINT, text=verdict.text, latency_ms=latency_ms,
                      extra={**(extra or {}), **({"pivot": pivot} if verdict.pivot is not None else {})})
    await asyncio.to_thread(st.audit.append, rec)
    st.decisions += 1


async def record_outcome(st: ServerState, job: ChatJob, out: Outcome, key_id: str | None, trace: RequestTrace,
                         latency_ms: float, *, prompt_done: bool = False) -> None:
    """Trace and audit a finished chat's verdicts (the prompt's unless already recorded, then the final one)."""
    model = out.model or job.client_model
    trace.usage(out.prompt_tokens, out.completion_tokens)
    trace.guard_overhead(out.guard_seconds, out.prompt_tokens + out.completion_tokens)
    if not prompt_done:
        await record_verdict(st, job, out.prompt, key_id=key_id, trace=trace, model=model)
    extra: dict[str, Any] = {"finish_reason": out.finish_reason, "stream": job.stream}
    if out.upstream:
        extra["upstream"] = out.upstream
    await record_verdict(st, job, out.final, key_id=key_id, trace=trace, model=model, latency_ms=latency_ms,
                         extra=extra)


__all__ = ["TRACE_STAGE", "local_stage", "record_outcome", "record_verdict"]
