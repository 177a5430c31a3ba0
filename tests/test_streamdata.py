"""Data that need not fit in memory: ``--data DIR`` (.npy arrays, shards, image folders) streamed from disk.

The promise is the in-memory path's numbers: the same arrays in a ``.npz`` file (read whole into memory)
and in a directory (read chunk by chunk) give the same split, the same chunks and therefore the same
training run, λmax, trace, slice and connect values.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from lscape_cli import datasets
from lscape_cli.core.samples import StreamedSamples, span

SHAPE = (1, 6, 6)
CNN = ("--model", "cnn", "--width", "3", "--hidden", "8")
SMALL = ("--max-batch", "16", "--device", "cpu", "--quiet")  # chunks of 16: many chunks per split


def arrays(n: int = 120, shape: tuple[int, ...] = SHAPE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *shape)).astype(np.float32)
    y = (x.reshape(n, -1)[:, :3].argmax(1)).astype(np.int64)
    return x, y


def save_dir(folder: Path, shards: int = 1, **named: np.ndarray) -> Path:
    """``x.npy``/``y.npy`` (or ``k`` shards of each) and any other named arrays."""
    folder.mkdir()
    for stem, a in named.items():
        if shards == 1 or stem == "split":
            np.save(folder / f"{stem}.npy", a)
            continue
        for k, part in enumerate(np.array_split(a, shards)):
            np.save(folder / f"{stem}-{k:05d}.npy", part)
    return folder


def load(path: Path, **spec: Any) -> datasets.Splits:
    return datasets.load(datasets.DatasetSpec("file", path=str(path), **spec), path.parent)


LAYOUTS: dict[str, Any] = {
    "pair": lambda x, y: ({"x": x, "y": y}, 1),
    "shards": lambda x, y: ({"x": x, "y": y}, 4),
    "own splits": lambda x, y: ({"x": x[:80], "y": y[:80], "x_val": x[80:100], "y_val": y[80:100],
                                 "x_test": x[100:], "y_test": y[100:]}, 3),
    "split array": lambda x, y: ({"x": x, "y": y, "split": np.arange(len(y)) % 3}, 1),
}  # fmt: skip


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_streamed_splits_hold_the_in_memory_numbers(layout: str, tmp_path: Path) -> None:
    x, y = arrays()
    named, shards = LAYOUTS[layout](x, y)
    np.savez(tmp_path / "d.npz", **named)
    folder = save_dir(tmp_path / "d", shards, **named)
    for norm, tol in (("unit", 0.0), ("standard", 2e-6)):  # standard: the mean/std summed in another order
        mem, disk = load(tmp_path / "d.npz", normalization=norm), load(folder, normalization=norm)
        assert disk.sizes() == mem.sizes() and disk.num_classes == mem.num_classes
        assert disk.describe()["stream"]["format"] == ("npy" if shards == 1 else "npy-shards")
        for s in datasets.SPLITS:
            assert isinstance(disk.x[s], StreamedSamples) and disk.x[s].shape == mem.x[s].shape
            assert torch.equal(disk.y[s], mem.y[s])
            whole = torch.cat([disk.x[s][i : i + 7] for i in range(0, len(disk.x[s]), 7)])
            assert (whole - mem.x[s]).abs().max().item() <= tol if len(whole) else True
        np.testing.assert_allclose(
            disk.stats.get("mean", []), mem.stats.get("mean", []), rtol=1e-6, atol=1e-7
        )


def test_indexing_reads_what_a_tensor_gives(tmp_path: Path) -> None:
    x, y = arrays()
    disk = load(save_dir(tmp_path / "d", 3, x=x, y=y)).x["train"]
    mem = load(save_dir(tmp_path / "m", 1, x=x, y=y)).x["train"][:]  # whole split as a tensor
    idx = torch.randperm(len(mem), generator=torch.Generator().manual_seed(0))[:24].reshape(2, 12)
    assert torch.equal(disk[idx], mem[idx])  # (R, B) minibatch indices, as training uses them
    assert torch.equal(disk[torch.tensor([5, 5, 0])], mem[[5, 5, 0]])  # repeats and order kept
    assert torch.equal(span(disk, 10, 30)[:], mem[10:30])
    assert disk.to(torch.float64)[:4].dtype == torch.float64 and torch.equal(
        disk.to(torch.float64)[:4], mem[:4].double()
    )


def _run(cli: Any, *args: Any) -> None:
    result = cli(*args)
    assert result.exit_code == 0, result.output


def _results(path: Path) -> dict[str, Any]:
    """A record's results without what names its own files or times it."""
    out = json.loads(path.read_text())["results"]
    for key in ("outputs", "timing", "plot", "plots", "speed"):
        out.pop(key, None)
    return out


