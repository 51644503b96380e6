#!/usr/bin/env bash
# Create .venv with bitmcu and its dependencies, and install the system packages the firmware
# tools need (RISC-V cross compiler, clang). Idempotent: quick when everything is there.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v riscv64-unknown-elf-gcc >/dev/null || need_apt+=(gcc-riscv64-unknown-elf binutils-riscv64-unknown-elf picolibc-riscv64-unknown-elf)
command -v clang >/dev/null || need_apt+=(clang)
command -v cc >/dev/null || need_apt+=(gcc)
command -v make >/dev/null || need_apt+=(make)
python3 -c "import venv, ensurepip" 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "setup: installing system packages: ${need_apt[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  python3 -m venv .venv
fi
# a local CPU build of torch, where the machine keeps one (pip finds it through find-links)
TORCH=torch==2.13.0
local_torch=""
if ls "${PIP_FIND_LINKS:-/opt/wheels}"/torch-2.13.0* >/dev/null 2>&1; then
  export PIP_FIND_LINKS="${PIP_FIND_LINKS:-/opt/wheels}"
  local_torch=1
fi
install_torch() {
  if .venv/bin/python -c "import torch" 2>/dev/null; then
    return
  fi
  if [ -n "$local_torch" ]; then
    .venv/bin/pip install "${pipq[@]}" "$TORCH"
  elif command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then
    echo "setup: an NVIDIA GPU is here: installing the CUDA build of $TORCH (several GB)"
    .venv/bin/pip install -q "$TORCH"
  else
    # no GPU: PyPI's default torch is a CUDA build with a multi-GB NVIDIA stack; take the CPU
    # build from PyTorch's own index, and PyPI's only where that index cannot be reached
    echo "setup: no NVIDIA GPU: installing the CPU build of $TORCH from download.pytorch.org"
    if ! .venv/bin/pip install -q --timeout 15 --retries 1 \
        --index-url https://download.pytorch.org/whl/cpu "$TORCH"; then
      echo "setup: PyTorch's CPU index could not be reached: installing $TORCH from the default index"
      .venv/bin/pip install -q "$TORCH"
    fi
  fi
}
stamp=.venv/.bitmcu-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  # a line per step (about a minute in all); on a terminal, pip's own progress bars too
  pipq=(-q)
  [ -t 1 ] && pipq=(--progress-bar on)
  echo "setup: installing Python packages into .venv (torch first; about a minute)"
  echo "setup: [1/3] pip itself"
  .venv/bin/pip install "${pipq[@]}" --upgrade pip
  # pinned torch first: an unpinned torch would pull a multi-GB CUDA build
  echo "setup: [2/3] $TORCH"
  install_torch
  echo "setup: [3/3] bitmcu and its dependencies (numpy, optuna, unicorn, matplotlib, ...)"
  .venv/bin/pip install "${pipq[@]}" -e ".[dev]"
  .venv/bin/python -c "import torch; print('setup: torch', torch.__version__,
    '(CUDA ' + torch.version.cuda + ' build)' if torch.version.cuda else '(CPU build)')"
  touch "$stamp"
fi
