"""A fake scanner for `policy test`: every word is a token; a few words fire features of the test catalog."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from safesail_guard.events import TokenActivations
from safesail_guard.policy import CompiledPolicy, Decision
from tests.policy.builders import tok

LEXICON: dict[str, dict[str, float]] = {
    "gun": {"6_1": 0.6},
    "bomb": {"6_2": 0.9, "6_3": 0.8},
    "meth": {"14_11": 0.7},
    "slur": {"24_20": 0.5},
}


@dataclass
class FakeScan:
    tokens: list[TokenActivations]
    decision: Decision


@dataclass
class FakeScanner:
    """Scores words with ``lexicon`` (word -> {feature id: normalized activation}); records every call."""

    lexicon: dict[str, dict[str, float]] = field(default_factory=lambda: dict(LEXICON))
    calls: list[tuple[list[dict[str, str]], str | None]] = field(default_factory=list)

    def scan(self, messages: list[dict[str, str]], *, policy: CompiledPolicy, response: str | None) -> Any:
        self.calls.append((messages, response))
        tokens: list[TokenActivations] = []
        for m in messages:
            tokens.append(tok(len(tokens), scope="prompt", content=False, text=f"<{m['role']}>"))
            for word in m["content"].split():
                tokens.append(tok(len(tokens), self._acts(word), scope="prompt",
                                  text=word + " "))
        for word in (response or "").split():
            tokens.append(tok(len(tokens), self._acts(word), text=word + " "))
        prompt = "\n".join(m["content"] for m in messages if m["role"] == "user")
        return FakeScan(tokens, policy.evaluate(tokens, prompt))

    def _acts(self, word: str) -> dict[str, float]:
        return self.lexicon.get(word.lower().strip("?.!,"), {})