def test_train_probe_slice_connect_streamed_equal_in_memory(tmp_path: Path, cli) -> None:
    x, y = arrays()
    np.savez(tmp_path / "d.npz", x=x, y=y)
    folder = save_dir(tmp_path / "d", 4, x=x, y=y)
    train = ("train", *CNN, "--epochs", "2", "--batch-size", "16", "--restarts", "2", *SMALL)
    _run(cli, *train, "--data", tmp_path / "d.npz", "--out", tmp_path / "mem")
    _run(cli, *train, "--data", folder, "--out", tmp_path / "disk")
    for r in ("r000", "r001"):
        mem, disk = (
            json.loads((tmp_path / d / f"model-{r}.train.json").read_text()) for d in ("mem", "disk")
        )
        untimed = [
            [{k: v for k, v in e.items() if k != "wall_time_s"} for e in rec["results"]["history"]]
            for rec in (mem, disk)
        ]
        assert untimed[1] == untimed[0]  # every epoch's losses, exactly
        assert disk["config"]["dataset"]["stream"]["format"] == "npy-shards"
    a, b = tmp_path / "mem/model-r000.safetensors", tmp_path / "mem/model-r001.safetensors"
    for tag, data in (("mem", tmp_path / "d.npz"), ("disk", folder)):
        common = ("--data", data, *SMALL)
        _run(cli, "probe", a, "--lambda-max", "--trace", "--out", tmp_path / f"{tag}.probe.json", *common)
        _run(
            cli,
            "slice",
            a,
            "--dims",
            "1",
            "--steps",
            "5",
            "--no-plot",
            "--out",
            tmp_path / f"{tag}.slice.json",
            *common,
        )
        _run(
            cli,
            "connect",
            a,
            b,
            "--points",
            "3",
            "--no-plot",
            "--out",
            tmp_path / f"{tag}.connect.json",
            *common,
        )
    for kind in ("probe", "slice", "connect"):
        mem, disk = _results(tmp_path / f"mem.{kind}.json"), _results(tmp_path / f"disk.{kind}.json")
        if kind == "probe":  # the streamed chunk's inputs are new memory the kept graph holds: counted
            assert disk["hvp"].pop("graph_bytes_per_sample") > mem["hvp"].pop("graph_bytes_per_sample")
            assert disk["hvp"].pop("retained_graph_bytes") >= mem["hvp"].pop("retained_graph_bytes")
        assert disk == mem, kind  # λmax, trace, every slice point and path point: the same numbers
    record = json.loads((tmp_path / "disk.probe.json").read_text())
    assert record["config"]["evaluation"]["dataset"]["fingerprint"]
    assert record["warnings"] == []


