"""A corpus of bad inputs across every command, tried as a careless or hostile user would.

Each case runs one command in a workspace holding a trained run (checkpoint, train record, trajectory,
probe record, a second checkpoint) plus whatever broken file the case makes, and asserts the error
contract: exit 1 (2 for usage errors), exactly one ``Error:`` line naming the offending input, no
traceback, and every file of the workspace byte-identical afterwards with no file added.

Classes (see ``CASES``): option domains, choices, corrupt/truncated/foreign files, malformed JSON inputs
and records, outputs onto inputs, existing outputs, failed runs over a previous run, resource limits.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import TINY_TRAIN


@dataclass(frozen=True)
class Case:
    """One bad invocation: argv (``{w}`` is the workspace), exit code, text the Error line must hold."""

    kind: str
    argv: str
    code: int
    names: str
    setup: Callable[[Path], None] | None = None


W = "{w}"
CKPT = f"{W}/model.safetensors"
TRAIN = "train " + " ".join(TINY_TRAIN) + f" --out {W}/new"
PROBE = f"probe {CKPT} --lambda-max --device cpu --quiet"
SLICE = f"slice {CKPT} --dims 1 --steps 3 --no-plot --device cpu --quiet"
CONNECT = f"connect {CKPT} {W}/other.safetensors --points 3 --no-plot --device cpu --quiet"
PARETO = f"pareto {W} --y grad_norm --no-params --quiet --out {W}/new/pareto.json"


def _write(name: str, data: bytes | str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / name).write_bytes(data if isinstance(data, bytes) else data.encode())

    return make


def _cut(name: str, keep: Callable[[bytes], int]) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        data = (w / "model.safetensors").read_bytes()
        (w / name).write_bytes(data[: keep(data)])

    return make


def _header(obj: dict, length: int | None = None) -> bytes:
    text = json.dumps(obj).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text


def _record(name: str, edit: Callable[[dict], object]) -> Callable[[Path], None]:
    """Copy the train record with ``edit`` applied (it may return a replacement)."""

    def make(w: Path) -> None:
        rec = json.loads((w / "model.train.json").read_text())
        new = edit(rec)
        (w / name).write_text(json.dumps(rec if new is None else new))

    return make


def _set(path: str, value: object) -> Callable[[dict], None]:
    def edit(rec: dict) -> None:
        *parents, last = path.split(".")
        node = rec
        for p in parents:
            node = node[p]
        node[last] = value

    return edit


def _drop(key: str) -> Callable[[dict], None]:
    def edit(rec: dict) -> None:
        del rec[key]

    return edit


def _blocked(name: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / name).parent.mkdir(parents=True, exist_ok=True)
        (w / name).write_text("in the way")

    return make


def _symlink(name: str, target: str) -> Callable[[Path], None]:
    return lambda w: (w / name).symlink_to(w / target)


def _restarts(folder: str, count: int) -> Callable[[Path], None]:
    """``folder/model-r000.*`` ... as ``lscape train --restarts count`` names them (copies of the run)."""

    def make(w: Path) -> None:
        (w / folder).mkdir()
        for r in range(count):
            for suffix in (".safetensors", ".train.json"):
                shutil.copyfile(w / f"model{suffix}", w / folder / f"model-r{r:03d}{suffix}")

    return make


def _touch_ckpt(w: Path) -> None:
    """A byte of the checkpoint changed after it was probed (the record's sha256 no longer matches)."""
    p = w / "model.safetensors"
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))


def _move_ckpt(w: Path) -> None:
    (w / "model.safetensors").rename(w / "moved.safetensors")


DEEP = "[" * 100_000 + "]" * 100_000

