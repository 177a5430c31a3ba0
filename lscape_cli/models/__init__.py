"""Models: which module a description names, and opening a checkpoint as a model to evaluate.

What lives here, from the bottom up (each module imports only those above it in this list):

- :mod:`~lscape_cli.models.user`: models the registry does not know, a factory the user names
  (``--model-def PATH.py:FUNC`` or ``module:FUNC``) or a torchvision builder; the trust rule, and the
  guard user code is imported and built under; checking a model on data.
- :mod:`~lscape_cli.models.registry`: the registry of architectures as plain data (name -> config
  dataclass + builder) and :class:`ModelSpec`, what a checkpoint records to rebuild its model.
- :mod:`~lscape_cli.models.losses`: the loss a model is evaluated with: ``--loss`` parsed, or the user's
  own function (``--loss-def``) under the trust rule of user models.
- :mod:`~lscape_cli.models.training`: a user's model built and checked for ``lscape train``.
- :mod:`~lscape_cli.models.loading`: rebuilding the module a checkpoint or trajectory file describes
  and loading its tensors strictly (:func:`~lscape_cli.models.loading.load_model`).
- :mod:`~lscape_cli.models.initial`: the initial parameters a checkpoint's training started from.
- :mod:`~lscape_cli.models.evaluation`: a checkpoint opened for evaluation, its model, data split, loss
  and evaluation protocol (:func:`~lscape_cli.models.evaluation.load_for_eval`), what every evaluating
  command does first.

Files are read and written by :mod:`lscape_cli.storage` (which never imports this package); the
measurements are :mod:`lscape_cli.core`'s. The registry's names are importable from here
(``from lscape_cli import models; models.build(models.make_spec("mlp", {}))``).
"""

from lscape_cli.models.registry import (
    MLP,
    REGISTRY,
    CNNConfig,
    Linear,
    LinearConfig,
    MLPConfig,
    ModelEntry,
    ModelSpec,
    ResNet,
    ResNetConfig,
    SimpleCNN,
    build,
    make_spec,
    num_parameters,
)

__all__ = [
    "MLP",
    "REGISTRY",
    "CNNConfig",
    "Linear",
    "LinearConfig",
    "MLPConfig",
    "ModelEntry",
    "ModelSpec",
    "ResNet",
    "ResNetConfig",
    "SimpleCNN",
    "build",
    "make_spec",
    "num_parameters",
]
