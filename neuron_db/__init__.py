"""Neuron database (installed as `safesail_neuron_db`): the contract between the offline and online halves."""
