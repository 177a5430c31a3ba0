"""The probe engine and its policies: every measurement ``lscape probe`` makes at one point.

It owns :class:`~.engine.ProbeRequest` and :func:`~.engine.run_probe` (:mod:`.engine`: which estimators
run, in what order, with which budgets, and the result's keys), probing a split given as batches or
streamed (:mod:`.batches`), the PAC-Bayes bound (:mod:`.pac_bayes`) and the CI gates ``--check``
evaluates against the results (:mod:`.checks`).

It imports core's top-level modules, :mod:`lscape_cli.core.linalg` and :mod:`lscape_cli.core.landscape`.
"""
