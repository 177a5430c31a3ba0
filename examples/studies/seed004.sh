#!/usr/bin/env bash
# Seed 004 (Inderjeet): the geometric quantities the report defines -- lambda_max, tr(H), gradient norm,
# epsilon-sharpness, weight-noise robustness, PAC-Bayes sigma, mode connectivity with and without alignment,
# condition number, the eta*lambda_max < 2 stability check (2(1+beta) with momentum) -- and how residual
# connections and BatchNorm change them (ResNet with/without skip, with/without BatchNorm).
# The report has no experiments of its own; this script measures what it describes.
# Usage: SCALE=smoke|small|paper examples/studies/seed004.sh [OUT]   (docs/studies/seed004.md)
SCALE=${SCALE:-small}
set -euo pipefail
OUT=${1:-studies/seed004}

case "$SCALE" in
  smoke)  # seconds: width-4 ResNets and a width-16 MLP on 300 digits images, 2 epochs
    WIDTH=4; MLPW=16; EPOCHS=2; SAMPLES=100; TOL=1e-3; DATA=(--dataset digits --train-size 300 --val-size 100 --test-size 100) ;;
  small)  # 2,000 offline MNIST images (mnist-5k), width-8 ResNets, 5 epochs; curvature on 500 training images
    WIDTH=8; MLPW=64; EPOCHS=5; SAMPLES=500; TOL=1e-4; DATA=(--dataset mnist-5k --train-size 2000 --val-size 500 --test-size 500) ;;
  paper)  # full MNIST (torchvision, downloaded on first use), width-16 ResNets, 20 epochs, curvature on 5,000 images
    WIDTH=16; MLPW=128; EPOCHS=20; SAMPLES=5000; TOL=1e-6; DATA=(--dataset mnist --download) ;;
  *) echo "Error: SCALE=$SCALE: unknown scale (use smoke, small or paper)" >&2; exit 1 ;;
esac
if [ "$SCALE" = paper ]; then  # the one step that needs the network
  echo "paper scale: MNIST is downloaded on first use into ${LSCAPE_DATA:-$HOME/.cache/lscape/data} (set LSCAPE_DATA to change)" >&2
fi
mkdir -p "$OUT"
SGD=(--optimizer sgd --lr 0.05 --momentum 0.9 --epochs "$EPOCHS" --seed 0 --overwrite --quiet)

# 1. Architecture -> geometry: ResNet with/without skip connections and BatchNorm; an MLP trained twice
#    (seeds 0 and 1) for mode connectivity.
for skip in skip no-skip; do
  for bn in batchnorm no-batchnorm; do
    lscape train --model resnet --width "$WIDTH" --stages 2 --blocks 1 --"$skip" --"$bn" "${DATA[@]}" "${SGD[@]}" \
      --out "$OUT/resnet-$skip-$bn"
  done
done
lscape train --model mlp --depth 2 --width "$MLPW" "${DATA[@]}" "${SGD[@]}" --restarts 2 --out "$OUT/mlp"

# 2. Every quantity at every minimum, on SAMPLES training images: lambda_max and lambda_min (condition
#    number), tr(H), gradient norm, epsilon-sharpness, loss/accuracy under weight noise, the PAC-Bayes sigma,
#    and eta*lambda_max against 2 (plain SGD) and 2(1+beta) (momentum beta, the heavy-ball threshold).
for f in "$OUT"/resnet-*/model.safetensors "$OUT"/mlp/model-r000.safetensors; do
  lscape probe "$f" --lambda-max --lambda-min --trace --grad-norm --sharpness 0.05 --noise 0.001,0.01 \
    --pac-bayes --stability --tol "$TOL" --samples "$SAMPLES" --quiet
done

# 3. Mode connectivity between the two MLPs: the straight path, then after permuting B's hidden units
#    onto A (weight matching).
lscape connect "$OUT/mlp/model-r000.safetensors" "$OUT/mlp/model-r001.safetensors" --align weights --quiet

# 4. One page: the report's quantities per architecture as three tables (the report defines them in
#    section 2 and shows no table of its own: geometry, robustness and stability, connectivity), then
#    every record: inventory, every curvature quantity with its protocol, training curves, connectivity.
ARCH="run,model.skip:skip,model.batchnorm:BatchNorm"
ONE="where=run=!mlp/model-r001"   # the second MLP seed is there for mode connectivity only
lscape report "$OUT" --compare run --title "Seed 004: geometry, stability and architecture" \
  --table "geometry=$ARCH,test_accuracy,test_loss,lambda_max:λmax,lambda_min:λmin,condition_number:κ,trace:tr(H),grad_norm:‖∇L‖,sharpness[eps=0.05]:S_0.05 (max);$ONE;title=Geometry at each minimum: curvature, gradient norm and ε-sharpness (training images)" \
  --table "robustness=$ARCH,noise[sigma=0.001]:loss rise σ=0.001,noise[sigma=0.01]:loss rise σ=0.01,pac_bayes_sigma:PAC-Bayes σ,pac_bayes_bound:PAC-Bayes bound,stability:η·λmax vs 2(1+β);$ONE;title=Weight-noise robustness, PAC-Bayes σ and the η·λmax stability check" \
  --table "connectivity=run,connect.distance[path=linear]:‖θ_B − θ_A‖,connect.barrier[path=linear]:barrier (straight),connect.distance[path=aligned]:‖θ_B′ − θ_A‖ aligned,connect.barrier[path=aligned]:barrier (aligned);where=run=mlp/model-r000;title=Mode connectivity between the two MLP seeds: test-loss barrier, straight and after weight matching" \
  --out "$OUT/report.html" --quiet
echo "report: $OUT/report.html"
