#!/usr/bin/env bash
# The transfer meta-training runs of docs/results.md ("LPO meta-trained for transfer"). Each resumes
# from its checkpoint when re-run, so the same command continues a run a later session left.
#   bash benchmarks/meta_transfer.sh lpo   # the LPO network
#   bash benchmarks/meta_transfer.sh dpo   # DPO's alpha and beta
#   bash benchmarks/meta_transfer.sh lpo4  # the LPO network, 4 inner seeds per member (a less noisy ES gradient)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
GENERATIONS=${GENERATIONS:-300}
COMMON=(--env CartPole-v1 --env Acrobot-v1 --timesteps 16384
        --vary budget=1:8 --vary learning_rate=1e-4:1e-3 --vary update_epochs=2,4,8
        --vary num_minibatches=2,4,8 --vary ent_coef=0:0.02 --tasks 8
        --inner-seeds 1 --fitness eval+curve --eval-every 10 --generations "$GENERATIONS")
case "${1:-lpo}" in
  lpo) exec "$PY" -m mirrorlearn meta-train --drift lpo --population 32 "${COMMON[@]}" \
         --out benchmarks/results/meta_runs/lpo_transfer ;;
  lpo4) exec "$PY" -m mirrorlearn meta-train --drift lpo --population 32 "${COMMON[@]}" --inner-seeds 4 \
         --out benchmarks/results/meta_runs/lpo_transfer_4seeds ;;
  dpo) exec "$PY" -m mirrorlearn meta-train --drift dpo --population 8 --sigma-init 0.1 --sigma-limit 0.02 --lr 0.05 \
         "${COMMON[@]}" --out benchmarks/results/meta_runs/dpo_transfer ;;
  *) echo "usage: $0 lpo|lpo4|dpo" >&2; exit 2 ;;
esac
