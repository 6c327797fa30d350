"""Every span, event, attribute and metric name the guard emits, in one place.

Names under ``gen_ai.*``, ``server.*``, ``error.*`` and ``http.*`` follow the OpenTelemetry semantic conventions
(GenAI conventions at their "latest experimental" level: ``gen_ai.provider.name``, not the older
``gen_ai.system``); names under ``safesail.*`` are the guard's own. The constants are strings defined here rather
than imported from ``opentelemetry-semantic-conventions`` because the GenAI names are deprecated there (they moved
to a separate repository) and the guard must not change names when that package does.

``docs/observability.md`` has the reference tables; a test checks that every name here appears there.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

# -- instrumentation scope ------------------------------------------------------------------------------------------
SCOPE: Final = "safesail_guard"
"""Name of the tracer and meter (the OTel instrumentation scope)."""

# -- GenAI semantic conventions ------------------------------------------------------------------------------------
GEN_AI_OPERATION_NAME: Final = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME: Final = "gen_ai.provider.name"
GEN_AI_REQUEST_MODEL: Final = "gen_ai.request.model"
GEN_AI_REQUEST_MAX_TOKENS: Final = "gen_ai.request.max_tokens"
GEN_AI_REQUEST_TEMPERATURE: Final = "gen_ai.request.temperature"
GEN_AI_REQUEST_TOP_P: Final = "gen_ai.request.top_p"
GEN_AI_REQUEST_TOP_K: Final = "gen_ai.request.top_k"
GEN_AI_REQUEST_SEED: Final = "gen_ai.request.seed"
GEN_AI_REQUEST_FREQUENCY_PENALTY: Final = "gen_ai.request.frequency_penalty"
GEN_AI_REQUEST_PRESENCE_PENALTY: Final = "gen_ai.request.presence_penalty"
GEN_AI_REQUEST_CHOICE_COUNT: Final = "gen_ai.request.choice.count"
GEN_AI_RESPONSE_ID: Final = "gen_ai.response.id"
GEN_AI_RESPONSE_MODEL: Final = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS: Final = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS: Final = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS: Final = "gen_ai.usage.output_tokens"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"

TOKEN_TYPE_INPUT: Final = "input"
TOKEN_TYPE_OUTPUT: Final = "output"

OPERATION_CHAT: Final = "chat"
OPERATION_TEXT_COMPLETION: Final = "text_completion"

PROVIDER_SAFESAIL: Final = "safesail"
"""``gen_ai.provider.name`` of the guard's own SERVER span and server metrics, in both modes."""
PROVIDER_OPENAI: Final = "openai"
"""``gen_ai.provider.name`` of the upstream CLIENT span: the upstream speaks the OpenAI wire format."""

# -- general semantic conventions ----------------------------------------------------------------------------------
SERVER_ADDRESS: Final = "server.address"
SERVER_PORT: Final = "server.port"
ERROR_TYPE: Final = "error.type"
HTTP_RESPONSE_STATUS_CODE: Final = "http.response.status_code"

# -- safesail attributes -------------------------------------------------------------------------------------------
SAFESAIL_MODE: Final = "safesail.mode"
"""``local`` (the guard hosts the model) or ``upstream`` (it forwards to another OpenAI-compatible server)."""
SAFESAIL_STREAM: Final = "safesail.stream"
SAFESAIL_REQUEST_ID: Final = "safesail.request_id"
SAFESAIL_KEY_ID: Final = "safesail.key_id"
"""The id of the client's API key (never the key)."""
SAFESAIL_STAGE: Final = "safesail.stage"
SAFESAIL_ACTION: Final = "safesail.action"
SAFESAIL_POLICY: Final = "safesail.policy"
SAFESAIL_RULES: Final = "safesail.rules"
SAFESAIL_FEATURE_IDS: Final = "safesail.feature.ids"
SAFESAIL_FEATURE_NAMES: Final = "safesail.feature.names"
SAFESAIL_FEATURE_ACTIVATIONS: Final = "safesail.feature.activations"
SAFESAIL_FEATURE_NORMALIZED: Final = "safesail.feature.normalized"
SAFESAIL_SCORE: Final = "safesail.score"
SAFESAIL_CONCEPT: Final = "safesail.concept"
SAFESAIL_CONCEPTS: Final = "safesail.concepts"
SAFESAIL_LANGUAGE: Final = "safesail.language"
SAFESAIL_GUARD_DURATION: Final = "safesail.guard.duration"
SAFESAIL_GUARD_TOKENS: Final = "safesail.guard.tokens"
SAFESAIL_TIME_TO_FIRST_TOKEN: Final = "safesail.time_to_first_token"

MODES: Final = ("local", "upstream")
NO_CONCEPT: Final = "none"
"""``safesail.concept`` of a decision where no concept scored at least :data:`CONCEPT_THRESHOLD`."""
NO_ACTION: Final = "none"
"""``safesail.action`` of a request that ended before any decision was recorded."""
CONCEPT_THRESHOLD: Final = 0.5
"""A concept counts in ``safesail.decisions`` when its score is at least this."""

# -- stages and spans ----------------------------------------------------------------------------------------------
STAGE_PROMPT_SCORING: Final = "prompt_scoring"
STAGE_GENERATION: Final = "generation"
STAGE_UPSTREAM: Final = "upstream"
STAGE_RESPONSE_SCORING: Final = "response_scoring"
STAGES: Final = (STAGE_PROMPT_SCORING, STAGE_GENERATION, STAGE_UPSTREAM, STAGE_RESPONSE_SCORING)
"""Valid ``safesail.stage`` values, in pipeline order."""

SPAN_PROMPT_SCORING: Final = "safesail.prompt_scoring"
SPAN_GENERATION: Final = "safesail.generation"
SPAN_RESPONSE_SCORING: Final = "safesail.response_scoring"
STAGE_SPANS: Final = MappingProxyType({
    STAGE_PROMPT_SCORING: SPAN_PROMPT_SCORING,
    STAGE_GENERATION: SPAN_GENERATION,
    STAGE_RESPONSE_SCORING: SPAN_RESPONSE_SCORING,
})
"""Span name of each INTERNAL stage; the upstream stage's CLIENT span is named ``"{operation} {model}"``."""

EVENT_DECISION: Final = "safesail.decision"

# -- metrics -------------------------------------------------------------------------------------------------------
METRIC_SERVER_REQUEST_DURATION: Final = "gen_ai.server.request.duration"
METRIC_SERVER_TIME_TO_FIRST_TOKEN: Final = "gen_ai.server.time_to_first_token"
METRIC_SERVER_TIME_PER_OUTPUT_TOKEN: Final = "gen_ai.server.time_per_output_token"
METRIC_CLIENT_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
METRIC_CLIENT_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
METRIC_REQUESTS: Final = "safesail.requests"
METRIC_DECISIONS: Final = "safesail.decisions"
METRIC_STAGE_DURATION: Final = "safesail.stage.duration"
METRIC_GUARD_DURATION: Final = "safesail.guard.duration"
METRIC_GUARD_TIME_PER_TOKEN: Final = "safesail.guard.time_per_token"

# Bucket boundaries: the GenAI conventions' advice where one exists, otherwise chosen for the guard's range.
DURATION_BUCKETS: Final = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS: Final = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS: Final = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
TOKEN_BUCKETS: Final = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
STAGE_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                         120.0)
GUARD_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
GUARD_PER_TOKEN_BUCKETS: Final = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1)
