"""Storage: checkpoints round-trip bitwise, metadata reads never touch tensors, loading is strict."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lscape_cli import models
from lscape_cli.errors import LscapeError
from lscape_cli.models.loading import load_model, load_state_strict
from lscape_cli.storage import checkpoint as ck
from lscape_cli.storage.checkpoint import (
    CHECKPOINT_SCHEMA,
    TRAJECTORY_SCHEMA,
    load_checkpoint,
    read_metadata,
    read_raw_metadata,
    save_checkpoint,
)

META = {
    "model": {"name": "mlp", "config": {"depth": 1, "width": 8, "input_shape": [1, 8, 8], "num_classes": 10}},
    "dataset": {"name": "digits", "split_seed": 3, "sizes": {"train": 64}},
    "training": {"lr": 0.1, "third": 1 / 3, "tiny": 5e-324, "nesterov": True, "tol": None},
    "metrics": {"train_loss": 2.302585092994046},
    "versions": {"lscape": "0.1.0", "note": "ünïcødé ✓"},
}


def _awkward_state() -> dict[str, torch.Tensor]:
    """Tensors whose bits a sloppy writer would change: -0.0, NaN payloads, denormals, int/bool, bf16."""
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("nan"), float("inf"), -float("inf"), 1e-45, 3.4028235e38])
    return {
        "w32": torch.randn(5, 3, generator=g),
        "w64": torch.randn(4, generator=g, dtype=torch.float64),
        "special": special,
        "transposed": torch.randn(3, 5, generator=g).t(),  # non-contiguous
        "bf16": torch.randn(6, generator=g).to(torch.bfloat16),
        "count": torch.tensor(17, dtype=torch.int64),  # 0-dim, like BatchNorm's num_batches_tracked
        "mask": torch.tensor([True, False, True]),
    }


def test_round_trip_is_bitwise(tmp_path: Path, same_bits) -> None:
    path = tmp_path / "m.safetensors"
    state = _awkward_state()
    save_checkpoint(path, state, META)
    ckpt = load_checkpoint(path)
    assert set(ckpt.state) == set(state)
    for name, tensor in state.items():
        assert same_bits(ckpt.state[name], tensor.contiguous()), name
    assert ckpt.meta == {"schema": CHECKPOINT_SCHEMA, **META}
    assert ckpt.meta["training"]["third"] == 1 / 3  # floats survive JSON exactly (repr round trip)
    assert read_metadata(path) == ckpt.meta
    raw = read_raw_metadata(path)
    assert raw["lscape_schema"] == CHECKPOINT_SCHEMA and json.loads(raw["model"]) == META["model"]


def test_round_trip_of_a_model_state_with_buffers(tmp_path: Path, same_bits) -> None:
    """A ResNet's state_dict (BatchNorm running stats and counters included) comes back bit for bit."""
    spec = models.make_spec("resnet", {"input_shape": (1, 8, 8), "width": 4})
    module = models.build(spec)
    module.train()
    module(torch.randn(16, 1, 8, 8))  # move the running statistics away from their initial 0/1
    state = module.state_dict()
    path = tmp_path / "r.safetensors"
    save_checkpoint(path, state, {"model": spec.to_dict()})
    ckpt = load_checkpoint(path)
    assert set(ckpt.state) == set(state)
    assert any("running_mean" in k for k in ckpt.state)
    for k, v in state.items():
        assert same_bits(ckpt.state[k], v), k
    rebuilt = models.build(models.ModelSpec.from_dict(ckpt.meta["model"]))
    load_state_strict(rebuilt, ckpt.state, str(path))
    for k, v in rebuilt.state_dict().items():
        assert same_bits(v, state[k]), k


def test_same_input_gives_same_bytes(tmp_path: Path) -> None:
    """Nothing time-dependent goes into a checkpoint."""
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_checkpoint(a, _awkward_state(), META)
    save_checkpoint(b, _awkward_state(), META)
    assert a.read_bytes() == b.read_bytes()


