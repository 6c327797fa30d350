"""Offline pipeline (installed as `safesail_training`): corpus, activation harvesting, SAE training and selection."""
