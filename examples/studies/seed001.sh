#!/usr/bin/env bash
# Seed 001 (Sarkar): MLP widths 32/64/128 and SimpleCNN widths 16/32/64, SGD lr 0.01 momentum 0.9 until
# validation loss stops improving; Table 1; top-3 Hessian eigenvalues mean +- std [min, max] over 5 test
# batches (Tables 2-4); ten 1-D filter-normalised directions and the 2-D plane at distance 1.5; optimizer
# sweep (SGD, SGD+momentum, Adam, 5 epochs); linear mode connectivity MLP vs CNN; loss along the first
# PCA direction of the trajectory; Table 5 (lambda_1 over 20 batches, 1-D sharpness, perturbation sigma).
# Usage: SCALE=smoke|small|paper examples/studies/seed001.sh [OUT]   (docs/studies/seed001.md)
SCALE=${SCALE:-small}
set -euo pipefail
OUT=${1:-studies/seed001}

case "$SCALE" in
  smoke)  # seconds: tiny models on 300 digits images, 2 epochs, 5x5 planes, no slices for the sweep
    MLPS="8"; CNNS="4"; EPOCHS=2; PATIENCE=1; STEPS=5; BATCH=20; BATCHES20=4; SWEEP_MLP=none; SWEEP_CNN=none
    DATA=(--dataset digits --train-size 300 --val-size 100 --test-size 100) ;;
  small)  # 2,000 offline MNIST images (mnist-5k), CNN widths 16 and 32, 21x21 planes on the test split,
          # 1-D lines only for the MLP optimizer sweep (the CNN sweep's would add 2 minutes to the 15)
    MLPS="32 64 128"; CNNS="16 32"; EPOCHS=30; PATIENCE=2; STEPS=21; BATCH=100; BATCHES20=20; SWEEP_MLP=1d; SWEEP_CNN=none
    DATA=(--dataset mnist-5k --train-size 2000 --val-size 500 --test-size 500) ;;
  paper)  # full MNIST (torchvision, downloaded on first use), every width, 51x51 planes
    MLPS="32 64 128"; CNNS="16 32 64"; EPOCHS=100; PATIENCE=3; STEPS=51; BATCH=128; BATCHES20=20; SWEEP_MLP=1d,2d; SWEEP_CNN=1d,2d
    DATA=(--dataset mnist --download) ;;
  *) echo "Error: SCALE=$SCALE: unknown scale (use smoke, small or paper)" >&2; exit 1 ;;
esac
if [ "$SCALE" = paper ]; then  # the one step that needs the network
  echo "paper scale: MNIST is downloaded on first use into ${LSCAPE_DATA:-$HOME/.cache/lscape/data} (set LSCAPE_DATA to change)" >&2
fi
set -- $MLPS; MLP_LMC=${!#}         # the widest MLP and the middle CNN go into sections 3-4
set -- $CNNS; CNN_LMC=${2:-$1}
SGD=(--optimizer sgd --lr 0.01 --momentum 0.9)
BEST=(--patience "$PATIENCE" --restore-best)   # stop when validation loss stops improving, keep the best epoch
mkdir -p "$OUT/width" "$OUT/sweep"

# 1. Train every model until validation loss stops improving; two seeds of the MLP and CNN used for mode
#    connectivity; parameter snapshots every epoch for the PCA direction.
for w in $MLPS; do R=1; [ "$w" = "$MLP_LMC" ] && R=2
  lscape train --model mlp --depth 1 --width "$w" "${DATA[@]}" "${SGD[@]}" --epochs "$EPOCHS" \
    "${BEST[@]}" --restarts "$R" --save-trajectory 1 --out "$OUT/width/mlp-$w" --overwrite --quiet
done
for w in $CNNS; do R=1; [ "$w" = "$CNN_LMC" ] && R=2
  lscape train --model cnn --width "$w" "${DATA[@]}" "${SGD[@]}" --epochs "$EPOCHS" \
    "${BEST[@]}" --restarts "$R" --save-trajectory 1 --out "$OUT/width/cnn-$w" --overwrite --quiet
done

# 2. Optimizer sweep, 5 epochs each: SGD 0.01, SGD 0.01 + momentum 0.9, Adam 1e-3.
for m in "mlp --depth 1 --width $MLP_LMC" "cnn --width $CNN_LMC"; do
  arch=${m%% *}
  lscape train --model $m "${DATA[@]}" --optimizer sgd --lr 0.01 --epochs 5 --out "$OUT/sweep/$arch-sgd" --overwrite --quiet
  lscape train --model $m "${DATA[@]}" "${SGD[@]}" --epochs 5 --out "$OUT/sweep/$arch-momentum" --overwrite --quiet
  lscape train --model $m "${DATA[@]}" --optimizer adam --lr 1e-3 --epochs 5 --out "$OUT/sweep/$arch-adam" --overwrite --quiet
done

# 3. Top-3 eigenvalues on 5 disjoint test batches (mean +- std, [min, max]); ten 1-D filter-normalised
#    directions and the 2-D plane at distance 1.5 on the test split.
for f in "$OUT"/width/*/model.safetensors "$OUT"/width/*/model-r000.safetensors "$OUT"/sweep/*/model.safetensors; do
  [ -e "$f" ] || continue
  lscape probe "$f" --top-k 3 --num-batches 5 --batch-size "$BATCH" --split test --quiet
  SLICES=1d,2d; case "$f" in */sweep/mlp-*) SLICES=$SWEEP_MLP ;; */sweep/cnn-*) SLICES=$SWEEP_CNN ;; esac
  case "$SLICES" in *1d*) lscape slice "$f" --dims 1 --count 10 --range 1.5 --steps "$STEPS" --split test \
    --out "${f%.safetensors}.slice1d.json" --quiet ;; esac
  case "$SLICES" in *2d*) lscape slice "$f" --dims 2 --range 1.5 --steps "$STEPS" --split test --quiet ;; esac