class _NoTensorOpen:
    """Stands in for safetensors.safe_open: header access works, any tensor access fails the test."""

    real = staticmethod(ck.safe_open)

    def __init__(self, *args: object, **kwargs: object) -> None:
        self._handle = self.real(*args, **kwargs)

    def __enter__(self) -> _NoTensorOpen:
        self._open = self._handle.__enter__()
        return self

    def __exit__(self, *exc: object) -> object:
        return self._handle.__exit__(*exc)

    def metadata(self) -> dict[str, str] | None:
        return self._open.metadata()

    def keys(self) -> list[str]:
        return self._open.keys()

    def get_tensor(self, name: str) -> torch.Tensor:
        raise AssertionError(f"tensor {name!r} was loaded")

    def get_slice(self, name: str) -> object:
        raise AssertionError(f"tensor {name!r} was sliced")


def _forbid(*args: object, **kwargs: object) -> None:
    raise AssertionError("a whole-file tensor loader was called")


def test_metadata_reads_do_not_load_tensors(tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    """Every way into safetensors' tensor data is replaced by one that fails the test."""
    import safetensors
    import safetensors.torch

    for owner in (ck, safetensors, safetensors.torch):
        monkeypatch.setattr(owner, "safe_open", _NoTensorOpen)
    for name in ("load_file", "load"):
        monkeypatch.setattr(safetensors.torch, name, _forbid)
    meta = read_metadata(tiny_ckpt)
    assert meta["schema"] == CHECKPOINT_SCHEMA and meta["model"]["name"] == "mlp"
    assert read_raw_metadata(tiny_ckpt)["lscape_schema"] == CHECKPOINT_SCHEMA
    result = cli("info", tiny_ckpt, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model"] == meta["model"]
    # The stand-in does catch tensor loading: load_checkpoint must trip it.
    with pytest.raises(AssertionError, match="was loaded"):
        load_checkpoint(tiny_ckpt)


# ------------------------------------------------------------------------------------- strictness


@pytest.fixture
def mlp() -> torch.nn.Module:
    # hidden.0.weight (8, 64), hidden.0.bias (8,), head.weight (10, 8), head.bias (10,)
    return models.build(models.make_spec("mlp", {"input_shape": (1, 8, 8), "width": 8}))


FIX = "(check that the metadata or --model-config describes this file's model)"


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda s: s.pop("head.bias"), "missing head.bias"),
        (lambda s: s.update({"extra.weight": torch.zeros(2)}), "unexpected extra.weight"),
        (
            lambda s: s.update({"head.weight": torch.zeros(10, 9)}),
            "mis-shaped (file vs model) head.weight (10, 9) vs (10, 8)",
        ),
        (
            lambda s: (s.pop("head.bias"), s.update({"x": torch.zeros(1), "hidden.0.bias": torch.zeros(7)})),
            "missing head.bias | unexpected x | mis-shaped (file vs model) hidden.0.bias (7,) vs (8,)",
        ),
    ],
    ids=["missing", "unexpected", "misshaped", "all-three"],
)
def test_load_state_strict_names_every_mismatch(mlp: torch.nn.Module, change, problem: str) -> None:
    state = {k: v.clone() + 1 for k, v in mlp.state_dict().items()}
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    change(state)
    with pytest.raises(LscapeError) as info:
        load_state_strict(mlp, state, "ckpt.safetensors")
    assert (
        info.value.line() == f"checkpoint tensors do not match the model: {problem}: ckpt.safetensors {FIX}"
    )
    for k, v in mlp.state_dict().items():  # nothing was half-loaded
        assert torch.equal(v, before[k]), k


