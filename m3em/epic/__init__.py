"""The EPIC data layer: everything the stages agree on about files and configuration.

* :mod:`m3em.epic.config` — the config boundary (YAML -> the shipped JSON schema
  ``config.schema.yaml`` -> frozen dataclasses);
* :mod:`m3em.epic.annotations` — EPIC-KITCHENS-100 annotation files (CSV / pickle);
* :mod:`m3em.epic.streams` — the table of feature streams;
* :mod:`m3em.epic.features` — the per-(video, stream) feature file contract;
* :mod:`m3em.epic.scores` — score files of trained runs and ensembles;
* :mod:`m3em.epic.official_features` — the organisers' pooled features as feature files;
* :mod:`m3em.epic.safe_pickle` — unpickling restricted to data classes;
* :mod:`m3em.epic.atomic` — write-to-temporary-then-rename outputs;
* :mod:`m3em.epic.errors` — :class:`~m3em.epic.errors.InputError`, the base of every bad-input error;
* :mod:`m3em.epic.cli` — the entry-point convention (``--config`` sections as dataclasses, a bad
  input as one stderr line and exit 1).

It imports nothing from the rest of the project: models, training, extractors and the workflow
all build on it.
"""
