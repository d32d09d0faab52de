#!/usr/bin/env bash
# N processes of alexnet_jax.main on this machine, each with K fake CPU devices: the
# multi-host code path (jax.distributed, per-process input shares, collective
# checkpoints) without a cluster. Every process gets the same arguments.
#
#   launch/local_multiprocess.sh 2 2 --config=configs/demo.py --workdir=runs/demo_2x2
#
# NUM_PROCESSES=$1, DEVICES_PER_PROCESS=$2, the rest goes to `python -m alexnet_jax.main`.
# PORT (default: a free one) is the coordinator's port on 127.0.0.1; PYTHON (default:
# python) the interpreter. Output lines are prefixed with [pI]. Exits 0 when every
# process did; otherwise stops the others and exits with the first failure's status.
# SIGTERM/SIGINT to this script is passed to every process (a simulated pre-emption).
set -u

if [[ $# -lt 2 ]]; then
  sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
fi
num_processes=$1
devices=$2
shift 2
python=${PYTHON:-python}
port=${PORT:-$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}
cd "$(dirname "$0")/.."

pids=()
for ((i = 0; i < num_processes; i++)); do
  # Process substitution, not a pipe: $! is then python's pid, so `wait` sees its status.
  XLA_FLAGS="${XLA_FLAGS:-} --xla_force_host_platform_device_count=$devices" JAX_PLATFORMS=cpu \
    "$python" -m alexnet_jax.main --coordinator_address="127.0.0.1:$port" \
      --num_processes="$num_processes" --process_id="$i" "$@" \
      > >(sed -u "s/^/[p$i] /") 2>&1 &
  pids+=($!)
done

forward() { kill -"$1" "${pids[@]}" 2>/dev/null; }
trap 'forward TERM' TERM
trap 'forward INT' INT

status=0
running=("${pids[@]}")
while [[ ${#running[@]} -gt 0 ]]; do
  # Polled rather than `wait -n`: a trapped signal interrupts `wait`, never this loop's order.
  still=()
  for pid in "${running[@]}"; do
    if kill -0 "$pid" 2>/dev/null; then
      still+=("$pid")
      continue
    fi
    wait "$pid"
    rc=$?
    if [[ $rc -ne 0 && $status -eq 0 ]]; then
      status=$rc
      # The others would wait on the failed one in a collective until JAX times out, and
      # a SIGTERM would have them try a collective save with it: kill them.
      echo "local_multiprocess: process $pid exited with status $rc; stopping the others." >&2
      forward KILL
    fi
  done
  running=("${still[@]+"${still[@]}"}")
  [[ ${#running[@]} -gt 0 ]] && sleep 1
done
exit $status