CASES: dict[str, Case] = {
    # ---- option domains (usage errors, exit 2) ----------------------------------------------------------
    "train-lr-negative": Case("domain", f"{TRAIN} --lr -1", 2, "--lr"),
    "train-lr-nan": Case("domain", f"{TRAIN} --lr nan", 2, "--lr"),
    "train-lr-inf": Case("domain", f"{TRAIN} --lr inf", 2, "--lr"),
    "train-lr-text": Case("domain", f"{TRAIN} --lr fast", 2, "--lr"),
    "train-momentum-one": Case("domain", f"{TRAIN} --momentum 1", 2, "--momentum"),
    "train-beta1-one": Case("domain", f"{TRAIN} --optimizer adam --beta1 1.0", 2, "--beta1"),
    "train-beta2-negative": Case("domain", f"{TRAIN} --beta2 -0.1", 2, "--beta2"),
    "train-weight-decay-negative": Case("domain", f"{TRAIN} --weight-decay -1e-4", 2, "--weight-decay"),
    "train-tol-nan": Case("domain", f"{TRAIN} --tol nan", 2, "--tol"),
    "train-min-delta-negative": Case("domain", f"{TRAIN} --min-delta -1", 2, "--min-delta"),
    "train-epochs-zero": Case("domain", f"{TRAIN} --epochs 0", 2, "--epochs"),
    "train-max-steps-zero": Case("domain", f"{TRAIN} --max-steps 0", 2, "--max-steps"),
    "train-restarts-zero": Case("domain", f"{TRAIN} --restarts 0", 2, "--restarts"),
    "train-restart-seeds-past-the-seed-range": Case(
        "domain", f"{TRAIN} --seed 2147483647 --restarts 2", 1, "--seed 2147483647 with --restarts 2"
    ),
    "train-width-zero": Case("domain", f"{TRAIN} --width 0", 2, "--width"),
    "train-depth-zero": Case("domain", f"{TRAIN} --depth 0", 2, "--depth"),
    "train-seed-negative": Case("domain", f"{TRAIN} --seed -1", 2, "--seed"),
    "train-seed-huge": Case("domain", f"{TRAIN} --seed 99999999999999999999", 2, "--seed"),
    "train-split-seed-negative": Case("domain", f"{TRAIN} --split-seed -3", 2, "--split-seed"),
    "train-train-size-zero": Case("domain", f"{TRAIN} --train-size 0", 2, "--train-size"),
    "train-max-batch-zero": Case("domain", f"{TRAIN} --max-batch 0", 2, "--max-batch"),
    "train-trajectory-zero": Case("domain", f"{TRAIN} --save-trajectory 0", 2, "--save-trajectory"),
    "train-threads-zero": Case("domain", f"{TRAIN} --threads 0", 2, "--threads"),
    "train-synthetic-no-samples": Case(
        "domain", f"{TRAIN} --dataset synthetic --num-samples 0", 2, "--num-samples"
    ),
    "train-synthetic-no-features": Case(
        "domain", f"{TRAIN} --dataset synthetic --input-dim 0", 2, "--input-dim"
    ),
    "train-name-dotdot": Case("domain", f"{TRAIN} --name ../evil", 2, "--name"),
    "train-name-slash": Case("domain", f"{TRAIN} --name a/b", 2, "--name"),
    "train-name-empty": Case("domain", f"{TRAIN} --name ''", 2, "--name"),
    "train-name-hidden": Case("domain", f"{TRAIN} --name .hidden", 2, "--name"),
    "probe-tol-nan": Case("domain", f"{PROBE} --tol nan", 2, "--tol"),
    "probe-tol-negative": Case("domain", f"{PROBE} --tol -1", 2, "--tol"),
    "probe-memory-zero": Case("domain", f"{PROBE} --memory-budget 0", 2, "--memory-budget"),
    "probe-memory-nan": Case("domain", f"{PROBE} --memory-budget nan", 2, "--memory-budget"),
    "probe-retain-negative": Case("domain", f"{PROBE} --retain-chunks -1", 2, "--retain-chunks"),
    "probe-pac-target-inf": Case("domain", f"{PROBE} --pac-bayes-target inf", 2, "--pac-bayes-target"),
    "probe-pac-delta-one": Case("domain", f"{PROBE} --pac-bayes --pac-bayes-delta 1", 2, "--pac-bayes-delta"),
    "probe-pac-delta-zero": Case(
        "domain", f"{PROBE} --pac-bayes --pac-bayes-delta 0", 2, "--pac-bayes-delta"
    ),
    "probe-matvecs-two": Case("domain", f"{PROBE} --matvecs 2", 2, "--matvecs"),
    "probe-top-k-negative": Case("domain", f"{PROBE} --top-k -1", 2, "--top-k"),
    "probe-seed-negative": Case("domain", f"{PROBE} --seed -1", 2, "--seed"),
    "slice-range-nan": Case("domain", f"{SLICE} --range nan", 2, "--range"),
    "slice-range-negative": Case("domain", f"{SLICE} --range -1", 2, "--range"),
    "slice-range-zero": Case("domain", f"{SLICE} --range 0", 2, "--range"),
    "slice-eigen-tol-zero": Case("domain", f"{SLICE} --eigen-tol 0", 2, "--eigen-tol"),
    "slice-basin-nan": Case("domain", f"{SLICE} --basin-threshold nan", 2, "--basin-threshold"),
    "slice-fit-radius-negative": Case("domain", f"{SLICE} --fit-radius -1", 2, "--fit-radius"),
    "slice-memory-zero": Case("domain", f"{SLICE} --memory-budget 0", 2, "--memory-budget"),
    "connect-points-one": Case("domain", f"{CONNECT} --points 1", 2, "--points"),
    "connect-curve-lr-nan": Case("domain", f"{CONNECT} --curve-lr nan", 2, "--curve-lr"),
    "connect-curve-lr-negative": Case("domain", f"{CONNECT} --curve-lr -1", 2, "--curve-lr"),
    # options audited later: every count >= its least value, every number finite and in its range
    "train-grad-tol-nan": Case("domain", f"{TRAIN} --grad-tol nan", 2, "--grad-tol"),
    "train-grad-tol-negative": Case("domain", f"{TRAIN} --grad-tol -1", 2, "--grad-tol"),
    "train-grad-tol-zero": Case("domain", f"{TRAIN} --grad-tol 0", 2, "--grad-tol"),
    "train-grad-tol-inf": Case("domain", f"{TRAIN} --grad-tol inf", 2, "--grad-tol"),
    "train-track-seed-negative": Case(
        "domain", f"{TRAIN} --track lambda_max --track-seed -1", 2, "--track-seed"
    ),
    "train-track-seed-huge": Case("domain", f"{TRAIN} --track-seed 2147483648", 2, "--track-seed"),
    "train-track-every-zero": Case(
        "domain", f"{TRAIN} --track lambda_max --track-every 0", 2, "--track-every"
    ),
    "train-track-samples-zero": Case(
        "domain", f"{TRAIN} --track lambda_max --track-samples 0", 2, "--track-samples"
    ),
    "train-patience-zero": Case("domain", f"{TRAIN} --patience 0", 2, "--patience"),
    "train-eval-every-zero": Case("domain", f"{TRAIN} --eval-every 0", 2, "--eval-every"),
    "train-min-delta-inf": Case("domain", f"{TRAIN} --min-delta inf", 2, "--min-delta"),
    "train-tol-zero": Case("domain", f"{TRAIN} --tol 0", 2, "--tol"),
    "train-val-size-negative": Case("domain", f"{TRAIN} --val-size -1", 2, "--val-size"),
    "train-hidden-zero": Case("domain", f"{TRAIN} --model cnn --hidden 0", 2, "--hidden"),
    "train-stages-zero": Case("domain", f"{TRAIN} --model resnet --stages 0", 2, "--stages"),
    "train-blocks-zero": Case("domain", f"{TRAIN} --model resnet --blocks 0", 2, "--blocks"),
    "probe-fisher-samples-zero": Case(
        "domain", f"{PROBE} --curvature fisher --fisher-samples 0", 2, "--fisher-samples"
    ),
    "probe-num-batches-zero": Case("domain", f"{PROBE} --num-batches 0", 2, "--num-batches"),
    "probe-batch-size-zero": Case("domain", f"{PROBE} --num-batches 2 --batch-size 0", 2, "--batch-size"),
    "probe-max-iter-one": Case("domain", f"{PROBE} --max-iter 1", 2, "--max-iter"),
    "probe-tol-zero": Case("domain", f"{PROBE} --tol 0", 2, "--tol"),
    "probe-tol-inf": Case("domain", f"{PROBE} --tol inf", 2, "--tol"),
    "probe-density-runs-zero": Case("domain", f"{PROBE} --density --density-runs 0", 2, "--density-runs"),
    "probe-density-steps-one": Case("domain", f"{PROBE} --density --density-steps 1", 2, "--density-steps"),
    "probe-directions-zero": Case("domain", f"{PROBE} --sharpness 0.1 --directions 0", 2, "--directions"),
    "probe-ascent-steps-negative": Case(
        "domain", f"{PROBE} --sharpness 0.1 --ascent-steps -1", 2, "--ascent-steps"
    ),
    "probe-noise-samples-one": Case("domain", f"{PROBE} --noise 0.1 --noise-samples 1", 2, "--noise-samples"),
    "probe-pac-target-zero": Case(
        "domain", f"{PROBE} --pac-bayes --pac-bayes-target 0", 2, "--pac-bayes-target"
    ),
    "probe-samples-zero": Case("domain", f"{PROBE} --samples 0", 2, "--samples"),
    "probe-max-batch-zero": Case("domain", f"{PROBE} --max-batch 0", 2, "--max-batch"),
    "probe-seed-huge": Case("domain", f"{PROBE} --seed 2147483648", 2, "--seed"),
    "slice-steps-one": Case("domain", f"{SLICE} --steps 1", 2, "--steps"),
    "slice-steps-negative": Case("domain", f"{SLICE} --steps -3", 2, "--steps"),
    "slice-count-zero": Case("domain", f"{SLICE} --count 0", 2, "--count"),
    "slice-dims-three": Case("domain", f"{SLICE} --dims 3", 2, "--dims"),
    "slice-dims-zero": Case("domain", f"{SLICE} --dims 0", 2, "--dims"),
    "slice-eigen-tol-inf": Case("domain", f"{SLICE} --eigen --eigen-tol inf", 2, "--eigen-tol"),
    "slice-seed-negative": Case("domain", f"{SLICE} --seed -1", 2, "--seed"),
    "connect-align-iters-zero": Case(
        "domain", f"{CONNECT} --align weights --align-iters 0", 2, "--align-iters"
    ),
    "connect-curve-epochs-zero": Case(
        "domain", f"{CONNECT} --curve bezier --curve-epochs 0", 2, "--curve-epochs"
    ),
    "connect-curve-batch-size-zero": Case(
        "domain", f"{CONNECT} --curve bezier --curve-batch-size 0", 2, "--curve-batch-size"
    ),
    "connect-bn-batch-size-one": Case(
        "domain", f"{CONNECT} --reset-bn --bn-batch-size 1", 2, "--bn-batch-size"
    ),
    "connect-seed-negative": Case("domain", f"{CONNECT} --seed -5", 2, "--seed"),
    "pareto-threads-zero": Case("domain", f"{PARETO} --threads 0", 2, "--threads"),
    # ---- values outside a list of choices or a format (exit 1) -------------------------------------------
    "train-batch-size-zero": Case("choice", f"{TRAIN} --batch-size 0", 1, "--batch-size"),
    "train-init-nan": Case("choice", f"{TRAIN} --init normal:nan", 1, "--init"),
    "train-init-inf": Case("choice", f"{TRAIN} --init normal:inf", 1, "--init"),
    "train-init-unknown": Case("choice", f"{TRAIN} --init uniform:1", 1, "--init"),
    "train-optimizer": Case("choice", f"{TRAIN} --optimizer rmsprop", 1, "--optimizer"),
    "train-loss": Case("choice", f"{TRAIN} --loss hinge", 1, "--loss"),
    "train-device": Case("choice", f"{TRAIN} --device tpu", 1, "--device"),
    "train-dtype": Case("choice", f"{TRAIN} --dtype float16", 1, "--dtype"),
    "probe-sharpness-nan": Case("choice", f"{PROBE} --sharpness 0.01,nan", 1, "--sharpness"),
    "probe-noise-negative": Case("choice", f"{PROBE} --noise -1e-3", 1, "--noise"),
    "probe-noise-text": Case("choice", f"{PROBE} --noise abc", 1, "--noise"),
    "probe-split": Case("choice", f"{PROBE} --split bogus", 1, "--split"),
    "probe-trace-method": Case("choice", f"{PROBE} --trace-method foo", 1, "--trace-method"),
    "probe-check-syntax": Case("choice", f"{PROBE} --check 'lambda_max <'", 1, "--check"),
    "probe-mode": Case("choice", f"{PROBE} --mode weird", 1, "--mode"),
    "slice-norm": Case("choice", f"{SLICE} --norm bogus", 1, "--norm"),
    "slice-two-kinds": Case(
        "choice", f"{SLICE} --toward {W}/other.safetensors --pca {W}/model.trajectory.safetensors", 1, "--pca"
    ),
    "connect-align": Case("choice", f"{CONNECT} --align bogus", 1, "--align"),
    "connect-curve": Case("choice", f"{CONNECT} --curve bogus", 1, "--curve"),
    "pareto-reference-nan": Case(
        "choice",
        f"{PARETO} --metric train_loss:min --metric val_loss:min --reference 1,nan",
        1,
        "--reference",
    ),
    "pareto-reference-text": Case(
        "choice", f"{PARETO} --metric train_loss:min --metric val_loss:min --reference a,b", 1, "--reference"
    ),
    "pareto-metric-sense": Case("choice", f"{PARETO} --metric train_loss:up", 1, "--metric"),
    "pareto-group-by": Case("choice", f"{PARETO} --group-by nosuch.key", 1, "--group-by"),
    "pareto-axes": Case("choice", f"{PARETO} --axes bogus", 1, "--axes"),
    "pareto-reference-inf": Case(
        "choice",
        f"{PARETO} --metric train_loss:min --metric val_loss:min --reference 1,inf",
        1,
        "--reference",
    ),
    # numbers inside a string grammar (--schedule, --tol-rule, --track): finite, counts bounded
    "train-schedule-gamma-inf": Case("choice", f"{TRAIN} --schedule step:1:inf", 1, "--schedule"),
    "train-schedule-gamma-overflow": Case("choice", f"{TRAIN} --schedule step:1:1e400", 1, "--schedule"),
    "train-schedule-every-zero": Case("choice", f"{TRAIN} --schedule step:0:0.5", 1, "--schedule"),
    "train-schedule-warmup-not-ascii": Case(
        "choice", f"{TRAIN} --schedule linear-warmup:²+cosine", 1, "--schedule"
    ),
    "train-schedule-warmup-huge": Case(
        "choice", f"{TRAIN} --schedule linear-warmup:{'9' * 30}+cosine", 1, "--schedule"
    ),
    "train-tol-rule-window-huge": Case("choice", f"{TRAIN} --tol-rule window:{'9' * 30}", 1, "--tol-rule"),
    "train-tol-rule-window-zero": Case("choice", f"{TRAIN} --tol-rule window:0", 1, "--tol-rule"),
    "train-track-sharpness-inf": Case("choice", f"{TRAIN} --track sharpness:inf", 1, "--track"),
    "train-track-noise-overflow": Case("choice", f"{TRAIN} --track noise:1e400", 1, "--track"),
    "train-track-top-k-huge": Case("choice", f"{TRAIN} --track top_k:99999999999", 1, "--track"),
    "train-track-split": Case(
        "choice", f"{TRAIN} --track lambda_max --track-split bogus", 1, "--track-split"
    ),
    "train-shard": Case("choice", f"{TRAIN} --restarts 2 --shard 2/2", 1, "--shard"),
    "probe-eig-method": Case("choice", f"{PROBE} --eig-method bogus", 1, "--eig-method"),
    "probe-power-top-k": Case("choice", f"{PROBE} --eig-method power --top-k 3", 1, "--eig-method"),
    "probe-curvature": Case("choice", f"{PROBE} --curvature bogus", 1, "--curvature"),
    "probe-noise-overflow": Case("choice", f"{PROBE} --noise 1e400", 1, "--noise"),
    "probe-check-misspelt": Case(
        "choice", f"{PROBE} --check 'lamda_max < 200'", 1, "did you mean 'lambda_max'"
    ),
    "probe-check-not-measured": Case("choice", f"{PROBE} --check 'trace < 200'", 1, "--trace"),
    "probe-check-top-k-beyond": Case("choice", f"{PROBE} --top-k 2 --check 'lambda_3 < 200'", 1, "--top-k"),
    # ---- corrupt, truncated or foreign files (exit 1) ----------------------------------------------------
    "probe-missing": Case("file", f"probe {W}/missing.safetensors", 1, "missing.safetensors"),
    "probe-directory": Case("file", f"probe {W}", 1, "{w}"),
    "probe-empty": Case(
        "file", f"probe {W}/bad.safetensors", 1, "bad.safetensors", _write("bad.safetensors", b"")
    ),
    "probe-cut-in-data": Case(
        "file",
        f"probe {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _cut("bad.safetensors", lambda d: len(d) - 5),
    ),
    "probe-cut-in-header": Case(
        "file", f"probe {W}/bad.safetensors", 1, "bad.safetensors", _cut("bad.safetensors", lambda d: 40)
    ),
    "probe-random-bytes": Case(
        "file",
        f"probe {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _write("bad.safetensors", bytes(range(256)) * 4),
    ),
    "probe-a-json-record": Case("file", f"probe {W}/model.train.json", 1, "model.train.json"),
    "probe-a-trajectory": Case(
        "file", f"probe {W}/model.trajectory.safetensors", 1, "model.trajectory.safetensors"
    ),
    "probe-header-length-overflow": Case(
        "file",
        f"probe {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _write("bad.safetensors", b"\xff" * 8 + b"{}"),
    ),
    "probe-header-256TB-tensor": Case(
        "file",
        f"probe {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _write(
            "bad.safetensors", _header({"w": {"dtype": "F32", "shape": [2**46], "data_offsets": [0, 2**48]}})
        ),
    ),
    "probe-header-not-object": Case(
        "file",
        f"probe {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _write("bad.safetensors", _header([1, 2])),  # type: ignore[arg-type]
    ),
    "probe-plain-file-no-model": Case(
        "file",
        f"probe {W}/plain.safetensors",
        1,
        "plain.safetensors",
        _write("plain.safetensors", _header({}) + b""),
    ),
    "slice-truncated": Case(
        "file",
        f"slice {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _cut("bad.safetensors", lambda d: len(d) // 2),
    ),
    "slice-toward-truncated": Case(
        "file",
        f"{SLICE} --toward {W}/bad.safetensors",
        1,
        "bad.safetensors",
        _cut("bad.safetensors", lambda d: len(d) - 1),
    ),
    "slice-pca-on-a-checkpoint": Case("file", f"{SLICE} --pca {W}/other.safetensors", 1, "other.safetensors"),
    "slice-directions-on-a-checkpoint": Case(
        "file", f"{SLICE} --directions {W}/other.safetensors", 1, "other.safetensors"
    ),
    "connect-missing-b": Case("file", f"connect {CKPT} {W}/nope.safetensors", 1, "nope.safetensors"),
    # a train output named under the other restart rule: the files that exist are named
    "probe-single-name-after-restarts": Case(
        "file",
        f"probe {W}/r3/model.safetensors",
        1,
        "this folder holds model-r000.safetensors ... model-r002.safetensors (lscape train --restarts 3",
        _restarts("r3", 3),
    ),
    "info-restart-name-of-a-single-run": Case(
        "file", f"info {W}/model-r000.safetensors", 1, "this folder holds model.safetensors ("
    ),
    "slice-restart-beyond-the-restarts": Case(
        "file",
        f"slice {W}/r3/model-r007.safetensors",
        1,
        "model-r000.safetensors ... model-r002.safetensors",
        _restarts("r3", 3),
    ),
    "slice-toward-restart-name": Case(
        "file", f"{SLICE} --toward {W}/other-r001.safetensors", 1, "this folder holds other.safetensors"
    ),
    "slice-pca-restart-name": Case(
        "file",
        f"{SLICE} --pca {W}/model-r000.trajectory.safetensors",
        1,
        "this folder holds model.trajectory.safetensors",
    ),
    "connect-b-single-name-after-restarts": Case(
        "file",
        f"connect {CKPT} {W}/r2/model.safetensors",
        1,
        "model-r000.safetensors and model-r001.safetensors (lscape train --restarts 2",
        _restarts("r2", 2),
    ),
    "pareto-record-single-name-after-restarts": Case(
        "file",
        f"pareto {W}/r3/model.train.json --no-params --out {W}/p.json",
        1,
        "this folder holds model-r000.train.json ... model-r002.train.json",
        _restarts("r3", 3),
    ),
    "connect-text-b": Case(
        "file",
        f"connect {CKPT} {W}/notes.safetensors",
        1,
        "notes.safetensors",
        _write("notes.safetensors", "hello\n"),
    ),
    "info-empty": Case(
        "file", f"info {W}/bad.safetensors", 1, "bad.safetensors", _write("bad.safetensors", b"")
    ),
    "info-json": Case("file", f"info {W}/model.train.json", 1, "model.train.json"),
    # ---- malformed JSON inputs: --model-config (exit 1) ---------------------------------------------------
    "model-config-syntax": Case(
        "json", f"{PROBE} --model-config {W}/m.json", 1, "m.json", _write("m.json", "{name: mlp")
    ),
    "model-config-deep": Case(
        "json", f"{PROBE} --model-config {W}/m.json", 1, "m.json", _write("m.json", DEEP)
    ),
    "model-config-array": Case(
        "json", f"{PROBE} --model-config {W}/m.json", 1, "m.json", _write("m.json", "[1]")
    ),
    "model-config-not-utf8": Case(
        "json", f"{PROBE} --model-config {W}/m.json", 1, "m.json", _write("m.json", b'{"a": "\xff"}')
    ),
    "model-config-huge": Case(
        "json", f"{PROBE} --model-config {W}/m.json", 1, "m.json", _write("m.json", " " * (2**20 + 1) + "{}")
    ),
    "model-config-wrong-type": Case(
        "json",
        f"{PROBE} --model-config {W}/m.json",
        1,
        "m.json",
        _write("m.json", json.dumps({"model": "mlp"})),
    ),
    # ---- malformed records read by pareto (exit 1; the file and the key named) -------------------------
    "record-syntax": Case(
        "record", f"{PARETO}", 1, "bad.train.json", _write("bad.train.json", '{"schema": ')
    ),
    "record-empty": Case("record", f"{PARETO}", 1, "bad.train.json", _write("bad.train.json", "")),
    "record-array": Case("record", f"{PARETO}", 1, "bad.train.json", _write("bad.train.json", "[]")),
    "record-deep": Case("record", f"{PARETO}", 1, "bad.train.json", _write("bad.train.json", DEEP)),
    "record-not-utf8": Case(
        "record", f"{PARETO}", 1, "bad.train.json", _write("bad.train.json", b"\xfe\xff{}")
    ),
    "record-missing-results": Case(
        "record", f"{PARETO}", 1, "results", _record("bad.train.json", _drop("results"))
    ),
    "record-results-a-string": Case(
        "record", f"{PARETO}", 1, "results", _record("bad.train.json", _set("results", "oops"))
    ),
    "record-loss-a-string": Case(
        "record",
        f"{PARETO}",
        1,
        "results.final.train_loss",
        _record("bad.train.json", _set("results.final.train_loss", "low")),
    ),
    "record-checkpoint-entry-missing-sha": Case(
        "record",
        f"{PARETO}",
        1,
        "results.checkpoint",
        _record("bad.train.json", _set("results.checkpoint", {"path": "model.safetensors"})),
    ),
    "record-foreign-schema": Case(
        "record",
        f"{PARETO} {W}/bad.json",
        1,
        "bad.json",
        _record("bad.json", _set("schema", "lscape.slice/1")),
    ),
    "record-future-version": Case(
        "record",
        f"{PARETO} {W}/bad.json",
        1,
        "bad.json",
        _record("bad.json", _set("schema", "lscape.train/9")),
    ),
    "record-checkpoint-changed": Case(
        "record", f"{PARETO} {W}/model.probe.json", 1, "model.safetensors", _touch_ckpt
    ),
    "record-checkpoint-missing": Case(
        "record",
        f"pareto {W}/model.probe.json --y grad_norm --no-params --out {W}/p.json",
        1,
        "model.safetensors",
        _move_ckpt,
    ),
    # ---- outputs onto inputs (exit 1) ----------------------------------------------------------------------
    "probe-out-is-the-checkpoint": Case("overlap", f"{PROBE} --out {CKPT}", 1, "model.safetensors"),
    "probe-out-links-to-the-checkpoint": Case(
        "overlap",
        f"{PROBE} --out {W}/link.json",
        1,
        "model.safetensors",
        _symlink("link.json", "model.safetensors"),
    ),
    "probe-out-is-the-model-config": Case(
        "overlap",
        f"{PROBE} --model-config {W}/m.json --out {W}/m.json",
        1,
        "m.json",
        _write("m.json", json.dumps({"name": "mlp"})),
    ),
    "slice-grid-onto-the-checkpoint": Case(
        "overlap", f"{SLICE} --out {W}/model.json", 1, "model.safetensors"
    ),
    "slice-grid-onto-the-trajectory": Case(
        "overlap",
        f"{SLICE} --pca {W}/model.trajectory.safetensors --out {W}/model.trajectory.json",
        1,
        "model.trajectory.safetensors",
    ),
    "connect-out-is-b": Case("overlap", f"{CONNECT} --out {W}/other.safetensors", 1, "other.safetensors"),
    "pareto-out-is-an-input-record": Case(
        "overlap",
        f"pareto {W}/model.train.json {W}/model.probe.json --no-params --out {W}/model.train.json",
        1,
        "model.train.json",
    ),
    "pareto-out-is-a-found-record": Case(
        "overlap",
        f"pareto {W} --y grad_norm --no-params --quiet --out {W}/model.probe.json",
        1,
        "model.probe.json",
    ),
    "train-out-is-a-file": Case("overlap", f"{TRAIN} --out {CKPT}", 1, "model.safetensors"),
    "report-out-is-an-input": Case(
        "overlap", f"report {W} {W}/r.html --out {W}/r.html", 1, "r.html", _write("r.html", "<p>mine</p>")
    ),
    "report-md-onto-an-input": Case(
        "overlap", f"report {W}/r.md {W}/model.train.json --out {W}/r.html", 1, "r.md", _write("r.md", "{}")
    ),
    "report-folder-blocked-by-a-file": Case(
        "exists", f"report {W} --out {W}/new/r.html", 1, "r-tables", _blocked("new/r-tables")
    ),
    "report-missing-input": Case("file", f"report {W}/nowhere", 1, "nowhere"),
    "report-future-record": Case(
        "record", f"report {W}", 1, "bad.json", _record("bad.json", _set("schema", "lscape.train/9"))
    ),
    # ---- requests that cannot fit in memory, refused before allocating (exit 1) ------------------------
    "train-width-beyond-memory": Case("memory", f"{TRAIN} --depth 4 --width 10000000", 1, "--width"),
    "train-synthetic-beyond-memory": Case(
        "memory",
        f"{TRAIN} --dataset synthetic --num-samples 1000000000 --input-dim 1000000",
        1,
        "--num-samples",
    ),
    "slice-grid-beyond-memory": Case("memory", f"{SLICE} --dims 2 --steps 1000001", 1, "--steps"),
    "probe-density-beyond-memory": Case(
        "memory", f"{PROBE} --density --density-steps 100000000000", 1, "--density-steps"
    ),
    "probe-top-k-beyond-the-parameters": Case("memory", f"{PROBE} --top-k 100000", 1, "--top-k"),
    "probe-more-batches-than-samples": Case(
        "memory", f"{PROBE} --num-batches 99999", 1, "99999 disjoint batches of 1 need 99999 samples"
    ),
    "probe-fisher-samples-beyond-memory": Case(
        "memory", f"{PROBE} --curvature fisher --fisher-samples {10**15}", 1, "--fisher-samples"
    ),
    "train-track-top-k-beyond-the-parameters": Case(
        "memory", f"{TRAIN} --track top_k:100000", 1, "--track top_k"
    ),
    # ---- existing outputs, failed runs over a previous run (exit 1, nothing replaced) ---------------------
    "train-outputs-exist": Case("exists", f"{TRAIN} --out {W}", 1, "model.safetensors"),
    "train-all-restarts-diverge-over-a-run": Case(
        "failed-run",
        f"train --model linear --loss mse --lr 1e6 --batch-size full --epochs 20 --dataset digits "
        f"--train-size 64 --val-size 32 --test-size 32 --device cpu --quiet --out {W} --overwrite",
        1,
        "restart 0",
    ),
    "slice-fails-over-a-previous-slice": Case(
        "failed-run",
        f"{SLICE} --out {W}/old.slice.json --directions {W}/foreign.directions.safetensors",
        1,
        "foreign.directions.safetensors",
        _write("foreign.directions.safetensors", b"junk" * 8),
    ),
}


