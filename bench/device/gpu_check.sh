#!/usr/bin/env bash
# The GPU check in one `run` (BENCHMARKS.md section 5): on the GPU machine, from the repo
# root, with .whl/ carried (bash bench/device/pack.sh builds it):
#
#   OUT=... bash bench/device/gpu_check.sh           # the device: bench/gpu.py full
#   OUT=... bash bench/device/gpu_check.sh --quick   # CPU rehearsal (bench/device/rehearse.sh)
#
# Installs .whl/*.whl into $SITE (no index, no deps), puts Fashion-MNIST where
# trainables/data/datasets.py looks for it, then runs, each under its own timeout within one
# budget (CHECK_BUDGET_S, default 530 s; with the clean-up under the run's 580): nvidia-smi, an import
# check, bench/gpu.py (full; --quick with --quick), bench/device/ray_gpu.py (the
# quickstart with use_gpu through the inline, rank-pool and TorchTrainer executors) with
# what time is left. Whatever exists is copied to $OUT at the end, also after a failure:
# check.log nvidia-smi.txt gpu.log gpu.json gpu.md ray_gpu.log ray_gpu.json ray_logs.tar.gz
# (8 files, the most `run` returns). Exit status: that of bench/gpu.py.
set -u
QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
: "${OUT:?set OUT}"
WHL=${WHL:-.whl}
SITE=${SITE:-/tmp/site}
WORK=${WORK:-/tmp/gpu_check}
PY=${PYTHON:-python3}
BUDGET=${CHECK_BUDGET_S:-530}
T0=$(date +%s)
rm -rf "$WORK"  # no results of an earlier run
mkdir -p "$OUT" "$WORK"
touch "$WORK/t0"  # Ray sessions newer than this are ours