def test_load_state_strict_lists_at_most_five_names(mlp: torch.nn.Module) -> None:
    state = {k: v for k, v in mlp.state_dict().items()} | {f"x{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(LscapeError, match=r"unexpected x0, x1, x2, x3, x4 \.\.\.: here"):
        load_state_strict(mlp, state, "here")


def test_load_state_strict_accepts_a_matching_state(mlp: torch.nn.Module) -> None:
    state = {k: torch.full_like(v, 0.5) for k, v in mlp.state_dict().items()}
    load_state_strict(mlp, state, "x")
    assert all(torch.equal(v, state[k]) for k, v in mlp.state_dict().items())


def test_checkpoint_whose_metadata_was_altered_does_not_load(
    tiny_ckpt: Path, tmp_path: Path, rebuild
) -> None:
    """Same tensors, metadata claiming width 9: rebuilding + strict loading names the mis-shaped tensors."""
    good = load_checkpoint(tiny_ckpt)
    meta = {k: v for k, v in good.meta.items() if k != "schema"}
    meta["model"] = {"name": "mlp", "config": {**meta["model"]["config"], "width": 9}}
    path = tmp_path / "altered.safetensors"
    save_checkpoint(path, good.state, meta)
    with pytest.raises(LscapeError) as info:
        rebuild(path)
    assert info.value.line() == (
        "checkpoint tensors do not match the model: mis-shaped (file vs model) "
        "hidden.0.weight (8, 64) vs (9, 64); hidden.0.bias (8,) vs (9,); head.weight (10, 8) vs (10, 9)"
        f": {path} {FIX}"
    )


def test_checkpoint_naming_an_unknown_model(tiny_ckpt: Path, tmp_path: Path, rebuild) -> None:
    good = load_checkpoint(tiny_ckpt)
    meta = {k: v for k, v in good.meta.items() if k != "schema"}
    meta["model"] = {"name": "transformer", "config": {}}
    path = tmp_path / "unknown.safetensors"
    save_checkpoint(path, good.state, meta)
    with pytest.raises(LscapeError) as info:
        rebuild(path)
    assert (
        info.value.line() == f"unknown model 'transformer': {path} (known models: mlp, cnn, resnet, linear)"
    )


def test_plain_safetensors_file_needs_a_model_config(tmp_path: Path, mlp: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file(mlp.state_dict(), str(path))
    expected = (
        f"safetensors file has no lscape metadata: {path} "
        "(describe the model with --model-config spec.json (see docs/formats.md))"
    )
    for fn in (read_metadata, load_checkpoint):
        with pytest.raises(LscapeError) as info:
            fn(path)
        assert info.value.line() == expected
    # ... and with the description it loads, tensors and all.
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"name": "mlp", "config": {"input_shape": [1, 8, 8], "width": 8}}))
    ckpt = load_checkpoint(path, model_config=spec)
    module = models.build(models.ModelSpec.from_dict(ckpt.meta["model"]))
    load_state_strict(module, ckpt.state, str(path))
    assert all(torch.equal(v, mlp.state_dict()[k]) for k, v in module.state_dict().items())


def test_schema_kind_and_version_are_checked(tmp_path: Path) -> None:
    traj = tmp_path / "t.safetensors"
    save_checkpoint(traj, {"a": torch.zeros(2, 3)}, {"model": {}}, schema=TRAJECTORY_SCHEMA)
    with pytest.raises(LscapeError) as info:
        read_metadata(traj)
    assert (
        info.value.line()
        == f"file is a {TRAJECTORY_SCHEMA}, not a {CHECKPOINT_SCHEMA}: {traj} (pass the right kind of file)"
    )
    future = tmp_path / "f.safetensors"
    save_checkpoint(future, {"a": torch.zeros(2)}, {"model": {}}, schema="lscape.checkpoint/2")
    with pytest.raises(LscapeError) as info:
        load_checkpoint(future)
    assert info.value.line() == (
        f"unsupported schema version lscape.checkpoint/2 (this lscape reads "
        f"{CHECKPOINT_SCHEMA}): {future} (use the lscape version that wrote it)"
    )


class _Exploding:
    """A 'tensor' that fails as soon as the writer touches it."""

    def __getattr__(self, name: str) -> object:
        raise RuntimeError("boom")


