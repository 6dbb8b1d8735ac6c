#!/usr/bin/env bash
# Set up everything prnet-keras needs on a clean Debian/Ubuntu machine with Python >= 3.10:
# system libraries (when root; else prints the command), a virtualenv in .venv with the
# Python dependencies, and the project itself (editable). Idempotent and quick when done.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
# libusb: open3d's import needs it. chromium + driver: the server's browser test.
SYSTEM_PACKAGES="libusb-1.0-0 libgl1 libgomp1 chromium chromium-driver"

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
want=$(cat requirements.txt requirements-dev.txt pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python dependencies into $VENV (first time takes a few minutes)"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -r requirements.txt -r requirements-dev.txt
  "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . 2>/dev/null \
    || "$VENV/bin/python" -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
echo "setup: ready ($VENV)"
