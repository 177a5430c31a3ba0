"""`lscape slice`'s run: gather its inputs, run the slice, and on rank 0 write its files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from lscape_cli.cli.console import StatusLine

if TYPE_CHECKING:
    from lscape_cli.core.landscape.slice_request import SliceRequest
    from lscape_cli.core.landscape.slice_run import SliceData
    from lscape_cli.distributed import Group
    from lscape_cli.models.evaluation import EvalSetup
    from lscape_cli.storage.slice_record import SlicePaths, SliceRecord


def run(
    checkpoint: Path,
    setup: EvalSetup,
    req: SliceRequest,
    paths: SlicePaths,
    model_config: Path | None,
    group: Group,
    quiet: bool,
    t0: float,
) -> SliceRecord | None:
    """Read the inputs, run the slice, and on rank 0 write its files; the record (None on other ranks)."""
    from lscape_cli.cli.process import invocation
    from lscape_cli.core.landscape.slice_run import run_slice
    from lscape_cli.plotting.slices import save_slice_plots, slice_figure
    from lscape_cli.storage.slice_record import SliceContext, SliceFiles, load_source, write_slice

    timing = {"load": time.perf_counter() - t0}
    data = slice_data(setup, checkpoint)
    store = SliceFiles(paths, checkpoint, data.checkpoint_sha256, data.model)
    source = load_source(req, model_config)
    with StatusLine(quiet, "slice") as on_step:
        res = run_slice(data, req, source, store, group, on_step)
    if not group.is_main:
        return None
    res.warnings = list(setup.warnings) + res.warnings
    dtype = str(setup.dtype).replace("torch.", "")
    ctx = SliceContext(
        checkpoint, invocation(), setup.protocol, str(setup.device), dtype, data.model, data.max_batch
    )
    name = f"{checkpoint.parent.name}/{checkpoint.stem}" if checkpoint.parent.name else checkpoint.stem
    title = f"{name}: {data.loss} loss on {data.split} ({data.num_samples} samples)"
    plots = (lambda: save_slice_plots(slice_figure(res, title), paths.stem)) if req.plot else None
    return write_slice(paths, res, ctx, plots, {**timing, **res.timing}, t0)


def slice_data(setup: EvalSetup, checkpoint: Path) -> SliceData:
    """What the slice engine reads: the model, the split, the protocol and the checkpoint's digest."""
    from lscape_cli.core.landscape.slice_run import SliceData
    from lscape_cli.storage.files import sha256_file

    metric = (setup.loaded.checkpoint.meta.get("metrics") or {}).get(f"{setup.split}_loss")
    return SliceData(
        module=setup.loaded.module,
        x=setup.x,
        y=setup.y,
        loss=setup.loss,
        split=setup.split,
        mode=setup.protocol["mode"],
        dtype=setup.dtype,
        max_batch=setup.protocol["max_batch"],
        model=setup.loaded.spec.to_dict(),
        checkpoint_sha256=sha256_file(checkpoint),
        checkpoint_metric=metric,
    )
