"""In-process fakes for tests: a scriptable OpenAI-compatible chat server (`fake_openai`)."""