def test_a_failed_write_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_checkpoint(path, {"a": torch.ones(3)}, META)
    before = path.read_bytes()
    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint(path, {"a": torch.zeros(3), "z": _Exploding()}, META)  # type: ignore[dict-item]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


def test_checkpoint_gets_ordinary_file_permissions(tmp_path: Path) -> None:
    """files.atomic_path promises outputs 'ordinary permissions' (0666 & ~umask), like any other file."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "m.safetensors"
        save_checkpoint(path, {"a": torch.ones(3)}, META)
        plain = tmp_path / "plain.txt"
        plain.write_text("x")
    finally:
        os.umask(old)
    assert oct(path.stat().st_mode & 0o777) == oct(plain.stat().st_mode & 0o777) == oct(0o644)


# ------------------------------------------------------------------- load_model: file -> ready module


def test_load_model_rebuilds_the_module_in_eval_mode(tiny_ckpt: Path) -> None:
    loaded = load_model(tiny_ckpt, dtype=torch.float64)
    assert not loaded.module.training
    state = load_checkpoint(tiny_ckpt).state
    for k, v in loaded.module.state_dict().items():
        assert v.dtype == torch.float64 and torch.equal(v, state[k].double()), k
    assert loaded.spec == models.ModelSpec.from_dict(read_metadata(tiny_ckpt)["model"])


def _resave(src: Path, dst: Path, **changes: object) -> Path:
    good = load_checkpoint(src)
    meta = {k: v for k, v in good.meta.items() if k != "schema"}
    meta.update(changes)
    save_checkpoint(dst, good.state, meta)
    return dst


def test_load_model_refuses_an_unknown_model(tiny_ckpt: Path, tmp_path: Path) -> None:
    path = _resave(tiny_ckpt, tmp_path / "u.safetensors", model={"name": "transformer", "config": {}})
    with pytest.raises(LscapeError) as info:
        load_model(path)
    assert info.value.line() == (
        f"unknown model 'transformer': {path} (model description) (known models: mlp, cnn, resnet, linear)"
    )


def test_load_model_refuses_tensors_that_do_not_fit(tiny_ckpt: Path, tmp_path: Path) -> None:
    config = read_metadata(tiny_ckpt)["model"]["config"]
    path = _resave(
        tiny_ckpt, tmp_path / "d.safetensors", model={"name": "mlp", "config": {**config, "depth": 2}}
    )
    with pytest.raises(LscapeError) as info:
        load_model(path)
    assert info.value.line() == (
        f"checkpoint tensors do not match the model: missing hidden.1.bias, hidden.1.weight: {path} {FIX}"
    )


def test_load_model_with_a_model_config(tmp_path: Path, mlp: torch.nn.Module) -> None:
    from safetensors.torch import save_file

    path = tmp_path / "plain.safetensors"
    save_file(mlp.state_dict(), str(path))
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "model": {"name": "mlp", "config": {"input_shape": [1, 8, 8], "width": 8}},
                "dataset": {"name": "digits"},
            }
        )
    )
    loaded = load_model(path, model_config=spec)
    assert all(torch.equal(v, mlp.state_dict()[k]) for k, v in loaded.module.state_dict().items())
    assert loaded.checkpoint.meta["dataset"] == {"name": "digits"}
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"name": "mlp", "config": {"input_shape": [1, 8, 8], "width": 9}}))
    with pytest.raises(LscapeError, match=r"^checkpoint tensors do not match the model: mis-shaped"):
        load_model(path, model_config=wrong)
    missing = tmp_path / "missing.json"
    with pytest.raises(LscapeError) as info:
        load_model(path, model_config=missing)
    assert info.value.line() == f"model config not found: {missing} (check the path)"
    broken = tmp_path / "broken.json"
    broken.write_text("{name: mlp")
    with pytest.raises(LscapeError) as info:
        load_model(path, model_config=broken)
    assert info.value.line() == (
        "model config is not valid JSON (Expecting property name enclosed in double quotes): "
        f"{broken} line 1 column 2 (fix the JSON at that place)"
    )
