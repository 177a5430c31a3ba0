"""lscape from Python: the engine of the commands, on a model and data in memory.

Each function makes the same request object as its command and makes the same core call, and returns
what the command writes under ``results`` (keys documented in docs/formats.md), so a notebook and a
shell script get the same numbers::

    from lscape_cli import api
    results = api.probe(model, (x, y), lambda_max=True, trace=True)

``data`` is ``(x, y)`` (inputs ``(N, ...)``; integer labels ``(N,)``, integer token targets ``(N, T)``
with ``(N, T, V)`` outputs and -100 as padding, or floating targets ``(N,)``/``(N, D)`` fitted with
``loss="mse"`` or ``"bce"``), a ``DataLoader`` or any iterable of ``(inputs, targets)`` batches (joined
once, so means are exact whatever the batch sizes), a dict ``{"train": data, "test": data}`` of either,
or the path of a data file as for ``--data`` (its train/val/test splits). Inputs may be a dict of
tensors, passed to the model as keyword arguments (``model(**inputs)``; probe, slice and connect).

``loss`` is ``"ce"``, ``"mse"``, ``"bce"``, a spelling with settings (``"ce:label_smoothing=0.1"``), a
:class:`lscape_cli.core.losses.Loss`, or any callable ``loss(outputs, targets) -> scalar mean`` (taken as
a mean over the batch's samples). ``output`` names the model output that is scored when the model
returns a tuple, dict or object (``"logits"``; default: the tensor, or element 0 of a tuple). The model
is evaluated in eval mode (its mode is restored afterwards) and is never modified; tensors are used on
the device and dtype of the model's parameters (integer inputs stay integers).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from lscape_cli.errors import LscapeError

if TYPE_CHECKING:
    from lscape_cli.core.landscape.slice_results import SliceResults
    from lscape_cli.core.landscape.slice_run import ResumeKey
    from lscape_cli.core.losses import Loss, LossOrigin
    from lscape_cli.core.probe.results import ProbeResults

Data = Any  # (x, y) | DataLoader | iterable of (x, y) batches | {"train": ..., ...} | str | Path
LossArg = str | Callable[[Any, torch.Tensor], torch.Tensor]  # a spelling, a Loss, or a callable


def _loss(loss: LossArg) -> Loss:
    """``loss`` as a :class:`lscape_cli.core.losses.Loss` (a callable becomes a user loss)."""
    from lscape_cli.core.losses import Loss, parse

    if isinstance(loss, str):
        try:
            return parse(loss)
        except ValueError as exc:
            raise LscapeError(
                str(exc), "loss", "use ce, mse, bce, 'ce:label_smoothing=0.1' or a callable"
            ) from exc
    if not callable(loss):
        raise LscapeError(f"loss is a {type(loss).__name__}", "loss", "pass a name or a callable")
    name = getattr(loss, "__qualname__", None) or type(loss).__name__
    origin: LossOrigin = {
        "source": f"{getattr(loss, '__module__', '?')}:{name}",
        "file": None,
        "sha256": None,
    }
    return Loss("user", fn=loss, source=origin["source"], origin=origin)


@contextlib.contextmanager
def _adapted(model: nn.Module, output: str | None) -> Iterator[None]:
    """Inside the block the model scores ``output`` and takes dict inputs as keywords (hooks)."""
    from lscape_cli.batches import keyword_inputs
    from lscape_cli.model_output import select_output

    handles = [keyword_inputs(model), select_output(model, output)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def splits_of(data: Data, model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``data`` as ``split -> (x, y)`` on the model's device and dtype."""
    from lscape_cli.batches import Inputs, is_batches, join

    device, dtype = _device_dtype(model)
    if is_batches(data):
        data = {"train": data}
    if isinstance(data, (str, Path)):
        from lscape_cli import datasets

        spec = datasets.DatasetSpec("file", path=str(Path(data).resolve()))
        loaded = datasets.load(spec, Path("."), device=device, dtype=dtype)
        # a streamed directory's inputs (core.samples.StreamedSamples) serve every function here as a
        # tensor would: they are only sliced and indexed, chunk by chunk
        return {s: (cast(torch.Tensor, loaded.x[s]), loaded.y[s]) for s in datasets.SPLITS}
    pairs = data if isinstance(data, dict) else {"train": data}
    out = {}
    for split, pair in pairs.items():
        if is_batches(pair):
            out[split] = join(pair, device, dtype)
            continue
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
            raise LscapeError(f"data[{split!r}] is not an (x, y) pair", "data", "pass (x, y) tensors")
        x = Inputs(pair[0]) if isinstance(pair[0], Mapping) else torch.as_tensor(pair[0])
        y = torch.as_tensor(pair[1])
        labels = dtype if y.is_floating_point() else torch.int64  # regression targets stay floating
        inputs = x.to(device, dtype) if isinstance(x, Inputs) else x.to(device=device)
        if isinstance(inputs, torch.Tensor) and (inputs.is_floating_point() or inputs.dtype == torch.uint8):
            inputs = inputs.to(dtype)  # integer token ids stay integers
        out[split] = (inputs, y.to(device=device, dtype=labels))
    return out


