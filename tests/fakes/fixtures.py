"""Fixtures shared by tests that talk to the fake OpenAI server."""

from __future__ import annotations

import pytest

LLM_ENV_VARS = ("OPENAI_API_KEY", "SAFESAIL_LLM_API_KEY", "SAFESAIL_LLM_BASE_URL", "SAFESAIL_LLM_MODEL")


@pytest.fixture(autouse=True)
def clean_llm_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No LLM settings leak in from the environment of whoever runs the tests."""
    for name in LLM_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