# ---- hostile files: a file read by a command never imports or runs code ----------------------------------
# Every crafted module or command leaves the file IMPORTED in the workspace; the snapshot check (no file
# added) therefore proves that nothing was imported or executed.

EVIL = (
    "from pathlib import Path\n"
    "Path(__file__).with_name('IMPORTED').write_text('imported')\n"
    "import torch\n"
    "def build(**kwargs):\n"
    "    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 8), torch.nn.ReLU(), "
    "torch.nn.Linear(8, 10))\n"
)
CRAFTED: dict[str, dict] = {  # a model description as a downloaded file may carry it ({w}: the workspace)
    "torchvision-name-over-subprocess": {
        "name": "torchvision",
        "config": {"source": "subprocess:run", "kwargs": {"args": ["touch", "{w}/IMPORTED"]}},
    },
    "torchvision-name-over-os-system": {
        "name": "torchvision",
        "config": {"source": "os:system", "kwargs": {"command": "touch {w}/IMPORTED"}},
    },
    "torchvision-name-over-a-file": {"name": "torchvision", "config": {"source": "{w}/evil.py:build"}},
    "torchvision-builder-with-a-file": {
        "name": "torchvision",
        "config": {"source": "torchvision:resnet18", "file": "{w}/evil.py"},
    },
    "user-file": {"name": "user", "config": {"source": "{w}/evil.py:build", "file": "{w}/evil.py"}},
}
REFUSED = {  # other library descriptions refused before anything is built
    "torchvision-weights-download": (
        {
            "name": "torchvision",
            "config": {"source": "torchvision:resnet18", "kwargs": {"weights": "DEFAULT"}},
        },
        "never downloads",
    ),
    "torchvision-not-a-builder": (
        {
            "name": "torchvision",
            "config": {"source": "torchvision:get_model", "kwargs": {"name": "resnet18"}},
        },
        "torchvision has no model 'get_model'",
    ),
    "string-input-shape": (
        {"name": "mlp", "config": {"input_shape": "abc", "width": 8}},
        "input_shape",
    ),
    "boolean-width": ({"name": "mlp", "config": {"input_shape": [1, 8, 8], "width": True}}, "width"),
    "user-string-input-shape": (
        {"name": "user", "config": {"source": "{w}/evil.py:build", "input_shape": "1,8,8"}},
        "model.config.input_shape",
    ),
}


