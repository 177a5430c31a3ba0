"""`lscape train`'s run: load data, build the model, train the restarts, write every file, report."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lscape_cli.cli._train_report import Progress, print_summary
from lscape_cli.cli._train_request import parsed
from lscape_cli.cli.console import emit_json
from lscape_cli.errors import DivergedError, LscapeError

if TYPE_CHECKING:
    from lscape_cli.storage.train_record import TrainContext


def run_training(
    model_name: str,
    model_opts: dict[str, Any],
    dspec: Any,
    cfg: Any,
    *,
    seed: int,
    restarts: int,
    chosen: range,
    track_spec: Any,
    out: Path,
    name: str,
    root: Path,
    download: bool,
    device_name: str,
    dtype_name: str,
    json_out: bool,
    quiet: bool,
    resume: tuple[bool, float, Path],
    user: Any = None,
    notes: list[str] | None = None,
) -> None:
    """Load data, build the model, train, write every file, report.

    ``notes``: warnings gathered before (e.g. from importing ``--loss-def``), kept in the records.

    ``resume``: ``(requested, every_s, path)`` of the resume state (``--resume``, ``--resume-every``).
    """
    from lscape_cli import datasets, models
    from lscape_cli.cli._train_request import check_restart_seeds
    from lscape_cli.core import budget
    from lscape_cli.core.probe.engine import check_budget
    from lscape_cli.core.training.engine import relabel, train_restarts
    from lscape_cli.core.training.tracking import make_tracker
    from lscape_cli.runtime import resolve_device, resolve_dtype
    from lscape_cli.storage.run_names import output_stems
    from lscape_cli.storage.train_record import TrainContext

    t0 = time.perf_counter()
    device, dtype = resolve_device(device_name), resolve_dtype(dtype_name)
    if download:
        datasets.download(dspec.name, root)
    budget.check(budget.synthetic_demands(dspec.num_samples, dspec.input_dim), device)
    splits = datasets.load(dspec, root, device=device, dtype=dtype)
    splits.check_loss(cfg.loss)
    _check_streamed_batch(splits, cfg)
    if (cfg.patience is not None or cfg.restore_best) and splits.sizes()["val"] == 0:
        raise LscapeError(
            "--patience and --restore-best need a validation split",
            "--val-size 0",
            "give --val-size > 0 or drop them",
        )
    tracker = None if track_spec is None else parsed(make_tracker, "--track-split", track_spec, splits, cfg)
    mspec, module, initial_state, model_notes = _model_for(model_name, model_opts, user, splits, cfg)
    size = budget.Problem.of(module, splits.sizes()["train"])
    every, batch = cfg.trajectory_every, cfg.batch_size or size.num_samples
    budget.check(budget.training_demands(restarts, cfg.epochs, cfg.max_steps, batch, every, size), device)
    if tracker is not None:
        check_budget(tracker.spec.request, module, tracker.num_samples, "--track top_k")
    stems = output_stems(out, name, restarts, chosen)  # after the budget: a huge --restarts is refused first
    check_restart_seeds(seed, restarts)  # after the budget too: it names a seed only when one exists
    seeds = [seed + r for r in chosen]
    context = TrainContext(
        model=mspec.to_dict(),
        dataset=splits.describe(),
        cfg=cfg,
        device=str(device),
        dtype=dtype_name,
        restarts=restarts,
        base_seed=seed,
        num_parameters=models.num_parameters(module),
        warnings=[*(notes or []), *model_notes],
        tracking=None if tracker is None else tracker.describe(),
    )
    store = _store(resume, context, seeds)
    t_setup = time.perf_counter() - t0
    with Progress(quiet, cfg.epochs, len(chosen)) as on_epoch:
        results = train_restarts(
            module,
            splits,
            cfg,
            seeds,
            device,
            dtype,
            on_epoch=on_epoch,
            tracker=tracker,
            initial_state=initial_state,
            store=store,
        )
    results = relabel(results, chosen)
    t_train = time.perf_counter() - t0 - t_setup + store.resumed_s  # training time of every process
    context.tracking_s = sum(r.tracking_s for r in results)
    context.resume = {"requested": store.requested, "from_epoch": store.resumed_from}
    store.remove_on_commit()
    from lscape_cli.cli.process import invocation
    from lscape_cli.storage.train_record import write_run

    texts = [
        write_run(res, stem, context, {"setup": t_setup, "train": t_train}, invocation())
        for res, stem in zip(results, stems, strict=True)
    ]
    if json_out:
        for text in texts:
            emit_json(text)  # one record per line (JSON Lines)
    if not quiet:
        print_summary(results, stems, splits.task)
    _final_status(results, store)


def _store(resume: Any, context: TrainContext, seeds: list[int]) -> Any:
    """The run's resume file (a warning when ``--resume`` finds none: the run starts at epoch 1)."""
    from lscape_cli.cli.console import warn
    from lscape_cli.storage.train_resume import ResumeFile, resume_key

    requested, every_s, path = resume
    if requested and not path.exists():
        note = f"--resume found no state in {path}; trained from the start"
        warn(note)
        context.warnings = [*context.warnings, note]
    return ResumeFile(path, resume_key(context, seeds), requested, every_s)


