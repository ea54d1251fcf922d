#!/usr/bin/env bash
# mlctr launcher. Every argument after the mode passes through as absl flags.
#
#   bash launch.sh [FLAGS...]                 local: bootstrap .venv, run the main job
#   bash launch.sh test [PYTEST ARGS]         install test dependencies, run the test suite
#   bash launch.sh multiprocess N [FLAGS...]  N jax.distributed processes on this machine
#                                             (CPU; tests distributed code on a laptop)
#   bash launch.sh slurm [FLAGS...]           in an sbatch script: srun, one process per
#                                             task (per host, or per GPU)
#   bash launch.sh tpu [FLAGS...]             the same command on every Cloud TPU VM worker
#
# README.md ("Cluster") has copy-paste commands for each mode. A run stopped by SIGTERM
# saves a checkpoint and exits 143; the same command resumes it.
#
# Environment: MLCTR_VENV (default .venv), PYTHON (default python3), MLCTR_NO_VENV=1 to
# use the current Python as is (clusters with a prepared env), MLCTR_EXTRAS (pip extras
# to install; defaults per mode), MLCTR_PORT (coordinator port), MLCTR_CPU_DEVICES
# (multiprocess: CPU devices per process, default 1), MLCTR_HOST_ALLOCATOR (bounded, the
# default | keep | warm | system: glibc malloc settings of the training process; `bounded`
# reuses freed blocks and returns free pages when resident memory grows, `keep` never
# returns them; mlctr/xla_cpu.py).
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)
VENV=${MLCTR_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}

setup_env() {
  # Creates or reuses the virtual environment; reinstalls when setup.py changes.
  local extras=${MLCTR_EXTRAS:-$1}
  if [[ "${MLCTR_NO_VENV:-0}" == "1" ]]; then PY=$PYTHON; return; fi
  if [[ ! -x "$VENV/bin/python" ]]; then
    echo "[launch] creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  PY=$VENV/bin/python
  local stamp_file="$VENV/.mlctr-install-${extras//,/-}"
  local stamp
  stamp=$(cat setup.py | sha256sum | cut -c1-16)
  if [[ ! -f "$stamp_file" || "$(cat "$stamp_file")" != "$stamp" ]]; then
    echo "[launch] installing mlctr[$extras] into $VENV (first run: a few minutes)"
    "$PY" -m pip install -q --upgrade pip >/dev/null
    "$PY" -m pip install -q -e ".[$extras]"
    echo "$stamp" > "$stamp_file"
  fi
}

use_env() {  # the environment setup_env prepared (in processes that must not install)
  if [[ "${MLCTR_NO_VENV:-0}" == "1" ]]; then PY=$PYTHON; else PY=$VENV/bin/python; fi
}

has_flag() {  # has_flag NAME ARGS... : is --NAME or --NAME=... among ARGS?
  local name=$1; shift
  for a in "$@"; do [[ "$a" == "--$name" || "$a" == --$name=* ]] && return 0; done
  return 1
}

main_args() {  # fills ARGS: the flags, with the default config and workdir unless given
  ARGS=("$@")
  has_flag config "${ARGS[@]+"${ARGS[@]}"}" || ARGS=("--config=mlctr/configs/default.py" "${ARGS[@]+"${ARGS[@]}"}")
  has_flag workdir "${ARGS[@]+"${ARGS[@]}"}" || ARGS=("--workdir=runs/default" "${ARGS[@]}")
}

exec_main() {  # replaces this shell, so signals (SIGTERM: checkpoint and stop) reach Python
  main_args "$@"
  exec "$PY" -m mlctr.main "${ARGS[@]}"
}

