#!/usr/bin/env bash
# Build .whl/ for the GPU machine (see bench/device/pack.py and BENCHMARKS.md section 5).
#   bash bench/device/pack.sh [--python-version 3.12] [--dest .whl] [--no-strip] [--no-data]
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 bench/device/pack.py "$@"
