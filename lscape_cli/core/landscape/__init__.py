"""The landscape around one point: directions, the loss on lines and planes, and sharpness.

It owns direction vectors (:mod:`.directions`: random filter-normalised, PCA of a trajectory, Hessian
eigenvectors), the batched evaluation of the loss at many points of a subspace (:mod:`.surface`),
``slice``'s request, engine and result (:mod:`.slice_request`, :mod:`.slice_directions`,
:mod:`.slice_run`, :mod:`.slice_results`, with the grid and its statistics in :mod:`.slices`), and the
sharpness measures (:mod:`.sharpness`: random, worst-case, weight noise, the PAC-Bayes sigma).

It imports core's top-level modules and :mod:`lscape_cli.core.linalg`.
"""
