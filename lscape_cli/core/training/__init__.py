"""Training: R restarts of one model trained together, and curvature tracked while they train.

It owns :class:`~.engine.TrainConfig` and :func:`~.engine.train_restarts` (:mod:`.engine`), the stacked
parameters and element-wise optimizers behind them (:mod:`.stacked`), learning-rate schedules and
convergence rules (:mod:`.train_rules`), and the probe engine run at chosen epochs (:mod:`.tracking`).

It imports core's top-level modules, :mod:`lscape_cli.core.linalg`, :mod:`lscape_cli.core.landscape`
(the first layer factored out of the forward) and :mod:`lscape_cli.core.probe` (tracking).
"""
