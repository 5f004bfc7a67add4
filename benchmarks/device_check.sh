#!/usr/bin/env bash
# The whole GPU check in one call, from the repository root:
#
#     bash benchmarks/device_check.sh                 # on the GPU machine, with $OUT set; under 8 minutes
#     bash benchmarks/device_check.sh --device cpu    # dry run here (or DEVICE_CHECK_DRY=1): tiny sizes, same code paths
#
# On the GPU machine it first installs the wheelhouse `.whl/` (built by tools/make_wheelhouse.sh) into /tmp/site
# and puts it on PYTHONPATH after this checkout (whose package is the one imported); the dry run uses the
# current Python's packages. Then
# benchmarks/device_check.py does the rest (see its docstring for the environment variables) and writes
# $OUT/device_check.json and $OUT/device_check.log.
set -u
cd "$(dirname "$0")/.."
DRY=${DEVICE_CHECK_DRY:-0}
for arg in "$@"; do [ "$arg" = "cpu" ] && DRY=1; done
if [ -z "${OUT:-}" ]; then OUT=$(mktemp -d); echo "OUT not set: writing to $OUT"; fi
export OUT
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if [ "$DRY" = 1 ]; then
  export DEVICE_CHECK_DRY=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
  if ls .whl/*.whl >/dev/null 2>&1; then
    t=$(date +%s)
    if "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
         >"$OUT/install.txt" 2>&1; then
      echo "wheelhouse installed into /tmp/site in $(( $(date +%s) - t )) s: $(ls .whl | tr '\n' ' ')" | tee -a "$OUT/device_check.log"
    else
      echo "wheelhouse install FAILED (going on; imports may fail):" | tee -a "$OUT/device_check.log"
      tail -5 "$OUT/install.txt" | tee -a "$OUT/device_check.log"
    fi
    rm -f "$OUT/install.txt"
    # this checkout's package first (the same one whatever part imports it), the wheels' requirements after it
    export PYTHONPATH="$PWD:/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
  else
    echo "no wheelhouse in .whl/ (run tools/make_wheelhouse.sh where pip works): using the installed packages" | tee -a "$OUT/device_check.log"
  fi
fi
export PYTHONUNBUFFERED=1
exec "$PY" benchmarks/device_check.py "$@"
