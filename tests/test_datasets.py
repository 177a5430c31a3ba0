"""Dataset registry: offline datasets load, splits are deterministic, disjoint and sized as asked."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

from lscape_cli import datasets
from lscape_cli.cli.options import data_root
from lscape_cli.datasets import DatasetSpec
from lscape_cli.errors import LscapeError

# name -> (spec options, input shape, total samples, default (train, val, test) sizes)
OFFLINE = {
    "digits": ({}, (1, 8, 8), 1797, (1197, 300, 300)),
    "mnist-5k": ({}, (1, 28, 28), 5000, (4000, 500, 500)),
    "synthetic": ({"input_dim": 7}, (7,), 2000, (1500, 250, 250)),
}


@pytest.mark.parametrize("name", list(OFFLINE))
def test_offline_dataset_loads_with_default_sizes(name: str, lscape_data: Path) -> None:
    opts, shape, _, sizes = OFFLINE[name]
    splits = datasets.load(DatasetSpec(name, **opts), lscape_data)
    assert splits.input_shape == shape
    assert splits.num_classes == 10
    assert splits.sizes() == dict(zip(("train", "val", "test"), sizes, strict=True))
    for split in ("train", "val", "test"):
        x, y = splits.x[split], splits.y[split]
        assert x.dtype == torch.float32 and y.dtype == torch.int64 and x.device.type == "cpu"
        assert x.shape == (y.shape[0], *shape)
        assert torch.isfinite(x).all()
        assert int(y.min()) >= 0 and int(y.max()) < 10
        if len(shape) == 3:  # images: unit normalisation keeps pixels in [0, 1]
            assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert len(torch.unique(splits.y["train"])) == 10  # every class is represented
    described = splits.describe()
    assert described["name"] == name and described["sizes"] == splits.sizes()
    assert described["input_shape"] == list(shape)


def test_mnist5k_is_cached_under_lscape_data(lscape_data: Path) -> None:
    datasets.load(DatasetSpec("mnist-5k", train_size=10), lscape_data)
    assert data_root(None) == lscape_data  # the session's LSCAPE_DATA is what the CLI would use
    assert (lscape_data / "mnist-5k.npz").is_file()
    assert not [p for p in lscape_data.iterdir() if p.name.startswith(".mnist-5k")]  # no temp file left


@pytest.mark.parametrize("name", list(OFFLINE))
def test_sizes_honour_the_options(name: str, lscape_data: Path) -> None:
    opts = OFFLINE[name][0]
    splits = datasets.load(DatasetSpec(name, train_size=100, val_size=40, test_size=30, **opts), lscape_data)
    assert splits.sizes() == {"train": 100, "val": 40, "test": 30}


def _rows(x: torch.Tensor) -> Counter[bytes]:
    flat = x.reshape(x.shape[0], -1).numpy()
    return Counter(row.tobytes() for row in flat)


@pytest.mark.parametrize("name", list(OFFLINE))
def test_splits_are_deterministic_and_disjoint(name: str, lscape_data: Path) -> None:
    opts = OFFLINE[name][0]
    spec = DatasetSpec(name, split_seed=7, train_size=200, val_size=100, test_size=100, **opts)
    a = datasets.load(spec, lscape_data)
    b = datasets.load(spec, lscape_data)
    for split in ("train", "val", "test"):
        assert torch.equal(a.x[split], b.x[split]) and torch.equal(a.y[split], b.y[split]), split
    # Disjoint: together the splits use each distinct sample no more often than the dataset holds it
    # (digits has a few duplicate images, so compare multisets rather than sets).
    raw = datasets.get_entry(name).load(spec, lscape_data)
    available = _rows(torch.from_numpy(raw.x))
    used = _rows(a.x["train"]) + _rows(a.x["val"]) + _rows(a.x["test"])
    over = {k: n for k, n in used.items() if n > available[k]}
    assert not over, f"{len(over)} samples appear in more than one split"
    assert sum(used.values()) == 400


@pytest.mark.parametrize("name", list(OFFLINE))
def test_split_seed_changes_the_split(name: str, lscape_data: Path) -> None:
    opts = OFFLINE[name][0]
    a = datasets.load(DatasetSpec(name, split_seed=0, train_size=50, **opts), lscape_data)
    b = datasets.load(DatasetSpec(name, split_seed=1, train_size=50, **opts), lscape_data)
    assert not torch.equal(a.x["train"], b.x["train"])
    assert not torch.equal(a.x["val"], b.x["val"])


def test_val_and_test_do_not_depend_on_train_size(lscape_data: Path) -> None:
    """The split is fixed by split_seed alone: shrinking --train-size must not move val/test samples."""
    small = datasets.load(DatasetSpec("digits", train_size=50), lscape_data)
    full = datasets.load(DatasetSpec("digits"), lscape_data)
    for split in ("val", "test"):
        assert torch.equal(small.x[split], full.x[split]), split
    assert not (_rows(small.x["train"]) - _rows(full.x["train"]))  # the small train set is a subset


def test_standard_normalisation_uses_train_statistics(lscape_data: Path) -> None:
    splits = datasets.load(DatasetSpec("synthetic", input_dim=5, normalization="standard"), lscape_data)
    x = splits.x["train"].double()
    assert torch.allclose(x.mean(0), torch.zeros(5, dtype=torch.float64), atol=1e-5)
    assert torch.allclose(x.std(0, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-4)
    assert len(splits.stats["mean"]) == len(splits.stats["std"]) == 5
    images = datasets.load(DatasetSpec("digits", normalization="standard"), lscape_data)
    assert len(images.stats["mean"]) == 1  # one constant per channel
    assert abs(float(images.x["train"].mean())) < 1e-4


def test_float64_and_the_synthetic_task_is_fixed_by_its_size(lscape_data: Path) -> None:
    a = datasets.load(
        DatasetSpec("synthetic", input_dim=3, num_samples=300, val_size=50, test_size=50),
        lscape_data,
        dtype=torch.float64,
    )
    assert a.x["train"].dtype == torch.float64 and a.input_shape == (3,)
    assert sum(a.sizes().values()) == 300
    b = datasets.load(
        DatasetSpec("synthetic", input_dim=3, num_samples=300, val_size=50, test_size=50),
        lscape_data,
        dtype=torch.float64,
    )
    assert torch.equal(a.x["test"], b.x["test"]) and torch.equal(a.y["test"], b.y["test"])


def test_spec_round_trips_through_metadata() -> None:
    spec = DatasetSpec("synthetic", split_seed=4, train_size=10, input_dim=3)
    described = {**spec.to_dict(), "input_shape": [3], "sizes": {"train": 10}}
    assert DatasetSpec.from_dict(described) == spec


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            DatasetSpec("nope"),
            "unknown dataset 'nope': --dataset (choose one of: digits, mnist-5k, mnist, "
            "fashion-mnist, cifar10, synthetic, torchvision:CLASS, or --data FILE)",
        ),
        (
            DatasetSpec("digits", val_size=2000),
            "split sizes do not fit dataset 'digits' (1797 samples): "
            "train=-503 val=2000 test=300 (lower --train-size/--val-size/--test-size)",
        ),
        (
            DatasetSpec("digits", train_size=0),
            "split sizes do not fit dataset 'digits' (1797 samples): "
            "train=0 val=300 test=300 (lower --train-size/--val-size/--test-size)",
        ),
    ],
)
def test_bad_dataset_specs(spec: DatasetSpec, expected: str, lscape_data: Path) -> None:
    with pytest.raises(LscapeError) as info:
        datasets.load(spec, lscape_data)
    assert info.value.line() == expected


TV_FIX = (
    "pass --download to fetch it, point --data-root/LSCAPE_DATA at a copy, "
    "or use the bundled offline dataset mnist-5k"
)


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist", "cifar10"])
def test_torchvision_dataset_without_files(name: str, tmp_path: Path) -> None:
    with pytest.raises(LscapeError) as info:
        datasets.load(DatasetSpec(name), tmp_path)
    assert info.value.line() == f"dataset {name!r} not found: {tmp_path / name} ({TV_FIX})"


def test_train_on_mnist_without_files_says_how_to_get_them(
    tmp_path: Path, cli, tiny_args, error_line
) -> None:
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    line = error_line(cli(*tiny_args(out, "--dataset", "mnist", "--data-root", root)))
    assert line == f"Error: dataset 'mnist' not found: {root / 'mnist'} ({TV_FIX})"
    assert "--download" in line and "mnist-5k" in line
    assert not out.exists()
    assert not any(root.rglob("*.gz")), "nothing may be downloaded without --download"


def test_digits_values_match_scikit_learn(lscape_data: Path) -> None:
    """The loader's scaling is what it says: scikit-learn's 0..16 pixels divided by 16."""
    from sklearn.datasets import load_digits

    raw = datasets.get_entry("digits").load(DatasetSpec("digits"), lscape_data)
    np.testing.assert_array_equal(raw.x[:, 0] * 16.0, load_digits().images.astype(np.float32))
