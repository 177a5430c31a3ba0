"""Models the registry does not know: a factory the user names, or a torchvision builder.

A *source* is one of

- ``path/to/file.py:FUNC``: ``FUNC`` defined in that file (its directory is importable while it loads);
- ``package.module:FUNC``: ``FUNC`` in an importable module;
- ``torchvision:NAME``: ``torchvision.models.get_model_builder(NAME)`` (never with downloaded weights).

``FUNC(**kwargs)`` must return a ``torch.nn.Module``; the kwargs come from ``--model-args`` (JSON text or a
JSON file). The checkpoint records the source, the kwargs and the sha256 of the defining file as a
:class:`~lscape_cli.models.registry.ModelSpec` named ``user`` (or ``torchvision``) whose config is a
:class:`UserModelConfig`.

Importing code is an explicit act: a ``user`` spec read from a checkpoint is only built when the user
names the source again (``--model-def``) or accepts the recorded one (``--trust-model-def``). Building
runs under a guard: the factory's own randomness does not leak into torch's global generator, and a
factory that prints, or changes torch's global settings or the working directory, is
refused (its output would corrupt ``--json`` records; its settings would change every later result).
Environment variables are not watched: libraries set their own on import (torchvision sets
``TORCHINDUCTOR_CACHE_DIR``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import io
import json
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lscape_cli.errors import LscapeError, UserInterrupt
from lscape_cli.runtime import guard_onednn

USER_KINDS = ("user", "torchvision")  # ModelSpec names of models built from a source


@dataclass(frozen=True)
class UserInputs:
    """The user-model and user-data options of a command (all optional)."""

    model_def: str | None = None  # --model-def SOURCE
    model_args: str | None = None  # --model-args JSON or FILE.json
    trust_model_def: bool = False  # --trust-model-def: build the source a checkpoint records
    data: Path | None = None  # --data FILE (.safetensors, .npz or .pt)
    loss_def: str | None = None  # --loss-def SOURCE: the user's loss function
    output: str | None = None  # --output NAME: which of the model's outputs is scored


@dataclass(frozen=True)
class UserModelConfig:
    """What a checkpoint records about a user model.

    Attributes:
        source: the source as given (``my_model.py:build``, ``pkg.mod:build``, ``torchvision:resnet18``).
        kwargs: keyword arguments of the factory (JSON values).
        file: absolute path of the defining file (None for torchvision builders).
        sha256: sha256 of the defining file when the model was built (None for torchvision builders).
        input_shape: shape of one input sample the model was built for (None: not yet known).
        num_classes: outputs per sample the data asks for (None: not yet known).
        output: the output scored (``--output``: dict key, attribute or tuple index; None: the tensor
            returned, or element 0 of a tuple).
    """

    source: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    file: str | None = None
    sha256: str | None = None
    input_shape: tuple[int, ...] | None = None
    num_classes: int | None = None
    output: str | None = None  # which output is scored (lscape_cli.model_output); None: tensor or [0]


@dataclass(frozen=True)
class Source:
    """A parsed source string."""

    kind: str  # "file", "module" or "torchvision"
    target: str  # the file path, the module name or the torchvision builder name
    func: str  # the factory's name (the builder name for torchvision)
    text: str  # as given


def parse_source(text: str, where: str = "--model-def") -> Source:
    """Split ``PATH.py:FUNC``, ``package.module:FUNC`` or ``torchvision:NAME``."""
    target, sep, func = text.rpartition(":")
    if not sep or not target or not func.isidentifier():
        raise LscapeError(
            f"invalid model source {text!r}",
            where,
            "write PATH.py:FUNC, package.module:FUNC or torchvision:NAME, e.g. my_model.py:build",
        )
    if target == "torchvision":
        return Source("torchvision", func, func, text)
    if target.endswith(".py") or "/" in target or os.sep in target:
        return Source("file", target, func, text)
    if not all(part.isidentifier() for part in target.split(".")):
        raise LscapeError(
            f"invalid module name {target!r} in {text!r}",
            where,
            "give a file ending in .py or a dotted module",
        )
    return Source("module", target, func, text)


def parse_kwargs(text: str | None, where: str = "--model-args") -> dict[str, Any]:
    """``--model-args``: a JSON object, or the path of a file holding one."""
    if not text:
        return {}
    raw = text
    if not text.lstrip().startswith("{") and Path(text).is_file():
        from lscape_cli.storage.files import check_input

        raw = check_input(Path(text), "model arguments file").read_text()
        where = f"{where} {text}"
    try:
        value = json.loads(raw)
    except ValueError as exc:
        raise LscapeError(
            f"not valid JSON ({exc})", where, "give a JSON object, e.g. '{\"width\": 64}', or a .json file"
        ) from exc
    if not isinstance(value, dict):
        raise LscapeError(
            f"model arguments must be a JSON object, got {type(value).__name__}", where, 'e.g. {"width": 64}'
        )
    return value


def make_config(source: str, kwargs: dict[str, Any], where: str = "--model-def") -> UserModelConfig:
    """A config for ``source`` (the file is hashed, not imported)."""
    from lscape_cli.storage.files import sha256_file

    src = parse_source(source, where)
    if src.kind == "torchvision":
        cfg = UserModelConfig(source=source, kwargs=dict(kwargs))
        check_library_kwargs(cfg, where)
        return cfg
    path = Path(src.target) if src.kind == "file" else _module_file(src.target, where)
    if not path.is_file():
        raise LscapeError("model definition file not found", f"{where} {src.target}", "check the path")
    return UserModelConfig(
        source=source, kwargs=dict(kwargs), file=str(path.resolve()), sha256=sha256_file(path)
    )


def _module_file(name: str, where: str) -> Path:
    """The file defining module ``name`` (finding it imports its parent packages, as importing would)."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise LscapeError(f"module {name!r} not found ({exc})", where, "put it on PYTHONPATH") from exc
    except (SystemExit, KeyboardInterrupt) as exc:
        raise stopped(exc, f"importing the packages of {name}", where) from None
    except Exception as exc:  # noqa: BLE001 - a parent package's code ran: any failure is one line
        raise LscapeError(
            f"importing the packages of {name} raised {type(exc).__name__}: {exc}", where, "fix the package"
        ) from exc
    if spec is None or not spec.origin or not Path(spec.origin).is_file():
        raise LscapeError(f"module {name!r} not found", where, "put it on PYTHONPATH or give PATH.py:FUNC")
    return Path(spec.origin)


