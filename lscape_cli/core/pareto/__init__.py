"""Fit versus flatness across many runs: Pareto fronts and ``pareto``'s study.

It owns the mathematics of fronts, ranks and hypervolumes (:mod:`.fronts`, pure Python) and
:class:`~.study.ParetoRequest` / :func:`~.study.run_pareto` (:mod:`.study`: runs grouped by
configuration, fronts per group and across groups, the spread of minima after alignment).

It imports :mod:`lscape_cli.core.connectivity` (alignment, for the spread after weight matching).
"""