def _rewrite(src: Path, dst: Path, edit: Callable[[dict], None], schema: str | None = None) -> None:
    """Copy a safetensors file with its lscape metadata edited (tensors unchanged)."""
    from safetensors import safe_open

    from lscape_cli.storage.checkpoint import save_checkpoint

    with safe_open(str(src), framework="pt") as fh:
        raw = fh.metadata()
        meta = {k: json.loads(v) for k, v in raw.items() if k not in ("format", "lscape_schema")}
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    edit(meta)
    save_checkpoint(dst, state, meta, schema=schema or raw["lscape_schema"])


def _model(spec: dict, w: Path) -> dict:
    return json.loads(json.dumps(spec).replace("{w}", str(w)))


def _crafted(spec: dict, src: str = "model.safetensors", dst: str = "crafted.safetensors") -> Callable:
    """``dst``: a copy of ``src`` whose metadata describes the model ``spec``; ``evil.py`` beside it."""

    def make(w: Path) -> None:
        (w / "evil.py").write_text(EVIL)
        _rewrite(w / src, w / dst, lambda meta: meta.__setitem__("model", _model(spec, w)))

    return make


def _both(*makers: Callable[[Path], None]) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        for m in makers:
            m(w)

    return make


def _crafted_config(spec: dict) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / "evil.py").write_text(EVIL)
        (w / "crafted.json").write_text(json.dumps({"model": _model(spec, w)}))

    return make


