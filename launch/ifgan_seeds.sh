#!/usr/bin/env bash
# IF-GAN, IF-GAN w/o attention and E alone on 32x32 synthetic faces, one run after another:
#   launch/ifgan_seeds.sh ROOT [SEED...] [-- FLAG...]   (default seeds 0 1 2)
# Each run goes to ROOT/<variant>_seed<S>; FLAGs after -- go to every run (e.g.
# --config.target_face=class_pixel_mean). A rerun resumes or skips finished runs. Then
# `python -m launch.seed_summary --runs=ROOT` gives the metrics' mean and std and McNemar's tests.
set -euo pipefail
root=${1:?usage: launch/ifgan_seeds.sh ROOT [SEED...] [-- FLAG...]}
shift
seeds=()
while (($#)) && [[ $1 != -- ]]; do seeds+=("$1"); shift; done
(($#)) && shift
common=("$@")
((${#seeds[@]})) || seeds=(0 1 2)
for seed in "${seeds[@]}"; do
  for variant in ifgan ifgan_no_attention baseline; do
    case $variant in
      ifgan) flags=(--config=launch/configs/ifgan_faces.py) ;;
      ifgan_no_attention) flags=(--config=launch/configs/ifgan_faces.py
                                 --config.model.attention=False) ;;
      baseline) flags=(--config=launch/configs/ifgan_baseline_faces.py) ;;
    esac
    echo "$(date -u +%T) $variant seed $seed, load: $(cut -d' ' -f1-3 /proc/loadavg)"
    python -m launch.train "${flags[@]}" ${common[@]+"${common[@]}"} --config.seed="$seed" \
      --accelerator=cpu --workdir="$root/${variant}_seed$seed"
  done
done
echo "$(date -u +%T) done, load: $(cut -d' ' -f1-3 /proc/loadavg)"
