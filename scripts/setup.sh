#!/usr/bin/env bash
# Set up tttlrm_ns on a fresh Debian/Ubuntu machine (CPU or CUDA): system packages, a virtualenv in .venv,
# pinned Python packages, and the LPIPS backbone weights (obtained offline, see docs/lpips_offline.md).
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# System packages: libusb for open3d (ns-export), OSMesa for the synthetic-data renderer, a C++ compiler and
# ninja for the CPU rasterizer extension (torch.utils.cpp_extension builds with ninja), headless Chromium for the
# viewer test (optional for users: set TTTLRM_NO_CHROMIUM=1 to skip it).
APT_PKGS="libusb-1.0-0 libosmesa6 libgl1 g++ ninja-build"
if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
apt_missing() { local m=""; for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || m="$m $p"; done; echo "$m"; }
missing=$(apt_missing $APT_PKGS)
if [ -n "$missing" ]; then
  echo "[setup] apt-get install$missing"
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
  APT_UPDATED=1
fi
# Optional: without Chromium the viewer test checks the served page but takes no screenshot.
if [ "${TTTLRM_NO_CHROMIUM:-0}" != 1 ] && [ -n "$(apt_missing chromium)" ]; then
  echo "[setup] apt-get install chromium (optional, for the viewer screenshot test)"
  [ "${APT_UPDATED:-0}" = 1 ] || $SUDO apt-get update -qq || true
  APT_UPDATED=1
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null \
    || echo "[setup] warning: chromium could not be installed; the viewer test will skip its screenshot" >&2
fi
# Optional: COLMAP and ffmpeg for `ns-process-data images|video` (poses for your own photos; about 20 s, 115 small
# Debian packages). TTTLRM_NO_COLMAP=1 skips them; the capture test then skips with that reason.
if [ "${TTTLRM_NO_COLMAP:-0}" != 1 ] && [ -n "$(apt_missing colmap ffmpeg)" ]; then
  echo "[setup] apt-get install$(apt_missing colmap ffmpeg) (optional, for ns-process-data on your own photos)"
  [ "${APT_UPDATED:-0}" = 1 ] || $SUDO apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends colmap ffmpeg >/dev/null \
    || echo "[setup] warning: colmap / ffmpeg could not be installed; ns-process-data will not work" >&2
fi

if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  $PY -m venv .venv
fi
VPY=.venv/bin/python
if ! $VPY -c "import torch, torchvision, nerfstudio, gsplat, pyrender, tttlrm_ns" >/dev/null 2>&1; then
  # requirements-lock.txt pins every package of the tested environment: installing it with --no-deps skips
  # pip's resolver (most of the old 7.5 min setup), then `pip check` verifies the set is consistent.
  if [ "${TTTLRM_NO_LOCK:-0}" != 1 ] && [ -f requirements-lock.txt ] \
     && echo "[setup] installing the tested versions (requirements-lock.txt, no resolver)" \
     && $VPY -m pip install -q --no-deps -r requirements-lock.txt \
     && $VPY -m pip install -q --no-deps -e . ; then
    # pyrender's PyOpenGL==3.1.0 pin is the one known, intended mismatch (see pyproject.toml)
    if $VPY -m pip check 2>&1 | grep -v "^pyrender .* PyOpenGL==3.1.0" | grep -q .; then
      $VPY -m pip check >&2 || true
      echo "[setup] requirements-lock.txt gave an inconsistent environment (above); fix the lock file" >&2
      exit 1
    fi
  else
    echo "[setup] installing with pip's resolver (no lock file, TTTLRM_NO_LOCK=1, or the locked install failed)"
    $VPY -m pip install -q torch==2.14.1 torchvision==0.29.1
    $VPY -m pip install -q -e ".[dev,synth]"
    # pyrender pins PyOpenGL==3.1.0; we run it with the PyOpenGL pinned in pyproject.toml (OSMesa works there).
    $VPY -m pip install -q --no-deps pyrender==0.1.45
  fi
fi

# Optional: the third-party splat tool @playcanvas/splat-transform, at the exact versions of
# tools/splat_transform/package-lock.json, into .tools/splat_transform (git-ignored; npm's cache in .tools/npm-cache,
# nothing global), for the test that the exported .ply loads in another tool. Needs Node >= 18 and npm (about 5 s,
# 50 MB download); TTTLRM_NO_NODE=1 skips it; without it that test skips with the reason.
ST=.tools/splat_transform
if [ "${TTTLRM_NO_NODE:-0}" = 1 ]; then
  echo "[setup] TTTLRM_NO_NODE=1: skipping @playcanvas/splat-transform (optional)"
elif ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "[setup] node / npm not found: skipping @playcanvas/splat-transform (optional, for the .ply interoperability test)"
elif [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 18 ]; then
  echo "[setup] node $(node --version) is older than 18: skipping @playcanvas/splat-transform (optional)"
elif ! cmp -s tools/splat_transform/package-lock.json "$ST/installed-lock.json" \
     || [ ! -x "$ST/node_modules/.bin/splat-transform" ]; then
  echo "[setup] npm ci @playcanvas/splat-transform into $ST (optional, for the .ply interoperability test)"
  mkdir -p "$ST" && cp tools/splat_transform/package.json tools/splat_transform/package-lock.json "$ST/" && rm -f "$ST/installed-lock.json"
  if npm ci --prefix "$ST" --cache .tools/npm-cache --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null; then
    cp tools/splat_transform/package-lock.json "$ST/installed-lock.json"
  else
    echo "[setup] warning: @playcanvas/splat-transform could not be installed; its test will skip" >&2
  fi
fi

$VPY -m tttlrm_ns.eval.lpips_weights --quiet || { echo "[setup] LPIPS weights could not be installed" >&2; exit 1; }
echo "[setup] done: $($VPY -c 'import torch, tttlrm_ns; print("torch", torch.__version__, "tttlrm_ns", tttlrm_ns.__version__)')"