def config_from_dict(data: dict[str, Any], where: str = "model") -> UserModelConfig:
    """Inverse of ``dataclasses.asdict`` for a recorded config (lists back to tuples), types checked."""
    names = {f.name for f in dataclasses.fields(UserModelConfig)}
    values = {k: v for k, v in data.items() if k in names}
    if not isinstance(values.get("source"), str):
        raise LscapeError("user model metadata has no 'source' string", where, "re-create the checkpoint")
    problems = [
        (key, want)
        for key, want, ok in (
            ("kwargs", "an object", isinstance(values.get("kwargs", {}), dict)),
            ("file", "a string", isinstance(values.get("file"), str | None)),
            ("sha256", "a string", isinstance(values.get("sha256"), str | None)),
            ("input_shape", "a list of positive integers", _shape_ok(values.get("input_shape"))),
            ("num_classes", "a positive integer", _count_ok(values.get("num_classes"))),
        )
        if not ok
    ]
    if problems:
        key, want = problems[0]
        got = json.dumps(values.get(key))[:40]
        raise LscapeError(
            f"malformed model description: model.config.{key} must be {want}, got {got}",
            where,
            "re-create the file (or describe the model with --model-config, see docs/formats.md)",
        )
    if values.get("input_shape") is not None:
        values["input_shape"] = tuple(values["input_shape"])
    return UserModelConfig(**values)


def _shape_ok(value: object) -> bool:
    return value is None or (isinstance(value, list | tuple) and all(_count_ok(v) for v in value))


def _count_ok(value: object) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)


def kind_of(cfg: UserModelConfig) -> str:
    """The ModelSpec name for this config: ``torchvision`` or ``user``."""
    return "torchvision" if parse_source(cfg.source).kind == "torchvision" else "user"


