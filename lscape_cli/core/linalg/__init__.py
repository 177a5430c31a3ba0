"""Linear algebra of curvature: the operators and the estimators that read them through products alone.

The bottom layer of the library. It owns the Hessian-vector product (:mod:`.hvp`, with its strategies in
:mod:`._hvp_strategies`, their timing in :mod:`._hvp_calibration`, the float64 cross-check in
:mod:`.hvp_check` and the chunk plan in :mod:`.memory`), the GGN and Fisher operators
(:mod:`.curvature`), principal sub-matrices of parameter blocks (:mod:`.blocks`), Lanczos and power
iteration (:mod:`.spectrum`) with the error bounds of their Ritz values (:mod:`.eigen_bounds`), trace
and Frobenius estimators (:mod:`.trace`), spectral density and effective rank (:mod:`.density`), the
floating-point rounding floor of the products (:mod:`.rounding`) and the mean and variance of repeated
scalar measurements (:mod:`.stats`).

It imports only core's top-level modules (objective, params, losses, attention, choices, progress):
no other subpackage of core.
"""
