#!/usr/bin/env bash
# Set up everything prnet-keras needs on a clean Debian/Ubuntu machine with Python >= 3.10:
# system libraries (when root; else prints the command), a virtualenv in .venv with the
# Python dependencies, and the project itself (editable). Idempotent and quick when done.
# GPU=1 installs TensorFlow with NVIDIA's CUDA libraries (tensorflow[and-cuda], same version as
# requirements.txt pins) instead of the CPU wheel; switching either way reinstalls TensorFlow.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
GPU=${GPU:-0}
case "$GPU" in 0|1) ;; *) echo "setup: GPU=$GPU: expected 0 or 1"; exit 2 ;; esac
# libusb: open3d's import needs it. chromium + driver: the server's browser test.
# xvfb + xdotool: the viewer tests open real windows in a private X server and close them.
# python3-tk: the webcam window (prnet-predict --webcam).
SYSTEM_PACKAGES="libusb-1.0-0 libgl1 libgomp1 chromium chromium-driver xvfb xdotool python3-tk"

missing=()
for pkg in $SYSTEM_PACKAGES; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${missing[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: missing system packages: ${missing[*]}"
    echo "setup: run: sudo apt-get install -y ${missing[*]}"
  fi
fi

"$PYTHON" - <<'PY'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"setup: Python >= 3.10 is required, found {sys.version.split()[0]}")
PY

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV" || { echo "setup: python3 -m venv failed; on Debian/Ubuntu: apt-get install -y python3-venv"; exit 1; }
fi
stamp="$VENV/.prnet-deps"
want="$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16) gpu=$GPU"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python dependencies into $VENV (first time takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  installed_gpu=0
  [ -f "$stamp" ] && grep -q "gpu=1" "$stamp" && installed_gpu=1
  if [ -f "$stamp" ] && [ "$installed_gpu" != "$GPU" ]; then
    # tensorflow-cpu and tensorflow install the same files: remove the other flavour first
    echo "setup: switching TensorFlow to GPU=$GPU"
    "$VENV/bin/python" -m pip uninstall -q -y tensorflow tensorflow-cpu >/dev/null 2>&1 || true
  fi
  if [ "$GPU" = "1" ]; then
    tf_version=$(sed -n 's/^tensorflow-cpu==\([0-9][0-9.]*\).*/\1/p' requirements.txt)
    [ -n "$tf_version" ] || { echo "setup: no tensorflow-cpu==VERSION line in requirements.txt"; exit 1; }
    gpu_requirements="$VENV/.requirements-gpu.txt"
    { grep -v '^tensorflow' requirements.txt; echo "tensorflow[and-cuda]==$tf_version"; } > "$gpu_requirements"
    "$VENV/bin/python" -m pip install -q -r "$gpu_requirements" -r requirements-dev.txt
  else
    "$VENV/bin/python" -m pip install -q -r requirements.txt -r requirements-dev.txt
  fi
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
echo "setup: ready ($VENV)"
