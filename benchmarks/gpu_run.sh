#!/usr/bin/env bash
# Issue 10, one prepared run on a GPU machine: the CUDA smoke checks (every stage trains, a run
# resumes with --resume, the compiled step trains, DDP under torchrun, evaluation and prediction on
# CUDA), then benchmarks/bench_gpu.py for the figures. Run from the project root:
#
#   OUT=/tmp/out bash benchmarks/gpu_run.sh            # results: $OUT/log.txt, $OUT/steps.txt, $OUT/bench.json
#   DEV=cpu TINY=1 OUT=/tmp/out bash benchmarks/gpu_run.sh   # CPU dry run of the same commands (minutes)
#
# Without CUDA (and without DEV=cpu) it says so and exits 0. Each step has a time limit; a failed
# step is recorded in steps.txt (name, exit status, seconds) and the run goes on.
set -u
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE MPLBACKEND=Agg
PY=${PY:-python3}
OUT=${OUT:-/tmp/mtaffect_gpu_run}
W=${W:-$OUT/work}
DEV=${DEV:-cuda}
mkdir -p "$OUT" "$W"
exec > >(tee -a "$OUT/log.txt") 2>&1
if [ "$DEV" != cpu ] && ! $PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "CUDA is not available here: the GPU smoke checks and figures are skipped (DEV=cpu TINY=1 for a dry run)"
  exit 0
fi
M="$PY -m mtaffect"
start=$(date +%s)
$PY -c "import torch; print('torch', torch.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
NGPU=$($PY -c "import torch; print(torch.cuda.device_count())")

step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep its log, record the outcome
  local name=$1 limit=$2; shift 2
  local t0; t0=$(date +%s)
  echo "== $name (at $(( t0 - start )) s)"
  timeout "$limit" "$@" > "$W/$name.log" 2>&1
  local rc=$?
  echo "$name $rc $(( $(date +%s) - t0 ))" | tee -a "$OUT/steps.txt"
  tr '\r' '\n' < "$W/$name.log" | grep -v '^ *$' | tail -n 4
  return $rc
}

if [ -n "${TINY:-}" ]; then
  PRESET=tiny; SIZE=48
  NET="model.cnn.backbone=resnet_tiny model.init_from= data.image_size=48 train.batch_per_task=4"
  EPOCHS=1; MORE=2; CAP="train.max_steps_per_epoch=2"; BENCH="--device $DEV --tiny"
else
  PRESET=demo; SIZE=112
  NET="model.cnn.backbone=resnet50_caffe data.image_size=112"
  EPOCHS=2; MORE=3; CAP="train.max_steps_per_epoch=0"; BENCH="--device $DEV"
fi
DB=$W/db
step synthetic 300 $M synthetic --out "$DB" --preset $PRESET --no-truth --overwrite
step index 120 $M index --affwild2 "$DB/affwild2" --affectnet "$DB/affectnet" --expw "$DB/expw" \
  --afew-va "$DB/afew_va" --out "$W/index.parquet"
step cache 300 $M cache --index "$W/index.parquet" --out "$W/faces" --size $SIZE --workers 8
R="data.index=$W/index.parquet $NET $CAP train.workers=8 train.progress=false train.tensorboard=false"
T=$W/runs
step cnn_teacher 600 $M train cnn_teacher $R train.epochs=$EPOCHS --device $DEV --out "$T/cnn_teacher" --overwrite
step cnn_teacher_resume 600 $M train cnn_teacher $R train.epochs=$MORE --device $DEV --out "$T/cnn_teacher" --resume
step cnn_student 600 $M train cnn_student $R train.epochs=$EPOCHS stage.teacher="$T/cnn_teacher/best.safetensors" \
  --device $DEV --out "$T/cnn_student" --overwrite
step cnn_teacher_compiled 900 $M train cnn_teacher $R train.epochs=1 train.compile=reduce-overhead \
  --device $DEV --out "$T/cnn_teacher_compiled" --overwrite
G="data.index=$W/index.parquet $NET $CAP model.cnn_checkpoint=$T/cnn_student/best.safetensors train.workers=8"
G="$G train.progress=false train.tensorboard=false"
step gru_teacher 600 $M train gru_teacher $G train.epochs=$EPOCHS --device $DEV --out "$T/gru_teacher" --overwrite
step gru_student 600 $M train gru_student $G train.epochs=$EPOCHS stage.teacher="$T/gru_teacher/best.safetensors" \
  --device $DEV --out "$T/gru_student" --overwrite
step gru_student_resume 600 $M train gru_student $G train.epochs=$MORE \
  stage.teacher="$T/gru_teacher/best.safetensors" --device $DEV --out "$T/gru_student" --resume
step evaluate_cnn 600 $M evaluate "$T/cnn_student/best.safetensors" --index "$W/index.parquet" \
  --out "$W/eval_cnn" --device $DEV --no-progress
step evaluate_gru 600 $M evaluate "$T/gru_student/best.safetensors" --index "$W/index.parquet" \
  --out "$W/eval_gru" --device $DEV --no-progress
NPROC=$([ "$DEV" = cpu ] && echo 2 || echo "$NGPU")
step ddp 600 $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m mtaffect train cnn_teacher \
  $R train.epochs=1 --device $DEV --out "$T/ddp" --overwrite
step ddp_resume 600 $PY -m torch.distributed.run --standalone --nproc_per_node "$NPROC" -m mtaffect train \
  cnn_teacher $R train.epochs=2 --device $DEV --out "$T/ddp" --resume
step predict_cropped 600 $M predict "$DB/affwild2/cropped_aligned" --cropped \
  --checkpoint "$T/gru_student/best.safetensors" --out "$W/pred_cropped" --backend torch --device $DEV \
  --batch-size 64 --no-overlay --quiet --overwrite
VIDEO=${VIDEO:-.cache/media/WolfgangLanger_Pexels.mp4}
if [ -f "$VIDEO" ]; then
  step predict_video 600 $M predict "$VIDEO" --checkpoint "$T/cnn_student/best.safetensors" \
    --out "$W/pred_video" --backend torch --device $DEV --batch-size 64 --no-overlay --quiet --overwrite
  BENCH="$BENCH --predict-checkpoint $T/cnn_student/best.safetensors --video $VIDEO"
else
  echo "no $VIDEO: predict on a video skipped"
fi
for f in "$T"/*/metrics.csv; do echo "-- $f"; cat "$f"; done
step bench 1800 $PY benchmarks/bench_gpu.py $BENCH --out "$OUT/bench.json"
echo "failed steps: $(awk '$2 != 0' "$OUT/steps.txt" | wc -l) of $(wc -l < "$OUT/steps.txt") (see $OUT/steps.txt)"