say() { echo "[$(date -u +%H:%M:%S) +$(( $(date +%s) - T0 ))s] $*"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# run_step NAME CAP_S LOG CMD...: CMD under timeout min(CAP_S, time left - 25 s); its
# output to LOG (and the last lines to the console). Sets RC_<NAME>.
run_step() {
  local name=$1 cap=$2 logf=$3; shift 3
  local t; t=$(left); t=$(( t - 25 )); [ "$t" -gt "$cap" ] && t=$cap
  if [ "$t" -lt 20 ]; then
    say "SKIP $name: $(left) s left"; eval "RC_$name=skipped"; return
  fi
  local shown="$*"; shown=${shown%%$'\n'*}
  [ "${#shown}" -gt 160 ] && shown="${shown:0:160} ..."
  say "START $name (timeout ${t}s): $shown"
  local s; s=$(date +%s)
  timeout -k 10 "$t" "$@" >"$logf" 2>&1
  local rc=$?
  [ "$rc" = 124 ] || [ "$rc" = 137 ] && rc="$rc(timeout)"
  eval "RC_$name=\$rc"
  say "END $name rc=$rc in $(( $(date +%s) - s ))s"
  tail -n "${TAIL_LINES:-6}" "$logf" | cut -c1-300 | sed 's/^/    | /'
}

ray_stop() {  # a timed-out step leaves its cluster behind
  # (lead's edit) Only on the GPU machine: in the CPU rehearsal other Ray clusters on this
  # shared host (the test suite's) are not ours, and `ray stop` kills every one of them.
  command -v nvidia-smi >/dev/null || { say "no nvidia-smi: not stopping Ray (shared host)"; return 0; }
  if command -v pgrep >/dev/null; then
    pgrep -x gcs_server >/dev/null || pgrep -x raylet >/dev/null || return 0
  fi
  say "ray stop --force (a cluster was left running)"
  timeout -k 5 30 "$PY" -m ray.scripts.scripts stop --force >/dev/null 2>&1 || true
}

finish() {
  say "finish: copying results to $OUT"
  ray_stop
  for f in "$WORK"/gpu.json "$WORK"/gpu.md "$WORK"/gpu_quick.json "$WORK"/gpu_quick.md \
           "$WORK"/ray_gpu.json; do
    [ -f "$f" ] && cp "$f" "$OUT/$(basename "$f" | sed 's/_quick//')"
  done
  if [ -n "${DATA_NOTE:-}" ] && [ -f "$OUT/gpu.json" ]; then  # what data the run had
    "$PY" -c 'import json, sys; p = sys.argv[1]; r = json.load(open(p)); r["data"] == "fashion-mnist" and (r.update(data_packed=sys.argv[2]) or json.dump(r, open(p, "w"), indent=2))' \
      "$OUT/gpu.json" "$DATA_NOTE" || true
  fi
  # Ray's own logs: any module its processes failed to import shows here first.
  local logs; logs=$(find /tmp/ray -maxdepth 1 -name 'session_2*' -newer "$WORK/t0" \
    -printf '%p/logs ' 2>/dev/null)
  if [ -n "$logs" ]; then
    say "ray processes' import errors (none is good):"
    grep -rhoE "(ModuleNotFoundError|ImportError): .{0,160}" $logs 2>/dev/null \
      | sort | uniq -c | sort -rn | head -20 | sed 's/^/    | /'
    (find $logs -type f -size -1M -print0 | tar czf "$OUT/ray_logs.tar.gz" --null -T -) \
      2>/dev/null
    [ "$(stat -c %s "$OUT/ray_logs.tar.gz" 2>/dev/null || echo 0)" -gt 15000000 ] \
      && rm -f "$OUT/ray_logs.tar.gz"
  fi
  say "summary: install=${RC_install:-} imports=${RC_imports:-} gpu=${RC_gpu:-} ray_gpu=${RC_ray_gpu:-}"
  [ -f "$OUT/gpu.md" ] && { echo; cat "$OUT/gpu.md"; }
  if [ -f "$OUT/ray_gpu.json" ]; then
    "$PY" - "$OUT/ray_gpu.json" <<'EOF' 2>/dev/null
import json, sys
r = json.load(open(sys.argv[1]))
print(f"\nray_gpu ({r.get('device_name')}, logical_gpu={r.get('logical_gpu')}): "
      f"ray start {r['ray']['ray_start_s']:.1f} s, dashboard {r['ray'].get('dashboard_http_status', r['ray'].get('dashboard_error'))}")
for k in ("inline", "train_pool", "train_torchtrainer"):
    v = r.get(k)
    if v is None:
        print(f"  {k:20s} not run")
    elif "error" in v:
        print(f"  {k:20s} ERROR {v['error'][:300]}")
    else:
        print(f"  {k:20s} wall {v['wall_s']:6.1f} s  trial start-up {v['trial_startup_s_mean']:5.1f} s  "
              f"acc {v['final_val_acc']}  x inline {v.get('over_inline', 1):.2f}")
EOF
  fi
  ls -la "$OUT" | sed 's/^/    /'
  say "done"
}

main() {
  trap finish EXIT
  say "gpu_check quick=$QUICK budget=${BUDGET}s repo=$PWD python=$("$PY" -V 2>&1) out=$OUT"
  nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || say "nvidia-smi: rc=$? (no GPU driver here)"
  head -n 15 "$OUT/nvidia-smi.txt" | sed 's/^/    | /'

  # 1. the wheels
  rm -rf "$SITE"
  local n; n=$(ls "$WHL"/*.whl 2>/dev/null | wc -l)
  say "installing $n wheels from $WHL ($(du -sh "$WHL" 2>/dev/null | cut -f1)) into $SITE"
  TAIL_LINES=4 run_step install 150 "$WORK/pip.log" \
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --disable-pip-version-check --target "$SITE" "$WHL"/*.whl
  # pip keeps a wheel's exec bits; make sure Ray's binaries have them all the same
  for b in "$SITE"/ray/core/src/ray/gcs/gcs_server "$SITE"/ray/core/src/ray/raylet/raylet; do
    [ -f "$b" ] && { [ -x "$b" ] || { say "chmod +x $b (pip lost the mode)"; chmod +x "$b"; }; }
  done
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" PATH="$SITE/bin:$PATH"
  export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1

  # 2. Fashion-MNIST where trainables/data/datasets.py's default root is (we are root there)
  local fm=/usr/share/datasets/fashion-mnist
  if [ -f "$fm/train-images-idx3-ubyte.gz" ]; then
    say "fashion-mnist: $fm already has it"
  elif [ -d "$WHL/fashion-mnist" ]; then
    if mkdir -p "$fm" && cp "$WHL"/fashion-mnist/*.gz "$fm"/; then
      DATA_NOTE=$(cat "$WHL/fashion-mnist/PACKED.txt" 2>/dev/null)
      say "fashion-mnist -> $fm: $DATA_NOTE"
    else
      say "fashion-mnist: could not copy to $fm (gpu.py falls back to digits)"
    fi
  else
    say "fashion-mnist: not packed (gpu.py falls back to digits)"
  fi

  # 3. imports, versions, CUDA
  TAIL_LINES=12 run_step imports 90 "$WORK/imports.log" "$PY" -c '
import importlib, torch
for m in ("ray", "ray.tune", "ray.train", "ray.train.torch", "pydantic", "yaml", "numpy",
          "pandas", "pyarrow", "sklearn", "aiohttp", "grpc", "torchvision"):
    mod = importlib.import_module(m)
    print(m, getattr(mod, "__version__", ""), getattr(mod, "__file__", ""))
import service.sweeps.run, trainables.run.engine, trainables.run.pool, trainables.run.worker
cuda = torch.cuda.is_available()
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", cuda,
      torch.cuda.get_device_name(0) if cuda else "", "nccl",
      torch.cuda.nccl.version() if cuda else "")
from trainables.data.datasets import load_dataset
try:  # what bench/gpu.py will find (it falls back to digits)
    d = load_dataset("fashion-mnist", None)
    print("fashion-mnist:", len(d.train_y), "train,", len(d.val_y), "test images")
except Exception as exc:
    print("fashion-mnist: unavailable:", exc)
'

  # 4. bench/gpu.py: the point of the exercise
  local q=(); [ "$QUICK" = 1 ] && q=(--quick)
  TAIL_LINES=8 run_step gpu 560 "$OUT/gpu.log" "$PY" bench/gpu.py "${q[@]}" --out "$WORK"
  ray_stop

  # 5. the quickstart on the GPU through each executor, with the time left
  if [ "$(left)" -ge 75 ]; then
    TAIL_LINES=6 run_step ray_gpu 400 "$OUT/ray_gpu.log" \
      "$PY" bench/device/ray_gpu.py --quick --out "$WORK"
  else
    RC_ray_gpu="skipped($(left)s left)"; say "SKIP ray_gpu: $(left) s left"
  fi
  [ "${RC_gpu:-1}" = 0 ]
}

# One line: bash has read all of it before main's subshell runs (a subshell that moved
# the script's shared file offset made bash read a stray fragment after main once).
main 2>&1 | tee "$OUT/check.log"; exit "${PIPESTATUS[0]}"
