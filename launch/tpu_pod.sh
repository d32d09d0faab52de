#!/usr/bin/env bash
# Trains on a Cloud TPU VM pod slice: creates it (or reuses it if it exists), copies
# this repository to every worker, installs it, and runs the same command on all of
# them. JAX detects the pod and joins the workers (jax.distributed.initialize()).
#
#   TPU_NAME=alexnet ZONE=us-central2-b ACCELERATOR=v4-32 launch/tpu_pod.sh \
#       --config=configs/paper.py --workdir=gs://BUCKET/runs/paper \
#       --config.data.data_dir=gs://BUCKET/tensorflow_datasets
#
# The workdir and data must be on storage every worker sees (a GCS bucket). Arguments
# go to `python -m alexnet_jax.main`. RUNTIME (default tpu-ubuntu2204-base) picks the
# VM image; PROJECT, if set, the GCP project. Run it again after a pre-emption: the
# workers resume from the latest checkpoint.
#
# DRY_RUN=1 prints every command instead of running it: gcloud's, then the script each
# worker runs (the same on every worker; JAX finds the worker's place in the slice itself),
# so the exact per-process command can be read, or run elsewhere (tests/test_launch.py runs
# it as local processes against a local object store).
#
# Before a launch, compile the same run for the slice on any machine, no TPU needed
# (docs/targets.md: memory per chip, the largest batch that fits, the collectives):
#   pip install -e . && python -m alexnet_jax.aot --install_compilers
#   python -m alexnet_jax.aot --config=configs/paper.py \
#       --target=v4 --topology=2x2x4    # libtpu's chip grid of the slice
set -euo pipefail

: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${ACCELERATOR:?set ACCELERATOR, e.g. v4-32}"
runtime=${RUNTIME:-tpu-ubuntu2204-base}
project=${PROJECT:+--project=$PROJECT}
tpu=(gcloud compute tpus tpu-vm ${project:-} --zone="$ZONE")
dry=${DRY_RUN:-}

run() {  # A command, or (DRY_RUN) its words, quoted as bash reads them.
  if [[ -n $dry ]]; then printf '%q ' "$@" | sed 's/ $//'; echo; else "$@"; fi
}

cd "$(dirname "$0")/.."
# Every worker: unpack this tree, install the README's TPU VM line ("Install per platform"),
# run the command. A pre-empted slice is recreated with new VMs: nothing is kept on them.
worker_script="set -e
mkdir -p ~/alexnet_jax && tar xzf /tmp/alexnet_jax.tgz -C ~/alexnet_jax
cd ~/alexnet_jax && pip install -q -e . 'jax[tpu]'
python3 -m alexnet_jax.main $(printf '%q ' "$@" | sed 's/ $//')"

if [[ -n $dry ]]; then
  echo "# if $TPU_NAME does not exist:"
  run "${tpu[@]}" create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$runtime"
elif ! "${tpu[@]}" describe "$TPU_NAME" >/dev/null 2>&1; then
  "${tpu[@]}" create "$TPU_NAME" --accelerator-type="$ACCELERATOR" --version="$runtime"
fi
# The working tree (not only committed files), without runs and caches.
run tar czf /tmp/alexnet_jax.tgz --exclude=.git --exclude=runs --exclude=.venv --exclude='*.pyc' .
run "${tpu[@]}" scp /tmp/alexnet_jax.tgz "$TPU_NAME":/tmp/ --worker=all
if [[ -n $dry ]]; then
  echo "# on every worker (--worker=all), through gcloud ... ssh $TPU_NAME --command:"
  echo "$worker_script"
else
  "${tpu[@]}" ssh "$TPU_NAME" --worker=all --command="$worker_script"
fi