def _crafted_run(spec: dict) -> Callable[[Path], None]:
    """``p/``: the crafted checkpoint and a probe record of it (pareto loads it to align parameters)."""

    def make(w: Path) -> None:
        (w / "p").mkdir()
        _crafted(spec, dst="p/crafted.safetensors")(w)
        rec = json.loads((w / "model.probe.json").read_text())
        digest = hashlib.sha256((w / "p/crafted.safetensors").read_bytes()).hexdigest()
        rec["inputs"]["checkpoint"] = {"path": "crafted.safetensors", "sha256": digest}
        (w / "p/crafted.probe.json").write_text(json.dumps(rec))

    return make


CRAFTED_COMMANDS = {  # every command that builds a model from a file: argv, the file crafted
    "probe": (f"probe {W}/crafted.safetensors --grad-norm --device cpu --quiet", _crafted),
    "slice": (f"slice {W}/crafted.safetensors --dims 1 --steps 3 --no-plot --device cpu --quiet", _crafted),
    "connect": (
        f"connect {W}/crafted.safetensors {W}/crafted2.safetensors --points 3 --no-plot --device cpu --quiet",
        lambda spec: _both(_crafted(spec), _crafted(spec, "other.safetensors", "crafted2.safetensors")),
    ),
    "probe-model-config": (f"{PROBE} --model-config {W}/crafted.json", _crafted_config),
    "probe-trajectory": (
        f"probe {W}/crafted.trajectory.safetensors --snapshot all --grad-norm --device cpu --quiet",
        lambda spec: _crafted(spec, "model.trajectory.safetensors", "crafted.trajectory.safetensors"),
    ),
    "pareto-aligning-parameters": (
        f"pareto {W}/p --y grad_norm --group-by training.lr --quiet --out {W}/new/pareto.json",
        _crafted_run,
    ),
}
for _cmd, (_argv, _make) in CRAFTED_COMMANDS.items():
    for _name, _spec in CRAFTED.items():
        CASES[f"crafted-{_cmd}-{_name}"] = Case("trust", _argv, 1, "user code", _make(_spec))
    for _name, (_spec, _says) in REFUSED.items():
        CASES[f"crafted-{_cmd}-{_name}"] = Case("trust", _argv, 1, _says, _make(_spec))

