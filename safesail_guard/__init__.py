"""safesail-guard: a runtime safety monitor that reads an LLM's safety features through sparse autoencoders.

The online half (this package) never imports the offline pipeline (`safesail_training`); the neuron
database (`safesail_neuron_db`) is the contract between them.
"""

__version__ = "0.1.0"
