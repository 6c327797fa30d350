"""Built-in corpora: concept-contrastive query pairs and general text (see data/DATA_CARD.md).

Modules: `pairs` (concept-contrastive pairs, taxonomy, loader; `make_template_pairs` regenerates the template
pairs), `general` (the general-text corpus and user files; `make_general` rebuilds it from `general_doc_sources`,
`general_doc_text` and the `_general_templates` data), `safety` (the labelled safety set; `make_safety_set`
rebuilds it) and `errors` (`CorpusError`). `build_sae` reads the pairs and the general text, `build_db` the
pairs; the safety set is read through the loader API of `safety`.
"""