EXITS = {  # user code named by the user that exits or is interrupted at import or while building
    "exit-at-import": ("import sys\nsys.exit(3)\n", 1, "SystemExit 3"),
    "exit-0-in-factory": ("import sys\ndef build():\n    sys.exit(0)\n", 1, "SystemExit 0"),
    "interrupt-in-factory": ("def build():\n    raise KeyboardInterrupt\n", 130, "interrupted while calling"),
}


def _module(code: str) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        (w / "m.py").write_text(code)
        _data_file(w)

    return make


for _name, (_code, _exit, _says) in EXITS.items():
    CASES[f"user-code-{_name}"] = Case(
        "user-code",
        f"train --model-def {W}/m.py:build --data {W}/d.npz --epochs 1 --device cpu --quiet --out {W}/new",
        _exit,
        _says,
        _module(_code),
    )


def _data_file(w: Path, n: int = 16) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    np.savez(w / "d.npz", x=rng.normal(size=(n, 8)).astype("float32"), y=np.arange(n) % 2)


def _pt_with_code(w: Path) -> None:
    """A .pt data file whose pickle would run a command when loaded without weights_only."""
    import os

    import torch

    class Evil:
        def __reduce__(self) -> tuple:
            return (os.system, (f"touch {w}/IMPORTED",))

    torch.save({"x": torch.zeros(4, 8), "y": torch.zeros(4, dtype=torch.long), "o": Evil()}, w / "d.pt")


def _nan_trajectory(w: Path) -> None:
    """A copy of the trajectory with one NaN in snapshot 1 of ``head.bias``."""
    from safetensors import safe_open

    from lscape_cli.storage.checkpoint import save_checkpoint

    with safe_open(str(w / "model.trajectory.safetensors"), framework="pt") as fh:
        raw = fh.metadata()
        state = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    state["head.bias"][1, 0] = float("nan")
    meta = {k: json.loads(v) for k, v in raw.items() if k not in ("format", "lscape_schema")}
    save_checkpoint(w / "nan.trajectory.safetensors", state, meta, schema=raw["lscape_schema"])


def _resume_state(payload: Callable[[], object]) -> Callable[[Path], None]:
    def make(w: Path) -> None:
        import torch

        (w / "run").mkdir()
        torch.save(payload(), w / "run" / "model.resume.pt")

    return make