def _outputs(ys: list[torch.Tensor], loss: Any) -> tuple[int, str]:
    """``(model outputs the labels ask for, task)``; floating targets need mse, bce or a callable."""
    from lscape_cli.core.objective import task_of

    task = task_of(ys[0])
    if task == "regression":
        if loss.kind not in ("mse", "bce", "user"):
            raise LscapeError(
                "y holds floating regression targets, which cross-entropy cannot fit",
                "data",
                "pass loss='mse', or give y as integer class labels",
            )
        return (1 if ys[0].dim() == 1 else int(ys[0].shape[1])), task
    return 1 + max(int(v.max()) for v in ys if v.numel()), task


def _checked(model: nn.Module, x: Any, y: torch.Tensor, loss: Any) -> None:
    """The model runs on two samples and returns what the targets ask for (one ``Error`` line if not)."""
    from lscape_cli.models.user import check_on_data

    n, task = _outputs([y], loss)
    steps = tuple(y.shape[1:]) if task != "regression" else ()
    check_on_data(model, x, n, loss, "model", task=task, target_shape=steps)


def _pick(data: Data, model: nn.Module, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    pairs = splits_of(data, model)
    if split not in pairs:
        raise LscapeError(f"no {split!r} split in the data", "split", f"choose one of: {', '.join(pairs)}")
    return pairs[split]


class _EvalMode:
    """Eval mode inside the block, the caller's mode after it."""

    def __init__(self, *models: nn.Module) -> None:
        self.models = models
        self.modes = [m.training for m in models]

    def __enter__(self) -> None:
        for m in self.models:
            m.eval()

    def __exit__(self, *exc: object) -> None:
        for m, mode in zip(self.models, self.modes, strict=True):
            m.train(mode)


def probe(
    model: nn.Module,
    data: Data,
    *,
    loss: LossArg = "ce",
    output: str | None = None,
    split: str = "train",
    max_batch: int = 4096,
    initial_params: dict[str, torch.Tensor] | None = None,
    **request: Any,
) -> ProbeResults:
    """Curvature and flatness at the model's parameters: ``lscape probe``'s ``results``.

    Args:
        model: any ``nn.Module`` returning ``(N, classes)`` scores.
        data: see the module docstring.
        loss: see the module docstring (``ce``, ``mse``, ``bce``, settings, or a callable).
        output: which model output is scored (module docstring).
        split: which split of ``data`` to measure on.
        max_batch: samples per forward pass (memory only).
        initial_params: the parameters training started from (name -> tensor), the centre of the
            PAC-Bayes prior of ``pac_bayes=True``; None: a prior centred at 0 (the record says so).
        **request: fields of :class:`lscape_cli.core.probe.engine.ProbeRequest` (``lambda_max``, ``top_k``,
            ``trace``, ``frobenius``, ``density``, ``grad_norm``, ``sharpness_eps``, ``tol``, ``seed``,
            ...); with none of the measurements asked for, ``DEFAULT_MEASUREMENTS`` (as ``lscape probe``).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lscape_cli import api
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 4, generator=g), torch.arange(64) % 3
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> res = api.probe(model, (x, y), lambda_max=True, trace=True, seed=0)
        >>> res["lambda_max"]["converged"], res["lambda_max"]["method"]
        (True, 'lanczos')
        >>> res["trace"]["num_matvecs"] > 0 and res["trace"]["stderr"] >= 0
        True
    """
    from lscape_cli.core.linalg.hvp import Objective
    from lscape_cli.core.probe.engine import ProbeRequest, run_probe
    from lscape_cli.core.probe.pac_bayes import Prior

    x, y = _pick(data, model, split)
    req = ProbeRequest(**request).with_defaults()
    req.validate()
    loss = _loss(loss)
    with _EvalMode(model), _adapted(model, output):
        _checked(model, x, y, loss)
        obj = Objective.from_module(model, x, y, loss, max_batch)
        prior = None if initial_params is None else Prior("init", initial_params, "initial_params (caller)")
        return run_probe(obj, req, prior=prior).results


class _Memory:
    """A slice store that keeps nothing (a notebook slice is not resumable)."""

    where = "memory"

    def save_directions(self, directions: Any, digest: str) -> None:
        """Nothing to save."""

    def resume(self, key: ResumeKey, requested: bool, is_main: bool) -> list[tuple[Any, Any, Any]]:
        """No partial grid."""
        return []

    def save_partial(self, loss: Any, acc: Any, done: Any, key: ResumeKey, rank: int, world: int) -> None:
        """Nothing to keep."""


def slice(  # noqa: A001 - the command's name
    model: nn.Module,
    data: Data,
    *,
    dims: int = 1,
    steps: int = 21,
    radius: float = 1.0,
    count: int = 1,
    norm: str = "filter",
    bias: str = "zero",
    seed: int = 0,
    loss: LossArg = "ce",
    output: str | None = None,
    split: str = "train",
    max_batch: int = 4096,
) -> SliceResults:
    """Loss and accuracy on random lines (``dims=1``) or a plane (``dims=2``): ``lscape slice``'s ``results``.

    Directions are Gaussian, filter-normalised by default (Li et al. 2018), drawn from ``seed``; the
    grid runs over ``[-radius, radius]`` with ``steps`` points per axis.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lscape_cli import api
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 4, generator=g), torch.arange(64) % 3
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> res = api.slice(model, (x, y), dims=1, steps=5, radius=0.5)
        >>> res["grid"]["shape"], res["grid"]["alpha"][2]
        ([1, 5], 0.0)
    """
    from lscape_cli.core.landscape.slice_request import SliceRequest
    from lscape_cli.core.landscape.slice_run import SliceData, run_slice
    from lscape_cli.distributed import Group

    x, y = _pick(data, model, split)
    req = SliceRequest(
        dims=dims,
        radius=radius,
        steps=steps,
        count=count,
        toward=None,
        pca=None,
        eigen=False,
        directions=None,
        norm=norm,
        bias=bias,
        orthogonalize=False,
        eigen_tol=1e-6,
        seed=seed,
        memory_budget_mib=1024,
        strategy="auto",
        basin_threshold=0.1,
        fit_radius=None,
        zscale="auto",
        resume=False,
        plot=False,
    )
    req.validate()
    _, dtype = _device_dtype(model)
    loss = _loss(loss)
    sd = SliceData(model, x, y, loss, split, "eval", dtype, max_batch, _describe(model), "in-memory")
    with _EvalMode(model), _adapted(model, output):
        _checked(model, x, y, loss)
        return run_slice(sd, req, None, _Memory(), Group()).results


def _describe(model: nn.Module) -> dict[str, Any]:
    return {"name": "in-memory", "config": {"class": type(model).__qualname__}}


def connect(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Data,
    *,
    points: int = 11,
    align: str = "none",
    loss: LossArg = "ce",
    output: str | None = None,
    seed: int = 0,
    max_batch: int = 4096,
) -> dict[str, Any]:
    """Loss and error along the path from A to B, with barriers: ``lscape connect``'s ``results``.

    With ``align="weights"`` B's hidden units are also permuted onto A's (weight matching) along a
    permutation structure traced from the model (:mod:`lscape_cli.core.connectivity.permutation_trace`).
    ``data`` needs a ``train`` split; a ``test`` split is evaluated too when present.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lscape_cli import api
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 4, generator=g), torch.arange(64) % 3
        >>> a = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> b = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
        >>> res = api.connect(a, b, (x, y), points=5, align="weights")
        >>> res["aligned"]["alignment"]["function_check"]["passed"], len(res["linear"]["train"]["loss"])
        (True, 5)
    """
    from lscape_cli.core.connectivity.paths import ConnectRequest, Endpoint, run_connect
    from lscape_cli.core.connectivity.permutation_trace import traced_spec

    data_ = splits_of(data, model_a)
    if "train" not in data_:
        raise LscapeError("connect needs a 'train' split", "data", "pass (x, y) or {'train': (x, y), ...}")

    def end(m: nn.Module) -> Endpoint:
        return Endpoint(
            {n: p.detach() for n, p in m.named_parameters()}, {n: b.detach() for n, b in m.named_buffers()}
        )

    req = ConnectRequest(points=points, align=align, seed=seed, max_batch=max_batch)
    loss = _loss(loss)
    with _EvalMode(model_a, model_b), _adapted(model_a, output), _adapted(model_b, output):
        _checked(model_a, data_["train"][0], data_["train"][1], loss)
        spec = traced_spec(model_a, data_["train"][0][:2]) if align == "weights" else None
        results, _, warnings = run_connect(model_a, spec, end(model_a), end(model_b), data_, loss, req)
    return {**results, "warnings": warnings} if warnings else dict(results)


def train(
    model: nn.Module,
    data: Data,
    *,
    loss: LossArg = "ce",
    output: str | None = None,
    optimizer: str = "sgd",
    lr: float = 0.01,
    epochs: int = 10,
    batch_size: int | None = 128,
    seeds: tuple[int, ...] = (0,),
    **config: Any,
) -> list[Any]:
    """Train restarts of ``model`` from its current weights: ``lscape train``'s engine.

    Every restart starts from the model's parameters as they are and differs by its seed's minibatch
    order. Returns one :class:`lscape_cli.core.training.engine.RunResult` per seed (``state`` is the trained
    ``state_dict``; ``final`` and ``history`` are what ``NAME.train.json`` records); ``model`` itself is
    not changed.

    Args:
        model: any ``nn.Module``.
        data: see the module docstring (``val``/``test`` splits are evaluated when present).
        loss: see the module docstring (``ce``, ``mse``, ``bce``, settings, or a callable).
        output: which model output is scored (module docstring).
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        lr: learning rate.
        epochs: epoch budget.
        batch_size: minibatch size (``None``: full batch).
        seeds: one restart per seed, trained together.
        **config: other fields of :class:`lscape_cli.core.TrainConfig` (``momentum``, ``tol``, ...).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from lscape_cli import api
        >>> g = torch.Generator().manual_seed(0)
        >>> x, y = torch.randn(64, 4, generator=g), torch.arange(64) % 3
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))
        >>> runs = api.train(model, (x, y), optimizer="adam", lr=1e-2, epochs=20, batch_size=None)
        >>> model.load_state_dict(runs[0].state)
        <All keys matched successfully>
        >>> runs[0].final["train_loss"] < runs[0].history[0]["train_loss"]
        True
    """
    import copy

    from lscape_cli.core.training.engine import TrainConfig, train_restarts
    from lscape_cli.datasets import DatasetSpec, Splits

    device, dtype = _device_dtype(model)
    pairs = splits_of(data, model)
    x0, y0 = pairs["train"]
    empty = (x0[:0], y0[:0])
    xs = {s: pairs.get(s, empty)[0] for s in ("train", "val", "test")}
    ys = {s: pairs.get(s, empty)[1] for s in ("train", "val", "test")}
    loss = _loss(loss)
    if not isinstance(x0, torch.Tensor):
        raise LscapeError(
            "train takes tensor inputs (restarts are vmapped over them)", "data", "pass x as one tensor"
        )
    splits = Splits(DatasetSpec("in-memory"), xs, ys, _outputs(list(ys.values()), loss)[0])
    cfg = TrainConfig(loss=loss, optimizer=optimizer, lr=lr, epochs=epochs, batch_size=batch_size, **config)
    start = {k: v.detach().to("cpu", torch.float32 if v.is_floating_point() else v.dtype).clone()
             for k, v in model.state_dict().items()}  # fmt: skip
    with _adapted(model, output):
        work = copy.deepcopy(model)  # the hooks travel with the copy
    return train_restarts(work, splits, cfg, list(seeds), device, dtype, initial_state=lambda s: start)