def trusted_kind(name: str, cfg: UserModelConfig, where: str) -> str:
    """The trust rule for a recorded model description: ``torchvision`` only when everything agrees.

    A description rebuilds without a flag only when it says ``torchvision``, its source is
    ``torchvision:NAME`` and it records no file (the builder is then looked up by name inside
    torchvision, :func:`_library_builder`). Anything else -- ``user``, or a ``torchvision`` name over a
    file or import path -- is user code: ``user``, which only ``--model-def`` or ``--trust-model-def``
    builds.
    """
    library = parse_source(cfg.source, where).kind == "torchvision"
    return "torchvision" if name == "torchvision" and library and cfg.file is None else "user"


# ------------------------------------------------------------------------------------------ building


def _global_state() -> dict[str, Any]:
    """The process-wide settings a model factory has no business changing."""
    return {
        "torch default dtype": torch.get_default_dtype(),
        "torch default device": str(torch.get_default_device()),
        "torch grad mode": torch.is_grad_enabled(),
        "torch deterministic algorithms": torch.are_deterministic_algorithms_enabled(),
        "torch anomaly detection": torch.is_anomaly_enabled(),
        "torch threads": torch.get_num_threads(),
        "working directory": os.getcwd(),
    }


def _restore(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Undo what changed (only that: setting a default device installs a dispatch mode)."""
    setters: dict[str, Callable[[Any], Any]] = {
        "torch default dtype": torch.set_default_dtype,
        "torch default device": torch.set_default_device,
        "torch grad mode": torch.set_grad_enabled,
        "torch deterministic algorithms": torch.use_deterministic_algorithms,
        "torch anomaly detection": torch.set_anomaly_enabled,
        "torch threads": torch.set_num_threads,
        "working directory": os.chdir,
    }
    for key, value in before.items():
        if after[key] != value:
            setters[key](value)


@contextlib.contextmanager
def guard(source: str, notes: list[str]) -> Iterator[None]:
    """Run user code: its printing and changes of global settings are refused, its warnings collected.

    Torch's global random generator is forked, so the factory's draws never shift later ones.
    """
    before = _global_state()
    out, err = io.StringIO(), io.StringIO()
    with (
        torch.random.fork_rng(devices=[]),
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
    ):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            after = _global_state()
            _restore(before, after)
    notes.extend(f"{source}: {w.category.__name__}: {w.message}" for w in caught)
    changed = [k for k in before if before[k] != after[k]]
    if changed:
        key = changed[0]
        raise LscapeError(
            f"the model code changed global state: {key} ({before[key]} -> {after[key]})",
            source,
            "build the model without changing process-wide settings (e.g. pass dtype= to layers)",
        )
    for name, text in (("stdout", out.getvalue()), ("stderr", err.getvalue())):
        if text.strip():
            first = text.strip().splitlines()[0][:80]
            raise LscapeError(
                f"the model code printed to {name} while building the model ({first!r})",
                source,
                "remove the print: lscape keeps stdout for --json records",
            )


def _import_file(path: Path, sha: str | None, where: str) -> Any:
    name = f"lscape_user_model_{(sha or 'x')[:16]}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise LscapeError("cannot import the model file", f"{where} {path}", "give a Python .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look the module up by name
    sys.path.insert(0, str(path.parent))  # sibling imports of the file work
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def _library_builder(name: str, where: str) -> Callable[..., Any]:
    """``torchvision.models.get_model_builder(name)`` for a name in ``list_models()``, nothing else."""
    import torchvision

    if name not in torchvision.models.list_models():
        raise LscapeError(
            f"torchvision has no model {name!r}",
            where,
            "see torchvision.models.list_models(), e.g. torchvision:resnet18",
        )
    builder: Callable[..., Any] = torchvision.models.get_model_builder(name)
    return builder


def check_library_kwargs(cfg: UserModelConfig, where: str) -> None:
    """A library builder never downloads: every ``*weights*`` argument must be absent or None."""
    for key, value in cfg.kwargs.items():
        if "weights" in key and value not in (None, "None"):
            raise LscapeError(
                "lscape never downloads pretrained weights",
                f"{where} {cfg.source} with {key}={value!r}",
                f"drop {key!r} from the model arguments; load trained weights from a safetensors file",
            )


def _factory(src: Source, cfg: UserModelConfig, where: str) -> Callable[..., Any]:
    if src.kind == "torchvision":
        return _library_builder(src.func, where)
    try:
        if src.kind == "file":
            module = _import_file(Path(cfg.file or src.target), cfg.sha256, where)
        else:
            module = importlib.import_module(src.target)
    except LscapeError:
        raise
    except (SystemExit, KeyboardInterrupt) as exc:
        raise stopped(exc, f"importing {src.target}", where) from None
    except Exception as exc:  # noqa: BLE001 - user code: any failure is one line
        what = "not found" if isinstance(exc, ModuleNotFoundError) else "raised"
        raise LscapeError(
            f"importing {src.target} {what}: {type(exc).__name__}: {exc}",
            where,
            "fix the module (or put it on PYTHONPATH)",
        ) from exc
    fn: Callable[..., Any] | None = getattr(module, src.func, None)
    if fn is None or not callable(fn):
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise LscapeError(
            f"{src.target} has no function {src.func!r}",
            where,
            f"name one of: {', '.join(public[:8]) or 'none defined'}",
        )
    return fn


def stopped(exc: BaseException, doing: str, where: str) -> LscapeError:
    """One error line for user code that exits (``sys.exit``) or is interrupted (exit code 130)."""
    if isinstance(exc, KeyboardInterrupt):
        return UserInterrupt(f"interrupted while {doing}", where, "nothing was written; run it again")
    return LscapeError(
        f"the model code exited while {doing} (SystemExit {getattr(exc, 'code', None)!r})",
        where,
        "a model definition must not call sys.exit() or exit(); raise an exception instead",
    )


def _check_kwargs(fn: Callable[..., Any], kwargs: dict[str, Any], source: str) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    try:
        sig.bind(**kwargs)
    except TypeError as exc:
        accepted = ", ".join(
            p.name for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        raise LscapeError(
            f"{source} does not accept these arguments: {exc}",
            "--model-args",
            f"it takes: {accepted or 'no arguments'}",
        ) from exc


def build_user(cfg: UserModelConfig, notes: list[str], where: str = "--model-def") -> nn.Module:
    """Import the source and call its factory under :func:`guard`; the result must be an ``nn.Module``.

    Args:
        cfg: the source and kwargs (a recorded sha256 mismatch is reported in ``notes``).
        notes: warnings go here (sha256 mismatch, warnings the factory raised).
        where: the option named in errors.
    """
    from lscape_cli.storage.files import sha256_file

    src = parse_source(cfg.source, where)
    if src.kind != "torchvision":
        path = Path(cfg.file or src.target) if src.kind == "file" else _module_file(src.target, where)
        if not path.is_file():
            raise LscapeError("model definition file not found", f"{where} {path}", "check the path")
        now = sha256_file(path)
        if cfg.sha256 is not None and now != cfg.sha256:
            notes.append(
                f"{path} changed since the checkpoint was written (sha256 {cfg.sha256[:12]}... recorded, "
                f"{now[:12]}... now)"
            )
    else:
        check_library_kwargs(cfg, where)
    with guard(cfg.source, notes):
        fn = _factory(src, cfg, where)
        _check_kwargs(fn, cfg.kwargs, cfg.source)
        try:
            module = fn(**cfg.kwargs)
        except (SystemExit, KeyboardInterrupt) as exc:
            raise stopped(exc, f"calling {cfg.source}", where) from None
        except Exception as exc:  # noqa: BLE001 - user code: any failure is one line
            raise LscapeError(
                f"{cfg.source}(**{json.dumps(cfg.kwargs)}) raised {type(exc).__name__}: {exc}",
                where,
                "fix the function or its --model-args",
            ) from exc
    if not isinstance(module, nn.Module):
        raise LscapeError(
            f"{cfg.source} returned a {type(module).__name__}, not a torch.nn.Module",
            where,
            "make the function return the model instance",
        )
    if not any(True for _ in module.parameters()):
        raise LscapeError(f"the model built by {cfg.source} has no parameters", where, "check the factory")
    guard_onednn(module)  # oneDNN's faulty convolution class (lscape_cli.runtime)
    from lscape_cli.model_output import select_output

    select_output(module, cfg.output)
    return module


def seeded_states(cfg: UserModelConfig, seeds: list[int]) -> list[dict[str, torch.Tensor]]:
    """One initial ``state_dict`` per seed: the factory's own initialisation, drawn from that seed."""
    states = []
    for seed in seeds:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            module = build_user(cfg, [])
        states.append({k: v.detach().clone() for k, v in module.state_dict().items()})
    return states


# ---------------------------------------------------------------------------------- checking on data


@torch.no_grad()
def check_on_data(
    module: nn.Module,
    x: torch.Tensor,
    num_classes: int,
    loss: str,
    where: str,
    deterministic: bool = True,
    task: str = "classification",
    target_shape: tuple[int, ...] = (),
) -> None:
    """Run the model (eval mode) on two samples: it must take them and return ``(N, C)`` scores.

    ``target_shape`` is one sample's target shape: ``(T,)`` for token targets, whose scores are
    ``(N, T, V)``. A user loss (``--loss-def``) takes any tensor with one row per sample.

    ``num_classes`` is the number of classes, or for ``task == "regression"`` the target size ``D``
    (the model then needs exactly ``D`` outputs).

    With ``deterministic``, two passes must agree: Hessian-vector products and slices assume the loss is
    a function of the parameters, so a forward that draws random numbers in eval mode is refused. A
    forward that prints is refused too (it would corrupt ``--json`` output).
    """
    was_training = module.training
    module.eval()
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            _check_outputs(module, x[:2], (num_classes, task, target_shape), loss, where, deterministic)
    finally:
        module.train(was_training)
    if printed.getvalue().strip():
        raise LscapeError(
            f"the model's forward printed to stdout ({printed.getvalue().strip().splitlines()[0][:80]!r})",
            where,
            "remove the print: lscape keeps stdout for --json records",
        )


def _check_outputs(
    module: nn.Module,
    sample: torch.Tensor,
    outputs: tuple[int, str, tuple[int, ...]],
    loss: str,
    where: str,
    deterministic: bool,
) -> None:
    from lscape_cli.model_output import OutputError

    try:
        out = module(sample)
    except OutputError:
        raise
    except Exception as exc:  # noqa: BLE001 - user code: any failure is one line
        raise LscapeError(
            f"the model fails on inputs of shape {tuple(sample.shape)}: {type(exc).__name__}: {exc}",
            where,
            "give data whose x matches the model's input (or fix --model-args)",
        ) from exc
    _check_shape(out, sample, outputs, loss, where)
    if deterministic:
        again = module(sample)
        if not torch.equal(out, again):
            gap = float((out - again).abs().max())
            raise LscapeError(
                f"the model's forward is not deterministic in eval mode (two passes differ by {gap:.3g})",
                where,
                "remove randomness from forward outside training (e.g. F.dropout(x, training=self.training))",
            )


def _check_shape(
    out: Any, sample: torch.Tensor, outputs: tuple[int, str, tuple[int, ...]], loss: str, where: str
) -> None:
    """``(N, C)`` scores, ``(N, T, V)`` for token targets; any per-sample tensor for a user loss."""
    user = str(loss).startswith("user:")
    steps = outputs[2]
    want = 2 + len(steps)
    ok = isinstance(out, torch.Tensor) and out.dim() > 0 and out.shape[0] == sample.shape[0]
    if ok and not user:
        ok = out.dim() == want and tuple(out.shape[1:-1]) == tuple(steps)
    if not ok:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        need = "(N, outputs)" if not steps else f"(N, {', '.join(map(str, steps))}, vocabulary)"
        raise LscapeError(
            f"the model returns {got} for {sample.shape[0]} inputs; lscape needs {need} scores",
            where,
            "return one row of class scores per sample (per token for (N, T) targets), or name the "
            "output with --output",
        )
    if not user:
        _check_width(int(out.shape[-1]), outputs[:2], loss, where)


def _check_width(width: int, outputs: tuple[int, str], loss: str, where: str) -> None:
    """The model's output size fits the labels: ``D`` regression outputs, at least ``C`` class scores."""
    n, task = outputs
    if task == "regression" and width != n:
        raise LscapeError(
            f"the model has {width} outputs but y has {n} regression target(s) per sample",
            where,
            f"give the model {n} output(s) (e.g. its output size in --model-args)",
        )
    if task != "regression" and ((width != n) if loss == "mse" else (width < n)):
        raise LscapeError(
            f"the model has {width} outputs but the data has {n} classes",
            where,
            "match the model's output size to the labels (e.g. num_classes in --model-args)",
        )