done

# 4. Linear mode connectivity between the two seeds, MLP vs CNN; loss along the first PCA direction of the
#    SGD trajectory; Table 5: lambda_1 over 20 training batches and the perturbation sigma (PAC-Bayes, Jiang et al.).
for run in "$OUT/width/mlp-$MLP_LMC" "$OUT/width/cnn-$CNN_LMC"; do
  lscape connect "$run/model-r000.safetensors" "$run/model-r001.safetensors" --quiet
  lscape slice "$run/model-r000.safetensors" --pca "$run/model-r000.trajectory.safetensors" --dims 1 \
    --range 1 --steps "$STEPS" --split test --out "$run/model-r000.slicepca.json" --quiet
  lscape probe "$run/model-r000.safetensors" --lambda-max --num-batches "$BATCHES20" --batch-size "$BATCH" \
    --split train --pac-bayes --out "$run/model-r000.table5.probe.json" --quiet
done

# 5. One page: the paper's Tables 1-5 (study file below), the curvature tables, training curves, slices
#    (every model's lines and contours on shared axes: slices-compared.png), connectivity.
cat > "$OUT/tables.toml" <<EOF
[tables.table1]
title = "Table 1: final performance and epochs (the best validation epoch's state)"
columns = ["model.name:model", "model.width:width", "run", "epochs", "best_epoch", "test_loss", "test_accuracy"]
where = { run = ["width/*", "!*-r001"] }   # one row per model (r001: the second seed for section 4)
sort = ["-model.name", "model.width", "run"]   # MLPs first, as in the paper

[tables.table2]
title = "Table 2: top-3 Hessian eigenvalues, mean ± std [min, max] over 5 test batches"
columns = ["model.name:model", "model.width:width", "run", "lambda_1[batches=5]:λ1", "lambda_2[batches=5]:λ2", "lambda_3[batches=5]:λ3"]
where = { run = ["width/*", "!*-r001"] }   # one row per model (r001: the second seed for section 4)
sort = ["-model.name", "model.width", "run"]   # MLPs first, as in the paper

[tables.table3]
title = "Table 3: MLPs, training and curvature"
columns = ["run", "epochs", "test_accuracy", "lambda_1[batches=5]:λ1 mean ± std [min, max]"]
where = { run = ["width/*", "!*-r001"], "model.name" = "mlp" }
sort = ["model.width", "run"]

[tables.table4]
title = "Table 4: SimpleCNNs, training and curvature"
columns = ["run", "epochs", "test_accuracy", "lambda_1[batches=5]:λ1 mean ± std [min, max]"]
where = { run = ["width/*", "!*-r001"], "model.name" = "cnn" }
sort = ["model.width", "run"]

[tables.table5]
title = "Table 5: flatness measurements across architectures"
columns = ["run", "test_loss", "lambda_max[record=table5]:λ1 ($BATCHES20-batch avg, train)", "slice.sharpness_1d[dims=1 directions=random]:1D sharpness", "pac_bayes_sigma[record=table5]:perturbation σ", "connect.barrier:LMC barrier (test loss)"]
where = { run = "*model-r000" }
sort = ["model.name"]

[tables.sweep]
title = "Optimizer sweep: 5 epochs from the same seed, top-3 eigenvalues over 5 test batches"
columns = ["model.name:model", "run", "training.optimizer:optimizer", "training.momentum:momentum", "test_loss", "test_accuracy", "lambda_1[batches=5]:λ1", "lambda_2[batches=5]:λ2", "lambda_3[batches=5]:λ3", "slice.sharpness_1d[dims=1 directions=random]:1D sharpness"]
where = { run = "sweep/*" }
sort = ["-model.name", "run"]

[tables.landscape]
title = "Slices: ten 1-D filter-normalised lines and the 2-D plane at distance 1.5 (test split)"
columns = ["model.name:model", "model.width:width", "run", "slice.sharpness_1d[dims=1 directions=random]:1D sharpness", "slice.basin_width[dims=1 directions=random]:basin widths", "slice.max_rise[dims=2]:plane: max rise", "slice.quadratic[dims=2]:plane: fitted curvatures"]
where = { run = ["width/*", "!*-r001"] }
sort = ["-model.name", "model.width", "run"]
EOF
lscape report "$OUT" --compare model.name --title "Seed 001: MLP vs CNN widths, optimizers" \
  --tables "$OUT/tables.toml" --out "$OUT/report.html" --quiet
echo "report: $OUT/report.html"
