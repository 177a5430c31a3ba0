#!/usr/bin/env bash
# Seed 003 (Soni): high-noise SGD (batch 64, larger lr) vs low-noise SGD (large batch, smaller lr), both with
# momentum 0.9 and a cosine schedule, for an MLP and a SimpleCNN; lambda_max and random-direction
# sharpness S_eps^max tracked every epoch (Figs. 3-4), training curves (Figs. 1-2), the effective rank,
# a 2-D slice, and the generalisation gap against the final lambda_max (Fig. 5).
# Usage: SCALE=smoke|small|paper examples/studies/seed003.sh [OUT]   (docs/studies/seed003.md)
SCALE=${SCALE:-small}
set -euo pipefail
OUT=${1:-studies/seed003}

case "$SCALE" in
  smoke)  # seconds: tiny models on 300 digits images, 2 epochs, tracked on 50 images
    MLPW=16; CNNW=4; EPOCHS=2; LOW_BATCH=150; TRACK=50; STEPS=5; DENSITY=(--density-runs 2 --density-steps 10)
    DATA=(--dataset digits --train-size 300 --val-size 100 --test-size 100) ;;
  small)  # 2,000 mnist-5k training images, 6 epochs, low-noise batch 512, tracked on 300 images
    MLPW=64; CNNW=16; EPOCHS=6; LOW_BATCH=512; TRACK=300; STEPS=21; DENSITY=(--density-runs 4 --density-steps 30)
    DATA=(--dataset mnist-5k --train-size 2000 --val-size 500 --test-size 500) ;;
  paper)  # full MNIST (torchvision, downloaded on first use), 10 epochs, batch 64 vs 2048
    MLPW=128; CNNW=32; EPOCHS=10; LOW_BATCH=2048; TRACK=2000; STEPS=51; DENSITY=(--density-runs 10 --density-steps 80)
    DATA=(--dataset mnist --download) ;;
  *) echo "Error: SCALE=$SCALE: unknown scale (use smoke, small or paper)" >&2; exit 1 ;;
esac
if [ "$SCALE" = paper ]; then  # the one step that needs the network
  echo "paper scale: MNIST is downloaded on first use into ${LSCAPE_DATA:-$HOME/.cache/lscape/data} (set LSCAPE_DATA to change)" >&2
fi
mkdir -p "$OUT"
TRACKING=(--track lambda_max,sharpness:0.05 --track-every 1 --track-samples "$TRACK")
COMMON=("${DATA[@]}" --optimizer sgd --momentum 0.9 --schedule cosine --epochs "$EPOCHS" --seed 0 --overwrite --quiet)

# 1. Four runs: {MLP, CNN} x {high noise: batch 64, lr 0.05; low noise: large batch, lr 0.01}, with
#    lambda_max (Lanczos) and S_0.05^max/mean (10 random unit directions) measured after every epoch.
for m in "mlp --depth 2 --width $MLPW" "cnn --width $CNNW"; do
  arch=${m%% *}
  lscape train --model $m "${COMMON[@]}" --batch-size 64 --lr 0.05 "${TRACKING[@]}" --out "$OUT/$arch-high-noise"
  lscape train --model $m "${COMMON[@]}" --batch-size "$LOW_BATCH" --lr 0.01 "${TRACKING[@]}" --out "$OUT/$arch-low-noise"
done

# 2. At the final weights: lambda_max, the spectral density and its effective rank (SLQ) and S_eps on a
#    seeded batch of TRACK training images (tracking used the first TRACK); a 2-D slice along two
#    unit-norm random directions (seed 003's) on the validation split.
for run in "$OUT"/*-noise; do
  lscape probe "$run/model.safetensors" --lambda-max --density "${DENSITY[@]}" --sharpness 0.05 \
    --num-batches 1 --batch-size "$TRACK" --quiet
  lscape slice "$run/model.safetensors" --dims 2 --norm unit --range 1 --steps "$STEPS" --split val --quiet
done

# 3. One page: Fig. 5's numbers as a table (final accuracies, the gap, lambda_max, S_eps^max and
#    S_eps^mean, effective rank at the final weights), training curves, tracked lambda_max and sharpness
#    per epoch, the gap against lambda_max.
lscape report "$OUT" --compare training.batch_size --title "Seed 003: gradient noise and curvature" \
  --table "final=run,model.name:model,training.batch_size:batch,training.lr:lr,train_accuracy,test_accuracy,gap_acc:gap (train − test acc),lambda_max:λmax,sharpness[eps=0.05]:S_0.05 max,sharpness[eps=0.05 stat=mean]:S_0.05 mean,effective_rank:effective rank;sort=-model.name,training.batch_size;title=At the final weights: accuracy, generalisation gap and curvature per run (Fig. 5's points)" \
  --out "$OUT/report.html" --quiet
echo "report: $OUT/report.html"
