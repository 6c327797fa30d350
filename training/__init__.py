"""Offline pipeline (installed as `safesail_training`): corpus, activation harvesting, SAE training and selection.

The stages and their modules, in pipeline order (the online guard never imports this package; the neuron
database package `safesail_neuron_db` is the contract both halves share):

* corpus: `corpus` (concept pairs, general text, the labelled safety set, and their builders);
* activations and SAEs: `harvest` -> `shards` -> `train` (+ `metrics`), swept and selected by `build_sae`
  (`select`, `model_metrics`);
* the database: `build_db` runs the stages of `build_db_select` (pairs, `db_filter`, `act_records`),
  `build_db_describe` (`explain`, `simulate*`, `spscore`, `feature_map`, `embedder`), `build_db_checks`
  (`style_check`) and `build_db_write` (`risk_head`), with `build_db_config` and `build_db_resume`;
  `db_report` draws the results page;
* `pairs_generate`: de-concept twins written by an LLM.

The CLI (`safesail_guard.cli`) imports these lazily, one command at a time.
"""