def _model_for(name: str, opts: dict[str, Any], user: Any, splits: Any, cfg: Any) -> tuple[Any, ...]:
    """``(spec, module, initial_state, warnings)``: a registry model, or the user's (``--model-def``)."""
    from lscape_cli import models
    from lscape_cli.models.training import for_training
    from lscape_cli.models.user import parse_kwargs

    source = user.model_def if user is not None and user.model_def else None
    if name.startswith("torchvision:"):
        source = source or name
    if source is None:
        if user is not None and user.output:
            raise LscapeError(
                "--output is for --model-def and torchvision models",
                "--output",
                "registry models return one tensor of scores",
            )
        if user is not None and user.model_args:
            raise LscapeError(
                "--model-args is for --model-def and torchvision models",
                "--model-args",
                "registry models take --depth, --width, ...",
            )
        mspec = models.make_spec(
            name, {**opts, "input_shape": splits.input_shape, "num_classes": splits.num_classes}
        )
        _check_model_size(mspec, splits)
        return mspec, models.build(mspec), None, []
    if opts:
        raise LscapeError(
            f"--{next(iter(opts))} applies to the registry models, not to {source}",
            "--model-def",
            "pass the model's own arguments with --model-args JSON",
        )
    kwargs = parse_kwargs(user.model_args if user is not None else None)
    output = user.output if user is not None else None
    tm = for_training(source, kwargs, splits, cfg.loss, cfg.init, output)
    return tm.spec, tm.module, tm.initial_state, tm.notes


def _check_model_size(mspec: Any, splits: Any) -> None:
    """Refuse a registry model too large for the device, counted on the meta device before building it."""
    from lscape_cli import models
    from lscape_cli.core import budget

    x = splits.x["train"]
    n = budget.num_parameters_of(lambda: models.build(mspec))
    budget.check([budget.model_demand(n, x.element_size())], x.device)


def _check_streamed_batch(splits: Any, cfg: Any) -> None:
    """Full-batch steps hold the whole split in memory at once: a streamed split trains in minibatches."""
    if splits.stream is not None and cfg.batch_size is None:
        raise LscapeError(
            "--batch-size full needs the whole training split in memory at once",
            str(splits.spec.path),
            "train streamed data (--data DIR) in minibatches, e.g. --batch-size 128",
        )


def _final_status(results: list[Any], store: Any) -> None:
    diverged = [r for r in results if r.stop_reason == "diverged"]
    if diverged:
        which = ", ".join(f"{r.restart} (step {r.steps})" for r in diverged)
        raise DivergedError(
            f"{len(diverged)} of {len(results)} restart(s) diverged: non-finite training loss",
            f"restart {which}",
            "lower --lr or change --init"
            + (
                "; the other restarts were saved" if len(diverged) < len(results) else "; nothing was written"
            ),
            keep_outputs=len(diverged) < len(results),
        )
    if any(r.stop_reason == "interrupted" for r in results):
        from lscape_cli.cli.process import EXIT_INTERRUPTED, fail

        kept = (
            f"the state after epoch {store.epoch} is in {store.path} (re-run with --resume to continue)"
            if store.epoch is not None
            else "no epoch was saved yet (run it again)"
        )
        raise fail(
            f"training interrupted: no output file was written or changed; {kept}",
            EXIT_INTERRUPTED,
        )
