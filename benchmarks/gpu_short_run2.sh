#!/usr/bin/env bash
# Part 2 of gpu_short_run1.sh: the compiled loop (one stage per call fits a lease: STAGES=cnn_student).
# Prepared GPU run 2 (issue 10): the compiled training step (train.compile), figures and start-up; a compiled CLI run.
set -u
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
OUT=${OUT:-/tmp/out}; W=${W:-/tmp/w}; DEV=${DEV:-cuda}; PY=${PY:-python3}
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log2.txt") 2>&1
T0=$(date +%s)
if [ -z "${SKIP_WHEELS:-}" ]; then
  [ -d /tmp/site/simplejpeg ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
step() { local n=$1 l=$2; shift 2; local s; s=$(date +%s); echo "== $n (t=$(( s - T0 ))s)"
  timeout "$l" "$@" > "$W/$n.log" 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s" | tee -a "$OUT/steps2.txt"; tr '\r' '\n' < "$W/$n.log" | grep -v '^ *$' | tail -n ${TAILN:-3}; return $rc; }
BQ="--steps ${BSTEPS:-100} --warm 15"
TAILN=30 step bench_compiled ${CLIM:-200} $PY benchmarks/bench_gpu.py --device $DEV $BQ --parts loop --stages ${STAGES:-cnn_teacher,cnn_student} --compile reduce-overhead --out $OUT/bench_compiled.json ${BX:-}
echo "done in $(( $(date +%s) - T0 )) s"