RESUME = f"train {' '.join(TINY_TRAIN)} --out {W}/run --resume"
CASES.update(
    {
        # ---- outputs: distinct from inputs and from each other; foreign files never replaced -------------
        "probe-eigenvectors-on-the-record": Case(
            "overlap",
            f"{PROBE} --save-eigenvectors {W}/new/x.json --out {W}/new/x.json",
            1,
            "two outputs of this run are on one path",
        ),
        "probe-out-is-the-model-args-file": Case(
            "overlap",
            f"{PROBE} --model-def {W}/evil.py:build --model-args {W}/args.json --out {W}/args.json",
            1,
            "args.json",
            lambda w: ((w / "evil.py").write_text(EVIL), (w / "args.json").write_text("{}")),
        ),
        "probe-out-is-the-loss-def-file": Case(
            "overlap",
            f"{PROBE} --loss-def {W}/myloss.py:loss --out {W}/myloss.py --overwrite",
            1,
            "myloss.py",
            _write("myloss.py", "def loss(z, y):\n    return z.sum()\n"),
        ),
        "slice-grid-onto-a-checkpoint-it-does-not-read": Case(
            "exists", f"{SLICE} --out {W}/other.json", 1, "other.safetensors"
        ),
        "pareto-out-onto-a-checkpoint": Case(
            "exists",
            f"pareto {W}/model.probe.json --y grad_norm --no-params --quiet --out {W}/other.safetensors",
            1,
            "other.safetensors",
        ),
        "pareto-out-onto-a-file-of-the-user": Case(
            "exists",
            f"pareto {W}/model.probe.json --y grad_norm --no-params --quiet --out {W}/notes.json",
            1,
            "is not an lscape output",
            _write("notes.json", '{"mine": true}'),
        ),
        "report-out-onto-a-page-of-the-user": Case(
            "exists",
            f"report {W}/model.train.json --out {W}/index.html",
            1,
            "index.html",
            _write("index.html", "<p>mine</p>"),
        ),
        "report-tables-folder-of-the-user": Case(
            "exists",
            f"report {W}/model.train.json --out {W}/r.html",
            1,
            "r-tables",
            _blocked("r-tables/notes.txt"),
        ),
        # ---- values a decomposition cannot take: found first, file and key named -------------------------
        "slice-pca-nan-trajectory": Case(
            "linalg",
            f"{SLICE} --dims 2 --pca {W}/nan.trajectory.safetensors",
            1,
            "nan.trajectory.safetensors",
            _nan_trajectory,
        ),
        "pareto-nan-in-a-record": Case(
            "linalg",
            f"{PARETO}",
            1,
            "model.train.json (key train_loss)",
            _record("model.train.json", _set("results.final.train_loss", float("nan"))),
        ),
        # ---- data files ------------------------------------------------------------------------------------
        "train-data-pt-holding-code": Case(
            "data",
            f"train --model mlp --data {W}/d.pt --epochs 1 --device cpu --quiet --out {W}/new",
            1,
            "refused: loading it could run code",
            _pt_with_code,
        ),
        "train-data-without-samples": Case(
            "data",
            f"train --model mlp --data {W}/d.npz --epochs 1 --device cpu --quiet --out {W}/new",
            1,
            "no samples",
            lambda w: _data_file(w, 0),
        ),
        # ---- damaged resume state: the file named, and what to do ------------------------------------------
        "resume-state-without-key": Case(
            "resume",
            RESUME,
            1,
            "model.resume.pt (delete it",
            _resume_state(lambda: {"schema": "lscape.train-resume/1", "state": {}}),
        ),
        "resume-state-key-not-json": Case(
            "resume",
            RESUME,
            1,
            "model.resume.pt (delete it",
            _resume_state(lambda: {"schema": "lscape.train-resume/1", "key": 5, "state": {}}),
        ),
        # ---- malformed metadata values ---------------------------------------------------------------------
        "probe-dataset-name-not-a-string": Case(
            "metadata",
            f"probe {W}/crafted.safetensors --grad-norm --device cpu --quiet",
            1,
            "dataset.name",
            lambda w: _rewrite(
                w / "model.safetensors",
                w / "crafted.safetensors",
                lambda m: m["dataset"].__setitem__("name", 7),
            ),
        ),
        "probe-training-not-an-object": Case(
            "metadata",
            f"probe {W}/crafted.safetensors --grad-norm --device cpu --quiet",
            1,
            "'training' must be a JSON object",
            lambda w: _rewrite(
                w / "model.safetensors", w / "crafted.safetensors", lambda m: m.__setitem__("training", "abc")
            ),
        ),
        "probe-training-momentum-a-string": Case(
            "metadata",
            f"probe {W}/crafted.safetensors --grad-norm --device cpu --quiet",
            1,
            "training.momentum must be a number",
            lambda w: _rewrite(
                w / "model.safetensors",
                w / "crafted.safetensors",
                lambda m: m["training"].__setitem__("momentum", "abc"),
            ),
        ),
        "probe-trajectory-epochs-not-integers": Case(
            "metadata",
            f"probe {W}/crafted.trajectory.safetensors --snapshot all --grad-norm --device cpu --quiet",
            1,
            "'epochs'",
            lambda w: _rewrite(
                w / "model.trajectory.safetensors",
                w / "crafted.trajectory.safetensors",
                lambda m: m.__setitem__("epochs", ["one", "two", "three"]),
            ),
        ),
    }
)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file (and link) under ``root`` -> sha256 of its bytes (links: their target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "link:" + str(p.readlink())
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
        else:
            out[rel] = "dir"
    return out


@pytest.fixture(scope="module")
def corpus_base(tmp_path_factory: pytest.TempPathFactory, tiny_run: Path, cli, tiny_args) -> Path:
    """The workspace every case starts from: the tiny run, a second checkpoint, a probe record, a slice."""
    base = tmp_path_factory.mktemp("corpus") / "w"
    shutil.copytree(tiny_run, base)
    other = tmp_path_factory.mktemp("other")
    assert cli(*tiny_args(other, "--seed", "1")).exit_code == 0
    shutil.copyfile(other / "model.safetensors", base / "other.safetensors")
    r = cli("probe", base / "model.safetensors", "--grad-norm", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    args = shlex.split(SLICE.replace(W, str(base))) + ["--out", str(base / "old.slice.json")]
    r = cli(*args)
    assert r.exit_code == 0, r.output
    return base


def test_the_corpus_is_large_and_spans_every_command() -> None:
    assert len(CASES) >= 60
    commands = {c.argv.split()[0] for c in CASES.values()}
    assert commands == {"train", "probe", "slice", "connect", "pareto", "info", "report"}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name: str, corpus_base: Path, tmp_path: Path, cli, error_line) -> None:
    case = CASES[name]
    w = tmp_path / "w"
    shutil.copytree(corpus_base, w, symlinks=True)
    if case.setup is not None:
        case.setup(w)
    before = _snapshot(w)
    result = cli(*shlex.split(case.argv.replace(W, str(w))))
    line = error_line(result, code=case.code)
    assert case.names.replace(W, str(w)) in line, line
    assert _snapshot(w) == before


# ---- reading without building: commands that only read metadata never import either ----------------------


@pytest.mark.parametrize("spec", list(CRAFTED))
def test_info_and_report_read_crafted_metadata_without_importing(
    spec: str, corpus_base: Path, tmp_path: Path, cli
) -> None:
    w = tmp_path / "w"
    shutil.copytree(corpus_base, w, symlinks=True)
    _crafted_run(CRAFTED[spec])(w)
    for args in (["info", w / "p/crafted.safetensors"], ["report", w / "p", "--out", tmp_path / "r.html"]):
        result = cli(*args)
        assert result.exit_code == 0, result.output
        assert not (w / "IMPORTED").exists(), args


# ---- the report reads only inside the directories it was given --------------------------------------------


def test_report_never_embeds_a_file_outside_its_directories(corpus_base: Path, tmp_path: Path, cli) -> None:
    import base64

    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"SECRET-BYTES" * 8)
    study = tmp_path / "study"
    shutil.copytree(corpus_base, study, symlinks=True)
    (study / "inside.png").symlink_to(secret)  # a link inside the study to a file outside it
    rec = json.loads((study / "old.slice.json").read_text())
    rec["results"]["outputs"]["plots"] = ["../secret.png", str(secret), "inside.png"]
    (study / "old.slice.json").write_text(json.dumps(rec))
    before = _snapshot(study)
    result = cli("report", study, "--out", tmp_path / "out" / "r.html")
    assert result.exit_code == 0, result.output
    page = (tmp_path / "out" / "r.html").read_text()
    assert base64.b64encode(secret.read_bytes()).decode()[:24] not in page
    md = (tmp_path / "out" / "r.md").read_text()
    assert "secret.png" not in md
    warnings = [line for line in result.stderr.splitlines() if line.startswith("Warning: skipped")]
    assert len(warnings) == 3 and all("old.slice.json" in line for line in warnings), result.stderr
    assert all("outside the report's directories" in line for line in warnings), result.stderr
    assert _snapshot(study) == before


