"""safesail-guard: a runtime safety monitor that reads an LLM's safety features through sparse autoencoders.

This is the online half. Serving (`server`, `runtime`, `policy`, `audit`, `telemetry`, `ui` and the top-level
modules they use: `models`, `hooks`, `sae`, `chat_template`, `events`, `llm_config`, `llm_client`) never imports
the offline pipeline (`safesail_training`); only the `cli` package's pipeline commands do, inside the commands.
The neuron database (`safesail_neuron_db`) is the contract between the halves: both import it and it imports
neither. The import contracts in ``pyproject.toml`` (run by ``tests/test_import_contracts.py``) enforce this;
``docs/architecture.md`` draws the parts and the arrows allowed between them.
"""

__version__ = "0.1.0"