def _png(path: Path, pixels: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_image_folder_is_read_lazily_with_the_documented_transform(tmp_path: Path, cli) -> None:
    rng = np.random.default_rng(0)
    pictures: dict[str, list[np.ndarray]] = {"cat": [], "dog": []}
    for cls in pictures:
        for i in range(6):
            pixels = rng.integers(0, 256, (8, 12, 3), dtype=np.uint8)  # 8 high, 12 wide
            _png(tmp_path / "imgs" / cls / f"{i}.png", pixels)
            pictures[cls].append(pixels)
    _png(tmp_path / "imgs" / "dog" / "deeper" / "gray.png", np.full((8, 8), 51, dtype=np.uint8))
    splits = load(tmp_path / "imgs", val_size=0, test_size=0, image_size=8)
    assert splits.input_shape == (3, 8, 8) and splits.num_classes == 2
    assert splits.describe()["stream"]["classes"] == ["cat", "dog"]
    source = splits.x["train"]
    assert isinstance(source, StreamedSamples)
    first_cat = int(np.flatnonzero(source.index == 0)[0])  # row 0 of the folder: cat/0.png
    want = pictures["cat"][0][:, 2:10].transpose(2, 0, 1).astype(np.float32) / 255.0  # centre crop, no resize
    assert np.array_equal(source[first_cat : first_cat + 1][0].numpy(), want)
    gray = int(np.flatnonzero(source.index == 12)[0])  # dog/deeper/gray.png sorts after dog/5.png
    assert torch.all(source[gray : gray + 1] == 51 / 255.0)
    run = tmp_path / "run"
    _run(cli, "train", *CNN, "--data", tmp_path / "imgs", "--image-size", "8", "--epochs", "1",
         "--batch-size", "4", "--val-size", "2", "--test-size", "2", "--out", run, *SMALL)  # fmt: skip
    rec = json.loads((run / "model.train.json").read_text())["config"]["dataset"]
    assert rec["image_size"] == 8 and rec["stream"]["transform"]["crop"] == "centre 8x8"
    _run(cli, "probe", run / "model.safetensors", "--lambda-max", *SMALL)  # the recorded size, no flag


def test_a_changed_directory_is_a_warning(tmp_path: Path, cli) -> None:
    x, y = arrays(60)
    folder = save_dir(tmp_path / "d", 1, x=x, y=y)
    _run(cli, "train", *CNN, "--data", folder, "--epochs", "1", "--out", tmp_path / "run", *SMALL)
    np.save(folder / "y.npy", (y + 1) % 3)
    _run(cli, "probe", tmp_path / "run/model.safetensors", "--lambda-max", *SMALL)
    warnings = json.loads((tmp_path / "run/model.probe.json").read_text())["warnings"]
    assert any("changed since the checkpoint was written (fingerprint)" in w for w in warnings)


def _bad(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A broken data directory and the file its error line must name."""
    x, y = arrays(40)
    d = tmp_path / "d"
    if case == "mismatched shard lengths":
        save_dir(d, 2, x=x, y=y)
        np.save(d / "y-00001.npy", y[20:39])
        return d, "y-00001.npy"
    if case == "missing y":
        save_dir(d, 1, x=x)
        return d, "y.npy"
    if case == "missing shard":
        save_dir(d, 3, x=x, y=y)
        (d / "y-00002.npy").unlink()
        return d, "y-00002.npy"
    if case == "wrong label dtype":
        save_dir(d, 1, x=x, y=y.astype(np.complex64))
        return d, "y.npy"
    if case == "wrong input dtype":
        save_dir(d, 1, x=np.array(["a"] * 40).reshape(40, 1), y=y)
        return d, "x.npy"
    if case == "shards of two dtypes":
        save_dir(d, 2, x=x, y=y)
        np.save(d / "x-00001.npy", x[20:].astype(np.float64))
        return d, "x-00001.npy"
    if case == "non-finite inputs":
        x[33, 0, 1, 1] = np.nan
        save_dir(d, 1, x=x, y=y)
        return d, "x.npy"
    if case == "empty folder":
        d.mkdir()
        return d, str(d)
    if case == "class folders without images":
        (d / "cat").mkdir(parents=True)
        (d / "cat" / "notes.txt").write_text("no images")
        return d, str(d)
    assert case == "unreadable image"
    _png(d / "cat" / "0.png", np.zeros((8, 8, 3), dtype=np.uint8))
    (d / "cat" / "1.png").write_bytes(b"not a png")
    return d, "1.png"


BAD = [
    "mismatched shard lengths", "missing y", "missing shard", "wrong label dtype", "wrong input dtype",
    "shards of two dtypes", "non-finite inputs", "empty folder", "class folders without images",
    "unreadable image",
]  # fmt: skip


@pytest.mark.parametrize("case", BAD)
def test_bad_data_directory_is_one_error_line(case: str, tmp_path: Path, cli, error_line) -> None:
    folder, culprit = _bad(tmp_path, case)
    out = tmp_path / "run"
    line = error_line(
        cli("train", *CNN, "--data", folder, "--epochs", "1", "--batch-size", "8", "--out", out, *SMALL)
    )
    assert culprit in line, line
    assert not out.exists()


def test_full_batch_on_streamed_data_is_refused(tmp_path: Path, cli, error_line) -> None:
    x, y = arrays(40)
    folder = save_dir(tmp_path / "d", 1, x=x, y=y)
    line = error_line(
        cli("train", *CNN, "--data", folder, "--batch-size", "full", "--out", tmp_path / "r", *SMALL)
    )
    assert "--batch-size full" in line and "--batch-size 128" in line


def test_a_product_on_streamed_data_holds_only_its_kept_chunks(tmp_path: Path) -> None:
    """Hessian-vector products read chunk by chunk: numpy's peak allocation stays far below the split."""
    import tracemalloc

    from torch import nn

    from lscape_cli.core.linalg.hvp import HVP, Objective

    x, y = arrays(3000, (3, 8, 8))
    disk = load(save_dir(tmp_path / "d", 3, x=x, y=y), val_size=0, test_size=0)
    split_bytes = x.nbytes
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    mem = Objective.from_module(model, disk.x["train"][:], disk.y["train"], max_batch=100)  # read whole
    obj = Objective.from_module(model, disk.x["train"], disk.y["train"], max_batch=100)  # type: ignore[arg-type]
    v = {n: torch.randn_like(p) for n, p in obj.params.items()}
    with HVP(mem, "double_backward") as op:  # first: lazy imports allocate too, and are not data
        want = op(v)
    tracemalloc.start()
    with HVP(obj, "double_backward", retain_chunks=2) as op:
        hv = op(v)
        hv = op(v)  # the second product rebuilds 28 of the 30 chunk graphs from disk
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < split_bytes / 4, (peak, split_bytes)  # two kept chunks and one being read: ~1/10
    assert all(torch.equal(hv[n], want[n]) for n in want)  # the same chunks, the same sums
