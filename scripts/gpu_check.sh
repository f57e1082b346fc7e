#!/usr/bin/env bash
# The GPU check, one prepared script for a machine with a CUDA GPU (issue 12):
#   bash scripts/gpu_check.sh [--pbc DIR] [--out DIR] [--steps env,train,...]      (see scripts/gpu_check.py)
# runs trainer=gpu (bf16) on PBC for 2 epochs, the SR sweep for 1 epoch per run, predict and export on the GPU,
# trainer=ddp on the GPUs present and the throughput benchmark, and writes <out>/gpu_check.json.
# A bare GPU machine often has torch but not the rest: with WHEELS=<folder of wheels> (built beside this
# checkout with `pip download` for the machine's Python), what is missing is installed from it, offline.
# `bash scripts/gpu_check.sh --device cpu` runs the same steps briefly on a CPU (a check of the script itself).
set -euo pipefail
cd "$(dirname "$0")/.."
export NO_ALBUMENTATIONS_UPDATE=1
PY=${PYTHON:-python3}

missing=$("$PY" - <<'PY'
import importlib.util as u
need = {"hydra": "hydra-core", "omegaconf": "omegaconf", "albumentations": "albumentations", "lightning": "lightning",
        "torchmetrics": "torchmetrics", "matplotlib": "matplotlib", "tensorboard": "tensorboard", "scipy": "scipy",
        "filelock": "filelock", "simplejpeg": "simplejpeg", "cv2": "opencv-contrib-python-headless"}
print(" ".join(pkg for mod, pkg in need.items() if u.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
  if [ -z "${WHEELS:-}" ]; then
    echo "missing: $missing; give WHEELS=<folder of wheels> to install them offline" >&2
    exit 2
  fi
  echo "installing from $WHEELS: $missing"
  "$PY" -m pip install --no-index --find-links "$WHEELS" $missing
fi
"$PY" -c "import cv2; cv2.dnn_superres.DnnSuperResImpl_create()" 2>/dev/null \
  || echo "note: cv2.dnn_superres is missing (sr.backend=opencv unavailable; the torch SR backend is used)" >&2
exec "$PY" scripts/gpu_check.py "$@"