@pytest.mark.parametrize(
    "edit",
    [
        _set("results", "oops"),
        _set("results.checkpoint", {"path": 5, "sha256": "0" * 64}),
        _drop("config"),
        _set("results.final.train_loss", "low"),
    ],
    ids=["results-a-string", "checkpoint-entry-broken", "no-config", "loss-a-string"],
)
def test_report_skips_a_malformed_record_with_a_warning(
    edit: Callable[[dict], object], corpus_base: Path, tmp_path: Path, cli
) -> None:
    study = tmp_path / "study"
    shutil.copytree(corpus_base, study, symlinks=True)
    _record("bad.train.json", edit)(study)
    result = cli("report", study, "--out", tmp_path / "r.html")
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("Warning: skipped")]
    assert len(skipped) == 1 and "bad.train.json: malformed record" in skipped[0], result.stderr


# ---- faults: a full disk, an allocator failure, an offline download --------------------------------------


def test_a_full_disk_is_one_line_naming_the_output(
    corpus_base: Path, tmp_path: Path, cli, error_line, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write of a temporary output file fails with ENOSPC, as on a full disk."""
    import errno
    import os

    w = tmp_path / "w"
    shutil.copytree(corpus_base, w, symlinks=True)
    real_open = os.open

    def full(path: object, flags: int, *args: object, **kwargs: object) -> int:
        if str(path).endswith(".tmp") and flags & os.O_CREAT:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_open(path, flags, *args, **kwargs)  # type: ignore[arg-type]

    before = _snapshot(w)
    monkeypatch.setattr(os, "open", full)
    for argv, target in (
        (shlex.split(PROBE.replace(W, str(w))), w / "model.probe.json"),
        (shlex.split(TRAIN.replace(W, str(w))), w / "new" / "model.safetensors"),
    ):
        line = error_line(cli(*argv))
        assert line == (
            f"Error: disk full (No space left on device): {target} (free space or write to another --out; "
            "nothing was replaced)"
        ), line
    monkeypatch.undo()
    assert _snapshot(w) == before


def test_a_short_write_on_a_full_disk_names_the_output(
    corpus_base: Path, tmp_path: Path, cli, error_line, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The temporary file is created, then writing its bytes fails (ENOSPC without a file name)."""
    import errno
    import os

    w = tmp_path / "w"
    shutil.copytree(corpus_base, w, symlinks=True)
    real = Path.write_text

    def full(self: Path, *args: object, **kwargs: object) -> int:
        if self.name.endswith(".tmp"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    before = _snapshot(w)
    monkeypatch.setattr(Path, "write_text", full)
    line = error_line(cli(*shlex.split(PROBE.replace(W, str(w)))))
    monkeypatch.undo()
    assert f"disk full (No space left on device): {w / 'model.probe.json'}" in line
    assert _snapshot(w) == before


ALLOCATOR = {
    "cpu": RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you "
        "tried to allocate 274877906944 bytes. Error code 12 (Cannot allocate memory)"
    ),
    "cuda": "torch.OutOfMemoryError",
}


@pytest.mark.parametrize("device", list(ALLOCATOR))
def test_an_allocator_failure_is_out_of_memory(
    device: str, corpus_base: Path, tmp_path: Path, cli, error_line, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch

    from lscape_cli.models import loading

    exc = ALLOCATOR[device]
    if not isinstance(exc, BaseException):
        exc = torch.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 20.00 GiB (GPU 0; 79.1 GiB total)"
        )

    def fail(*args: object, **kwargs: object) -> None:
        raise exc

    monkeypatch.setattr(loading, "build_described", fail)
    w = tmp_path / "w"
    shutil.copytree(corpus_base, w, symlinks=True)
    before = _snapshot(w)
    line = error_line(cli(*shlex.split(PROBE.replace(W, str(w)))))
    assert line.startswith("Error: out of memory: lscape probe"), line
    assert "--max-batch" in line
    assert _snapshot(w) == before


def test_an_offline_download_is_one_line(
    tmp_path: Path, cli, error_line, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lscape_cli import datasets

    class Offline:
        def __init__(self, *args: object, **kwargs: object) -> None:
            raise RuntimeError(
                "Error downloading train-images-idx3-ubyte.gz:\nTried https://example/, got:\n"
                "<urlopen error [Errno -3] Temporary failure in name resolution>\n"
            )

    monkeypatch.setattr(datasets, "_torchvision_class", lambda name: Offline)
    root = tmp_path / "data"
    line = error_line(
        cli(
            "train",
            "--model",
            "mlp",
            "--dataset",
            "mnist",
            "--download",
            "--data-root",
            root,
            "--out",
            tmp_path,
        )
    )
    assert line.startswith("Error: cannot download mnist (RuntimeError: Error downloading train-images"), line
    assert "--download into" in line
