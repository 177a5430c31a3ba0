"""Traps a new user falls into, each fixed and pinned: threads, logs, plain files, null group keys,
failed runs over a previous run, outputs staged until the whole command succeeded."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from lscape_cli.storage import files
from lscape_cli.storage.checkpoint import load_checkpoint


def test_threads_option_and_environment_variable(cli, tiny_ckpt: Path, tmp_path: Path, read_json) -> None:
    """--threads N (or $LSCAPE_THREADS) sets torch's pool and the record says how many were used."""
    before = torch.get_num_threads()
    try:
        out = tmp_path / "p.json"
        base = ("probe", tiny_ckpt, "--grad-norm", "--device", "cpu", "--quiet", "--out", out)
        assert cli(*base, "--threads", "2").exit_code == 0
        assert read_json(out)["environment"]["torch_threads"] == 2
        assert cli(*base, env={"LSCAPE_THREADS": "1"}).exit_code == 0
        assert read_json(out)["environment"]["torch_threads"] == 1
    finally:
        torch.set_num_threads(before)


def test_tables_are_not_truncated_in_logs(cli, tiny_args, tmp_path: Path) -> None:
    """stderr is not a terminal under CliRunner (as in CI logs): long names and values are printed whole."""
    name = "a-model-name-long-enough-to-be-cut-by-an-eighty-column-table"
    args = [a for a in tiny_args(tmp_path / "run", "--name", name) if a != "--quiet"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert f"{name}.safetensors" in result.stderr
    assert "…" not in result.stderr


def test_plain_safetensors_says_which_loss_it_assumed(
    cli, tiny_ckpt: Path, tmp_path: Path, read_json
) -> None:
    """No training metadata: cross-entropy is assumed, with a warning on stderr and in the record."""
    ckpt = load_checkpoint(tiny_ckpt)
    plain = tmp_path / "plain.safetensors"
    save_file({k: v.contiguous() for k, v in ckpt.state.items()}, str(plain))
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"model": ckpt.meta["model"], "dataset": ckpt.meta["dataset"]}))
    out = tmp_path / "p.json"
    args = ("probe", plain, "--model-config", spec, "--grad-norm", "--device", "cpu", "--quiet", "--out", out)
    result = cli(*args)
    assert result.exit_code == 0, result.output
    assert result.stderr.startswith(
        f"Warning: {plain} carries no training metadata: evaluating cross-entropy"
    )
    record = read_json(out)
    assert record["config"]["evaluation"]["loss_source"] == "default (no training metadata)"
    assert any("--loss mse" in w for w in record["warnings"])
    again = cli(*args, "--loss", "mse")
    assert again.exit_code == 0 and "Warning" not in again.stderr
    assert read_json(out)["config"]["evaluation"]["loss_source"] == "--loss"


def test_pareto_groups_null_and_numeric_keys_together(cli, tiny_args, tmp_path: Path, read_json) -> None:
    """Seed 003's `--group-by training.batch_size`: full batch (null) next to a number."""
    for sub, batch in (("full", "full"), ("b32", "32")):
        r = cli(*tiny_args(tmp_path / "runs" / sub, "--batch-size", batch, "--restarts", "2"))
        assert r.exit_code == 0, r.output
    out = tmp_path / "p.json"
    result = cli(
        "pareto", tmp_path / "runs", "--group-by", "training.batch_size", "--x", "train_loss", "--y",
        "val_loss", "--target", "test_loss", "--no-params", "--quiet", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list(read_json(out)["results"]["groups"]) == ["None", "32"]


def test_a_failed_slice_keeps_the_previous_slice(cli, tiny_ckpt: Path, tmp_path: Path, error_line) -> None:
    """A slice that fails after its directions were made leaves the earlier slice's files untouched."""
    ckpt = tmp_path / "m.safetensors"
    shutil.copyfile(tiny_ckpt, ckpt)
    args = ("slice", ckpt, "--dims", "1", "--steps", "3", "--no-plot", "--device", "cpu", "--quiet")
    assert cli(*args).exit_code == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    traj = tmp_path / "t.safetensors"
    shutil.copyfile(tiny_ckpt.with_name("model.trajectory.safetensors"), traj)
    before[traj.name] = traj.read_bytes()
    line = error_line(cli(*args, "--seed", "1", "--range", "2", "--pca", traj, "--count", "5"))
    assert "--count" in line or "directions" in line, line
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_transaction_commits_all_or_nothing(tmp_path: Path) -> None:
    """Staged files appear together on commit; on failure none appears and made directories go."""
    a, b = tmp_path / "new" / "deep" / "a.txt", tmp_path / "b.txt"
    b.write_text("old")
    with pytest.raises(RuntimeError), files.output_transaction():
        for path in (a, b):
            with files.atomic_path(path) as tmp:
                tmp.write_text("new")
        assert not a.exists() and b.read_text() == "old"  # nothing visible before the commit
        raise RuntimeError
    assert not (tmp_path / "new").exists() and b.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.txt"]  # no temporary file left
    with files.output_transaction() as tx:
        for path in (a, b):
            with files.atomic_path(path) as tmp:
                tmp.write_text("new")
        assert files.sha256_file(a) == files.sha256_file(b)  # hashes read the staged bytes
        tx.commit()
    assert a.read_text() == b.read_text() == "new"


def test_an_output_onto_an_input_is_refused_at_write_time(tmp_path: Path) -> None:
    """The safety net behind the commands' up-front checks: a registered input is never replaced."""
    from lscape_cli.errors import LscapeError

    src = tmp_path / "in.json"
    src.write_text("keep")
    with pytest.raises(LscapeError, match="output would overwrite an input"), files.output_transaction():
        files.check_input(src)
        with files.atomic_path(tmp_path / "." / "in.json") as tmp:
            tmp.write_text("lost")
    assert src.read_text() == "keep"