MODE=${1:-local}
case "$MODE" in
  test)
    shift
    setup_env test,onnx
    # jax2onnx without its dependencies: it pins an older orbax-checkpoint (setup.py, onnx).
    "$PY" -c "import jax2onnx" 2>/dev/null || "$PY" -m pip install -q --no-deps "jax2onnx>=0.17,<0.18"
    exec "$PY" -m pytest -q tests "$@"
    ;;
  multiprocess)
    shift
    NUM=${1:?usage: bash launch.sh multiprocess N [FLAGS...]}; shift
    [[ "$NUM" =~ ^[1-9][0-9]*$ ]] || { echo "multiprocess: N must be a positive integer, got '$NUM'" >&2; exit 2; }
    setup_env plots
    main_args "$@"
    PORT=${MLCTR_PORT:-$(( 20000 + RANDOM % 20000 ))}
    CPU_FLAG="--xla_force_host_platform_device_count=${MLCTR_CPU_DEVICES:-1}"
    pids=()
    stop_all() { for p in "${pids[@]+"${pids[@]}"}"; do kill -TERM "$p" 2>/dev/null || true; done; }
    trap 'stop_all' TERM INT
    for ((i = 0; i < NUM; i++)); do
      MLCTR_COORDINATOR=localhost:$PORT MLCTR_NUM_PROCESSES=$NUM MLCTR_PROCESS_ID=$i \
        JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} XLA_FLAGS="${XLA_FLAGS:-} $CPU_FLAG" \
        "$PY" -m mlctr.main "${ARGS[@]}" &
      pids+=($!)
    done
    # The first process to fail takes the others down (they would wait for it forever).
    # Polling keeps this portable to old bash (no `wait -n PID...`).
    status=0
    while (( ${#pids[@]} )); do
      for i in "${!pids[@]}"; do
        kill -0 "${pids[$i]}" 2>/dev/null && continue
        code=0
        wait "${pids[$i]}" || code=$?
        unset "pids[$i]"
        if (( code != 0 && status == 0 )); then status=$code; stop_all; fi
      done
      (( ${#pids[@]} )) && sleep 0.2
    done
    exit $status
    ;;
  slurm)
    shift
    if [[ -z "${SLURM_JOB_ID:-}" ]]; then
      echo "slurm: run this inside an allocation (sbatch script or salloc); see the Cluster section of README.md" >&2
      exit 2
    fi
    setup_env "plots,cuda12"  # once, before the tasks start (they share the venv)
    exec srun --kill-on-bad-exit=1 bash "$ROOT/launch.sh" _slurm_task "$@"
    ;;
  _slurm_task)
    # One SLURM task = one JAX process. Process 0 runs on the first host of the job.
    shift
    use_env
    first_host=$(scontrol show hostnames "${SLURM_STEP_NODELIST:-$SLURM_JOB_NODELIST}" | head -n1)
    export MLCTR_COORDINATOR=$first_host:${MLCTR_PORT:-$(( 20000 + SLURM_JOB_ID % 20000 ))}
    export MLCTR_NUM_PROCESSES=$SLURM_NTASKS MLCTR_PROCESS_ID=$SLURM_PROCID
    # More tasks than hosts: one process per GPU, bound by its local rank, unless SLURM
    # already gave each task one GPU (--gpus-per-task / --gpu-bind).
    if (( SLURM_NTASKS > ${SLURM_STEP_NUM_NODES:-${SLURM_JOB_NUM_NODES:-1}} )) \
        && [[ "${CUDA_VISIBLE_DEVICES:-,}" == *,* ]]; then
      export MLCTR_LOCAL_DEVICE_IDS=${MLCTR_LOCAL_DEVICE_IDS:-$SLURM_LOCALID}
    fi
    exec_main "$@"
    ;;
  tpu)
    shift
    setup_env "plots,tpu"
    export MLCTR_DISTRIBUTED=auto  # Cloud TPU VM: JAX discovers the slice's workers
    exec_main "$@"
    ;;
  local|--*)
    if [[ $# -gt 0 && "$1" == "local" ]]; then shift; fi
    setup_env plots
    exec_main "$@"
    ;;
  *)
    echo "unknown mode '$MODE' (expected: local, test, multiprocess, slurm, tpu, or absl flags)" >&2
    exit 2
    ;;
esac
