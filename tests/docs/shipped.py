"""What the docs are checked against: the shipped neuron database's feature ids and domains (read once)."""

from __future__ import annotations

import functools


@functools.cache
def shipped_feature_ids() -> frozenset[str]:
    """Every feature id of the shipped database."""
    from safesail_neuron_db import NeuronDB

    with NeuronDB.open(verify=False) as db:
        return frozenset(db.feature_ids())


@functools.cache
def shipped_domains() -> frozenset[str]:
    """The level-0 concepts (domains) of the shipped database."""
    from safesail_neuron_db import NeuronDB

    with NeuronDB.open(verify=False) as db:
        return frozenset(db.info()["counts"]["per_domain"])
