#!/usr/bin/env bash
# The GPU check rehearsed on this CPU machine, as the GPU machine would see it:
# a cp311 pack (this machine's .venv is Python 3.11), a venv that sees only the GPU
# machine's packages (bench/device/fake_device.py), then gpu_check.sh --quick.
#   bash bench/device/rehearse.sh            # VENV=.venv, results in OUT=/tmp/devout
set -euo pipefail
cd "$(dirname "$0")/../.."
VENV=${VENV:-.venv}
PYV=$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
BASE=${BASE_PYTHON:-$(ls -d /root/.pyenv/versions/$PYV.*/bin/python | tail -n 1)}
WHL=${WHL:-/tmp/whl$PYV}
OUT=${OUT:-/tmp/devout}
DEVENV=${DEVENV:-/tmp/devenv}
echo "== pack (python $PYV) -> $WHL"
bash bench/device/pack.sh --python-version "$PYV" --dest "$WHL"
echo "== fake device -> $DEVENV (base $BASE)"
"$VENV/bin/python" bench/device/fake_device.py "$DEVENV" --python "$BASE"
echo "== gpu_check.sh --quick -> $OUT"
rm -rf "$OUT"
run=(env -u PYTHONPATH PATH="$DEVENV/bin:$PATH" WHL="$WHL" OUT="$OUT" SITE=/tmp/site$PYV
     bash bench/device/gpu_check.sh --quick)
# The GPU machine has no /usr/share/datasets: hide this machine's (a private mount
# namespace, as root) so that the check copies the packed Fashion-MNIST there, as it will.
if [ -d /usr/share/datasets ] && unshare -m --propagation private true 2>/dev/null; then
  unshare -m --propagation private bash -c \
    'mount -t tmpfs none /usr/share/datasets && exec "$@"' _ "${run[@]}"
else
  echo "(no mount namespace here: the check uses this machine's /usr/share/datasets)"
  "${run[@]}"
fi
