#!/usr/bin/env bash
# The quick start's main job: set up, then train a small model and take it all the way to
# verified C (and firmware with a cycle profile for the CH32V003 where the cross compiler works).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
if [ -z "${BITMCU_DATA:-}" ] && [ -d ../shared/datasets/mnist ]; then
  export BITMCU_DATA="$(cd ../shared/datasets && pwd)"
fi
exec .venv/bin/bitmcu run default "$@"
