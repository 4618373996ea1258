#!/bin/bash
# Train with torchrun: all GPUs of this node, or several nodes (run the same command on every node).
#
#   scripts/launch/torchrun.sh align configs/align/crystal_text_xrd.yaml runs/align_big [more mmcrystal options...]
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0 scripts/launch/torchrun.sh ...     # on node0; NODE_RANK=1 on node1
#   NPROC=2 PRESET=configs/trainer/cpu_ddp.yaml scripts/launch/torchrun.sh ...  # 2 CPU processes (gloo), no GPU
#
# A worker that fails (or is stopped by SIGTERM, after writing <run>/checkpoints/last.ckpt) makes torchrun restart
# the whole group up to MAX_RESTARTS times; every start resumes with --ckpt_path last.
set -euo pipefail
STAGE=${1:?usage: torchrun.sh <align|diffuse|finetune> <recipe.yaml> <run folder> [options...]}
RECIPE=${2:?recipe yaml}
ROOT=${3:?run folder}
shift 3
PYTHON=${PYTHON:-.venv/bin/python}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
if [[ -z "${NPROC:-}" ]]; then
    NPROC=$(nvidia-smi -L 2>/dev/null | wc -l || true)
    [[ "$NPROC" -gt 0 ]] || NPROC=1
fi
if [[ "$NNODES" -gt 1 ]]; then
    PRESET=${PRESET:-configs/trainer/multinode.yaml}
    RDZV=(--rdzv-backend c10d --rdzv-endpoint "${MASTER_ADDR:?set MASTER_ADDR to node 0}:${MASTER_PORT:-29500}"
          --rdzv-id "${RUN_ID:-mmcrystal}")
else
    PRESET=${PRESET:-configs/trainer/ddp.yaml}
    RDZV=(--standalone)
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

"$PYTHON" -m torch.distributed.run "${RDZV[@]}" --nnodes "$NNODES" --node-rank "$NODE_RANK" \
    --nproc-per-node "$NPROC" --max-restarts "${MAX_RESTARTS:-3}" -m mmcrystal "$STAGE" fit -c "$RECIPE" \
    -c "$PRESET" --trainer.num_nodes "$NNODES" --trainer.devices "$NPROC" --trainer.default_root_dir "$ROOT" \
    --ckpt_path last "$@"
