"""Connectivity of two minima: the paths between them, and the permutation symmetry aligned first.

It owns ``connect``'s request, engine and result (:mod:`.paths`: linear and Bezier paths, their loss
profiles and barriers), weight matching of hidden units (:mod:`.alignment`, Git Re-Basin) and the
permutation structure of a user's module derived by tracing it (:mod:`.permutation_trace`).

It imports core's top-level modules, :mod:`lscape_cli.core.landscape` (points of a path evaluated as
points of a subspace) and :mod:`lscape_cli.core.training` (the stacked models' BatchNorm test).
"""
