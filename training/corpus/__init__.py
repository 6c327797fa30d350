"""Built-in corpora: concept-contrastive query pairs and general text (see data/DATA_CARD.md)."""
