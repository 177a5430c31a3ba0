#!/usr/bin/env bash
# Seed 002 (Sourabh): a SimpleCNN on MNIST under three optimisation settings -- high-lr SGD ("sharp"),
# low-lr SGD with high weight decay ("flat"), Adam with defaults; lambda_max by Lanczos and by power
# iteration (the paper's method) with its convergence; Table 1 (test accuracy, test loss, lambda_max);
# epsilon-sharpness and its reparametrisation-invariant (adaptive, |theta|-scaled) form.
# Usage: SCALE=smoke|small|paper examples/studies/seed002.sh [OUT]   (docs/studies/seed002.md)
SCALE=${SCALE:-small}
set -euo pipefail
OUT=${1:-studies/seed002}

case "$SCALE" in
  smoke)  # seconds: a width-4 CNN on 300 digits images, 2 epochs
    WIDTH=4; EPOCHS=2; POWER_ITERS=30; DATA=(--dataset digits --train-size 300 --val-size 100 --test-size 100) ;;
  small)  # 2,000 offline MNIST images (mnist-5k), width 16, 5 epochs; curvature on the 500 test images
    WIDTH=16; EPOCHS=5; POWER_ITERS=100; DATA=(--dataset mnist-5k --train-size 2000 --val-size 500 --test-size 500) ;;
  paper)  # full MNIST (torchvision, downloaded on first use), width 32, 10 epochs
    WIDTH=32; EPOCHS=10; POWER_ITERS=100; DATA=(--dataset mnist --download) ;;
  *) echo "Error: SCALE=$SCALE: unknown scale (use smoke, small or paper)" >&2; exit 1 ;;
esac
if [ "$SCALE" = paper ]; then  # the one step that needs the network
  echo "paper scale: MNIST is downloaded on first use into ${LSCAPE_DATA:-$HOME/.cache/lscape/data} (set LSCAPE_DATA to change)" >&2
fi
mkdir -p "$OUT"
CNN=(--model cnn --width "$WIDTH" "${DATA[@]}" --epochs "$EPOCHS" --seed 0 --overwrite --quiet)

# 1. The three settings (the paper gives no hyperparameters beyond their names; these are ours).
lscape train "${CNN[@]}" --optimizer sgd --lr 0.1 --out "$OUT/sharp-sgd-high-lr"
lscape train "${CNN[@]}" --optimizer sgd --lr 0.001 --weight-decay 0.01 --out "$OUT/flat-sgd-low-lr"
lscape train "${CNN[@]}" --optimizer adam --lr 1e-3 --out "$OUT/adam-default"

# 2. lambda_max on the test split: Lanczos (stopped on its error bound) with l2 epsilon-sharpness, then power
#    iteration (stopped on its residual, at most POWER_ITERS products), then adaptive sharpness.
for run in "$OUT"/*/; do run=${run%/}
  f="$run/model.safetensors"
  lscape probe "$f" --lambda-max --sharpness 0.05,0.1 --split test --quiet
  lscape probe "$f" --lambda-max --eig-method power --max-iter "$POWER_ITERS" --split test \
    --out "$run/model.power.probe.json" --quiet
  lscape probe "$f" --sharpness 0.05,0.1 --sharpness-kind adaptive --split test \
    --out "$run/model.adaptive.probe.json" --quiet
done

# 3. One page: the paper's Table 1 (test accuracy, test loss, lambda_max by power iteration, the paper's
#    method, and by Lanczos) and Table 2 (plain and adaptive epsilon-sharpness), then every record.
SETTING="run,training.optimizer:optimizer,training.lr:lr,training.weight_decay:weight decay"
lscape report "$OUT" --compare training.optimizer --title "Seed 002: three optimisation settings" \
  --table "table1=$SETTING,test_accuracy,test_loss,lambda_max[method=power]:λmax (power iteration),lambda_max[method=lanczos]:λmax (Lanczos);sort=training.optimizer;title=Table 1: test accuracy, test loss and λmax per setting" \
  --table "table2=$SETTING,sharpness[kind=l2 eps=0.05],sharpness[kind=l2 eps=0.1],sharpness[kind=adaptive eps=0.05],sharpness[kind=adaptive eps=0.1];sort=training.optimizer;title=ε-sharpness, plain (l2) and adaptive, per setting" \
  --out "$OUT/report.html" --quiet
echo "report: $OUT/report.html"
