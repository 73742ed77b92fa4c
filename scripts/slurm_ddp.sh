#!/bin/bash
# Multi-node DDP under SLURM: one task per GPU, Lightning reads the SLURM environment (ranks, master address).
# Submit from the project root, after `make install data`:
#   sbatch scripts/slurm_ddp.sh                       # configs/vgg16.yaml on 2 nodes x 4 GPUs
#   MODEL=vit NODES=1 GPUS=2 sbatch --nodes=1 --ntasks-per-node=2 --gpus-per-node=2 scripts/slurm_ddp.sh
# --nodes / --ntasks-per-node / --gpus-per-node below must match NODES and GPUS (sbatch options override them).
# data.batch_size is per GPU: the global batch is batch_size x GPUS x NODES (see README, "Scaling out").
#SBATCH --job-name=mnist-bench
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=4
#SBATCH --time=01:00:00
#SBATCH --output=slurm-%j.out
set -euo pipefail
MODEL=${MODEL:-vgg16}
NODES=${NODES:-${SLURM_JOB_NUM_NODES:-2}}
GPUS=${GPUS:-${SLURM_NTASKS_PER_NODE:-4}}
srun .venv/bin/mnist-bench fit --config "configs/${MODEL}.yaml" \
    --trainer.accelerator=gpu --trainer.devices="${GPUS}" --trainer.num_nodes="${NODES}" --trainer.strategy=ddp \
    "$@"
