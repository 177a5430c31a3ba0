#!/usr/bin/env bash
# Regenerates sample_checkpoints/ with `lscape train` (run via `make samples`). Deterministic on CPU.
set -euo pipefail
OUT=sample_checkpoints
COMMON=(--dataset mnist-5k --device cpu --out "$OUT" --overwrite --quiet)

# Two restarts of seed 000's MLP (depth 4, width 48, MSE, Adam) -- the pair for `lscape connect`.
lscape train --model mlp --depth 4 --width 48 --loss mse --optimizer adam --lr 1e-3 --epochs 10 \
  --restarts 2 --seed 0 --name mlp-d4 "${COMMON[@]}"

# Seed 001's MLP (one hidden layer of 32) with SGD+momentum and its trajectory -- for PCA slices.
lscape train --model mlp --depth 1 --width 32 --optimizer sgd --lr 0.01 --momentum 0.9 --epochs 10 \
  --save-trajectory 2 --seed 0 --name mlp-w32-traj "${COMMON[@]}"

# A small SimpleCNN (seed 001's family, width 8, FC 32).
lscape train --model cnn --width 8 --hidden 32 --optimizer sgd --lr 0.01 --momentum 0.9 --epochs 5 \
  --seed 0 --name cnn-w8 "${COMMON[@]}"

# A tiny MLP on scikit-learn's 8x8 digits -- small enough for a dense Hessian.
lscape train --model mlp --depth 1 --width 16 --dataset digits --optimizer adam --lr 1e-2 --epochs 30 \
  --seed 0 --device cpu --out "$OUT" --name mlp-digits --overwrite --quiet
