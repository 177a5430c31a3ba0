#!/usr/bin/env bash
# Seed 000 (Skriloff): MLP depths 1-10, width 48, MSE, Adam 1e-3, theta0 ~ N(0, I), full batch until
# |delta loss| < 1e-6, restarts per depth; ||H||_F by Hutchinson (45 probes) at every minimum; Pareto
# fronts, lambda_d, rho_RMS (and the centroid/aligned spreads), lambda_G and the MAE it buys.
# Usage: SCALE=smoke|small|paper examples/studies/seed000.sh [OUT]   (docs/studies/seed000.md)
SCALE=${SCALE:-small}
set -euo pipefail
OUT=${1:-studies/seed000}

case "$SCALE" in
  smoke)  # seconds: 2 depths x 3 restarts, 300 images, 30 full-batch steps
    DEPTHS="1 3"; RESTARTS=3; STEPS=30; EVAL=10; DATA=(--dataset digits --train-size 300 --val-size 150) ;;
  small)  # 6 of the 10 depths x 4 restarts on 1,000 offline MNIST images (mnist-5k), 1,000 steps at most
    DEPTHS="1 2 3 4 6 8"; RESTARTS=4; STEPS=1000; EVAL=100
    DATA=(--dataset mnist-5k --train-size 1000 --val-size 500) ;;
  paper)  # the paper's protocol: 5,000/1,000 MNIST images (torchvision, downloaded on first use), 25 restarts
    DEPTHS="1 2 3 4 5 6 7 8 9 10"; RESTARTS=25; STEPS=100000; EVAL=1000
    DATA=(--dataset mnist --download --train-size 5000 --val-size 1000) ;;
  *) echo "Error: SCALE=$SCALE: unknown scale (use smoke, small or paper)" >&2; exit 1 ;;
esac
if [ "$SCALE" = paper ]; then  # the one step that needs the network
  echo "paper scale: MNIST is downloaded on first use into ${LSCAPE_DATA:-$HOME/.cache/lscape/data} (set LSCAPE_DATA to change)" >&2
fi
mkdir -p "$OUT"

# 1. Train every depth: R restarts at once (seeds 0..R-1), full batch, stop when |delta loss| < 1e-6.
for d in $DEPTHS; do
  lscape train --model mlp --depth "$d" --width 48 "${DATA[@]}" --loss mse --optimizer adam --lr 1e-3 \
    --init normal:1 --batch-size full --epochs "$STEPS" --tol 1e-6 --eval-every "$EVAL" \
    --restarts "$RESTARTS" --seed 0 --out "$OUT/d$d" --overwrite --quiet
done

# 2. kappa = ||H||_F at every minimum by Hutchinson's estimator with 45 Rademacher probes (training split).
for f in "$OUT"/d*/model-r*[0-9].safetensors; do
  lscape probe "$f" --frobenius --trace-method hutchinson --matvecs 45 --quiet
done

# 3. Ellipses, Pareto fronts, lambda_d, rho_RMS and spreads, lambda_G with the MAE against validation loss.
lscape pareto "$OUT" --group-by model.depth --x train_loss --y frobenius --target val_loss \
  --out "$OUT/pareto.json" --quiet

# 4. One page: inventory, curvature, groups by depth, training curves, the Pareto figures and numbers.
#    The paper's per-depth table: mean ± std over the restarts of each depth.
lscape report "$OUT" --group-by model.depth --compare model.depth --title "Seed 000: MLP depth" \
  --table "depths=train_loss,val_loss,test_accuracy:test acc,frobenius:‖H‖_F (Hutchinson),epochs,stop;group=model.depth;title=Per depth: mean ± std over restarts" \
  --out "$OUT/report.html" --quiet
echo "report: $OUT/report.html"
