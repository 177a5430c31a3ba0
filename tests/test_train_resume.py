"""`lscape train --resume`: a run continued from its saved state ends exactly where an uninterrupted run does.

In-process: the state saved at the end of epoch k (through the real file, ``torch.load(weights_only=True)``)
is taken up by a fresh run, whose results must equal the uninterrupted run's bit for bit (parameters,
buffers, trajectory, stop reasons, history but for wall times), for SGD with momentum, Adam, patience with
``restore_best`` and tracked curvature. The CLI side: the file's name and removal, the key
check, the option's domain. SIGKILL and SIGINT of a real process are in tests/test_faults.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from lscape_cli import models
from lscape_cli.core.training.engine import RunResult, TrainConfig, train_restarts
from lscape_cli.core.training.tracking import make_spec, make_tracker
from lscape_cli.storage.train_resume import ResumeFile, resume_path

CPU = torch.device("cpu")
KEY = {"training.lr": 0.1}


class SaveAt(ResumeFile):
    """Saves the state at the end of epoch ``k`` only (the store is asked after every epoch)."""

    def __init__(self, path: Path, k: int) -> None:
        super().__init__(path, KEY, requested=False, every_s=0.0)
        self.k, self.asked = k, 0

    def due(self) -> bool:
        self.asked += 1
        return self.asked == self.k


def without_wall_times(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for entry in history:
        entry = {k: v for k, v in entry.items() if k != "wall_time_s"}
        if "tracking_cost" in entry:
            entry["tracking_cost"] = {k: v for k, v in entry["tracking_cost"].items() if k != "wall_time_s"}
        out.append(entry)
    return out


def assert_same_run(a: RunResult, b: RunResult, same_bits: Any) -> None:
    assert (a.stop_reason, a.steps, a.epochs, a.best_epoch) == (
        b.stop_reason,
        b.steps,
        b.epochs,
        b.best_epoch,
    )
    assert list(a.state) == list(b.state)
    for name in a.state:
        assert same_bits(a.state[name], b.state[name]), name
    assert a.final == b.final
    assert without_wall_times(a.history) == without_wall_times(b.history)
    assert (a.trajectory_epochs, a.trajectory_steps) == (b.trajectory_epochs, b.trajectory_steps)
    if a.trajectory is None or b.trajectory is None:
        assert a.trajectory is b.trajectory is None
    else:
        for name in a.trajectory:
            assert same_bits(a.trajectory[name], b.trajectory[name]), name


CASES = {  # model options, training options, the stop reasons the reference run ends with
    "sgd-momentum": ({"depth": 2, "width": 8}, {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9}, {"epochs"}),
    "adam-window": (
        {"depth": 1, "width": 8},
        {"optimizer": "adam", "lr": 0.01, "tol": 0.05, "tol_rule": "window:2", "schedule": "cosine"},
        {"tol_window"},
    ),
    "patience-restore-best": (  # restart 1 stops on patience at epoch 3, restart 0 later
        {"depth": 1, "width": 8},
        {"optimizer": "adamw", "lr": 0.2, "weight_decay": 0.01, "patience": 2, "restore_best": True},
        {"patience"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_resuming_after_epoch_k_gives_the_uninterrupted_run(
    case: str, tmp_path: Path, digits: Any, spec_for, same_bits
) -> None:
    model_opts, opts, reasons = CASES[case]
    spec = spec_for("mlp", digits, **model_opts)
    cfg = TrainConfig(batch_size=32, epochs=8, trajectory_every=2, **opts)
    path = tmp_path / "model.resume.pt"

    def run(store: ResumeFile | None) -> list[RunResult]:
        return train_restarts(models.build(spec), digits, cfg, [3, 4], CPU, torch.float32, store=store)

    reference = run(None)
    assert {r.stop_reason for r in reference} == reasons  # the rules the case is about did fire
    run(SaveAt(path, 3))  # the same run, keeping epoch 3
    assert path.exists()
    resumed = ResumeFile(path, KEY, requested=True, every_s=1e9)
    results = run(resumed)
    assert resumed.resumed_from == 3
    for a, b in zip(results, reference, strict=True):
        assert_same_run(a, b, same_bits)


def test_resumed_tracking_probes_are_the_same(tmp_path: Path, digits: Any, spec_for, same_bits) -> None:
    spec = spec_for("mlp", digits, depth=1, width=8)
    cfg = TrainConfig(batch_size=32, epochs=5, optimizer="sgd", lr=0.05, momentum=0.9)
    track = make_spec("lambda_max,trace,sharpness:0.05,noise:0.01", every=2, samples=24, seed=3)
    path = tmp_path / "model.resume.pt"

    def run(store: ResumeFile | None) -> list[RunResult]:
        tracker = make_tracker(track, digits, cfg)
        return train_restarts(
            models.build(spec), digits, cfg, [1], CPU, torch.float32, tracker=tracker, store=store
        )

    (reference,) = run(None)
    run(SaveAt(path, 2))
    (result,) = run(ResumeFile(path, KEY, requested=True, every_s=1e9))
    assert [e["epoch"] for e in result.history if "tracked" in e] == [1, 2, 4, 5]
    assert_same_run(result, reference, same_bits)
    assert result.tracking_s > 0


def test_a_state_from_other_settings_is_refused_naming_the_fields(
    tmp_path: Path, digits: Any, spec_for
) -> None:
    from lscape_cli.errors import LscapeError

    spec = spec_for("mlp", digits, depth=1, width=8)
    cfg = TrainConfig(batch_size=32, epochs=3)
    path = tmp_path / "model.resume.pt"
    train_restarts(models.build(spec), digits, cfg, [0], CPU, torch.float32, store=SaveAt(path, 1))
    other = ResumeFile(path, {"training.lr": 0.2, "seeds": [0]}, requested=True, every_s=0.0)
    with pytest.raises(LscapeError) as err:
        other.load()
    line = err.value.line()
    assert "(seeds, training.lr differ)" in line and str(path) in line and "without --resume" in line
    assert ResumeFile(path, {"training.lr": 0.2}, requested=False, every_s=0.0).load() is None  # no --resume


def test_an_unreadable_state_is_one_error(tmp_path: Path) -> None:
    from lscape_cli.errors import LscapeError

    path = tmp_path / "model.resume.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(LscapeError, match="cannot read the resume state"):
        ResumeFile(path, KEY, requested=True, every_s=0.0).load()
    torch.save({"schema": "something else"}, path)
    with pytest.raises(LscapeError, match="not a lscape.train-resume/1 file"):
        ResumeFile(path, KEY, requested=True, every_s=0.0).load()


def test_resume_file_names_are_per_shard_and_never_checkpoints(tmp_path: Path) -> None:
    assert resume_path(tmp_path, "m", None) == tmp_path / "m.resume.pt"
    assert resume_path(tmp_path, "m", "1/4") == tmp_path / "m.shard-1-of-4.resume.pt"
    for path in (resume_path(tmp_path, "m", None), resume_path(tmp_path, "m", "1/4")):
        assert not path.match("*.safetensors") and not path.match("*.json")


def test_cli_removes_the_state_on_success_and_records_the_resume(
    tmp_path: Path, cli, tiny_args, read_json, train_validator
) -> None:
    out = tmp_path / "run"
    stale = out / "model.resume.pt"
    out.mkdir()
    stale.write_bytes(b"stale state of another run")  # without --resume: ignored, then removed
    result = cli(*tiny_args(out, "--epochs", "3", "--resume-every", "0"))
    assert result.exit_code == 0, result.output
    assert not stale.exists()
    record = read_json(out / "model.train.json")
    assert record["config"]["resume"] == {"requested": False, "from_epoch": None}
    assert not list(train_validator.iter_errors(record))
    # --resume with no state: a warning, and the run starts at epoch 1
    again = cli(*tiny_args(out, "--epochs", "3", "--resume", "--overwrite"))
    assert again.exit_code == 0, again.output
    assert "--resume found no state" in again.stderr
    record = read_json(out / "model.train.json")
    assert record["config"]["resume"] == {"requested": True, "from_epoch": None}
    assert any("--resume found no state" in w for w in record["warnings"])


def test_cli_resume_keeps_the_output_guard_and_checks_the_key(
    tmp_path: Path, cli, tiny_args, error_line
) -> None:
    out = tmp_path / "run"
    assert cli(*tiny_args(out, "--epochs", "1")).exit_code == 0
    refused = cli(*tiny_args(out, "--epochs", "1", "--resume"))  # --resume is no licence to overwrite
    assert "output exists" in error_line(refused)
    _save_state(out / "model.resume.pt", tmp_path, cli, tiny_args, "--lr", "0.05")
    changed = cli(*tiny_args(out, "--epochs", "4", "--lr", "0.2", "--resume", "--overwrite"))
    line = error_line(changed)
    assert "resume state was made with other settings (training.epochs, training.lr differ)" in line
    assert str(out / "model.resume.pt") in line
    assert (out / "model.resume.pt").exists()  # a refusal keeps it


def _save_state(dest: Path, tmp_path: Path, cli, tiny_args, *extra: str) -> None:
    """A resume state left by a real run (its epoch 1) of the tiny command with ``extra``."""
    from lscape_cli.storage import train_resume

    work = tmp_path / "state"
    kept: list[bytes] = []
    save = train_resume.ResumeFile.save

    def keep_first(self: ResumeFile, state: Any) -> None:
        save(self, state)
        if not kept:
            kept.append(self.path.read_bytes())

    mp = pytest.MonkeyPatch()
    mp.setattr(train_resume.ResumeFile, "save", keep_first)
    try:
        assert cli(*tiny_args(work, "--epochs", "3", "--resume-every", "0", *extra)).exit_code == 0
    finally:
        mp.undo()
    dest.write_bytes(kept[0])


@pytest.mark.parametrize("value", ["-1", "nan", "inf"])
def test_resume_every_domain(value: str, tmp_path: Path, cli, tiny_args) -> None:
    result = cli(*tiny_args(tmp_path / "run", "--resume-every", value))
    assert result.exit_code == 2
    assert "--resume-every" in result.output
    assert not (tmp_path / "run").exists()
