#!/usr/bin/env bash
# Prepared GPU run 3 (issue 20, item 5): side by side, each against today's path on the same device,
#   the GRU feature cache and evaluate frames/s (benchmarks.bench_store), `predict` frames/s end to end
#   on WolfgangLanger_Pexels.mp4 (benchmarks.bench_predict_device) and the compiled step's start-up,
#   empty vs stored compile cache (benchmarks.bench_compile); then benchmarks/gpu_summary.py prints one
#   table of every $OUT/*.json (also in $OUT/summary.md).
# Needs, as gpu_short_run1.sh: wheels of simplejpeg, av and facenet-pytorch in .whl/ (SKIP_WHEELS=1
# where they are installed) and the video in .gpu_media/ (else .cache/media/ is tried; VIDEO=... to
# choose). Run from the repo root. One command may run 10 minutes, so a 15-minute lease takes two calls:
#   OUT=$OUT bash benchmarks/gpu_short_run3.sh                                          # all three, teacher compile only
#   OUT=$OUT PARTS=compile CSTAGES=cnn_student bash benchmarks/gpu_short_run3.sh        # the student's compile start-up
# and the summary of both calls' files afterwards, on any machine (no torch needed):
#   python3 benchmarks/gpu_summary.py <call 1 files>/*.json <call 2 files>/compile.json
# CPU dry run (tiny settings: every benchmark gets --tiny; what BENCHMARKS.md's dry run ran):
#   OUT=/tmp/o3 DEV=cpu SKIP_WHEELS=1 PY=.venv/bin/python bash benchmarks/gpu_short_run3.sh
set -u
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
OUT=${OUT:-/tmp/out}; DEV=${DEV:-cuda}; PY=${PY:-python3}; PARTS=${PARTS:-store,predict,compile}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log3.txt") 2>&1
T0=$(date +%s)
if [ -z "${SKIP_WHEELS:-}" ]; then
  [ -d /tmp/site/simplejpeg ] || $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
else
  export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH}   # this checkout's package, installed or not
fi
X=""; [ "$DEV" = cpu ] && X="--tiny"   # a CPU dry run: tiny networks and sizes
VIDEO=${VIDEO:-.gpu_media/WolfgangLanger_Pexels.mp4}
[ -f "$VIDEO" ] || VIDEO=.cache/media/WolfgangLanger_Pexels.mp4
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch,os;print('torch',torch.__version__,torch.cuda.is_available() and torch.cuda.get_device_name(),os.cpu_count())"
step() { local n=$1 l=$2; shift 2; local s; s=$(date +%s); echo "== $n (t=$(( s - T0 ))s)"
  timeout "$l" "$@" > "$OUT/$n.log" 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s" | tee -a "$OUT/steps3.txt"; tr '\r' '\n' < "$OUT/$n.log" | grep -v '^ *$' | tail -n ${TAILN:-12}; return $rc; }
has() { case ",$PARTS," in *",$1,"*) return 0;; esac; return 1; }
# each module writes its JSON rows as it goes, so a step cut by its limit still leaves its figures
has store && step store ${SLIM:-120} $PY -m benchmarks.bench_store --device $DEV --json $OUT/store.json $X
has predict && step predict ${PLIM:-120} $PY -m benchmarks.bench_predict_device --device $DEV --video "$VIDEO" --json $OUT/predict.json $X
has compile && step compile ${CLIM:-$([ "$DEV" = cpu ] && echo 900 || echo 330)} $PY -m benchmarks.bench_compile --device $DEV --stages ${CSTAGES:-cnn_teacher} --modes ${CMODES:-reduce-overhead} --json $OUT/compile.json $X
echo "== summary"
$PY benchmarks/gpu_summary.py "$OUT"/*.json | tee "$OUT/summary.md"
echo "done in $(( $(date +%s) - T0 )) s"
