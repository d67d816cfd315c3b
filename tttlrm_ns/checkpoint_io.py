"""Files on disk: atomic writes, the sha256 of a file, and weights-only ``torch.load`` with numpy values allowed.

A leaf module (torch and numpy only) because every layer writes or reads such files: the model weights
(``model/checkpoint.py``, ``triplane/model.py``), the trainer's checkpoints (``train/checkpoint.py``), the LPIPS
backbones (``eval/lpips_weights.py``), exported meshes (``triplane/mesh_export.py``), nerfstudio's checkpoints of our
methods, and the evaluation's record of which weights it ran (``eval/runner.py``, ``eval/stress.py``).

Atomic write (:func:`atomic_write`): the file is written under a temporary name in its own folder, given the
permissions of any new file (``mkstemp`` creates 0600), fsync'ed, ``os.replace``'d over the final name (atomic on
POSIX), and the folder is fsync'ed. An exception or a kill during the write leaves at most a stray
``.<name>.*.tmp`` file, never a truncated one; the previous file stays until the new one is complete.

Loading (:func:`load_checkpoint`): ``torch.load(weights_only=True)``, whose unpickler only builds tensors and plain
containers, so no code from a file runs. Two kinds of files written by earlier versions hold numpy values that its
default allowlist refuses: nerfstudio checkpoints with ``numpy.float64`` learning rates (nerfstudio's scheduler
computes them with numpy, see :mod:`tttlrm_ns.ns.checkpoint_io`) and ``tttlrm-train`` checkpoints with numpy's RNG
state tuple (a uint32 array). :func:`numpy_globals` are exactly the numpy globals those need (scalars, arrays,
dtypes); arbitrary classes and functions in a pickle are still refused.

nerfstudio's own loaders (``eval_setup`` of ns-eval / ns-export / ns-viewer / ns-render, ``Trainer`` resuming) call
``torch.load`` themselves, with nothing of ours in between. For them :func:`allow_numpy_in_weights_only_loads` adds
the same globals to torch's allowlist for the process; the models of our nerfstudio methods call it when they are
built, which nerfstudio always does before it loads their checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


def sha256_file(path: Path | str) -> str:
    """Hex sha256 of the file's bytes (read in 1 MiB chunks: weight files are large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable (best effort: some file systems cannot open or sync a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _new_file_mode() -> int:
    umask = os.umask(0)  # the only way to read the umask is to set it; put it back at once
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path | str, write: Callable[[str], Any]) -> Path:
    """Write ``path`` atomically (see the module docstring): ``write(tmp)`` fills the temporary file by name.

    The folder is created if needed. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, _new_file_mode())  # a weights file is as readable as any other file the user writes
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:  # KeyboardInterrupt / SystemExit too: no temporary file is left behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: Path | str) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            torch.save(obj, f)

    return atomic_write(path, write)


def numpy_globals() -> list:
    """The numpy globals that the numpy scalars and arrays in our older checkpoints reference.

    ``scalar`` rebuilds a scalar from its dtype and raw bytes, ``_reconstruct`` and ``ndarray`` an array; ``dtype``
    and (numpy >= 1.25, which pickles them by reference) the dtype classes of numeric and bool values describe them.
    numpy 2 moved ``numpy.core`` to ``numpy._core``; whichever exists is used.
    """
    try:
        from numpy._core import multiarray  # type: ignore[attr-defined]
    except ImportError:  # numpy < 2
        from numpy.core import multiarray  # type: ignore[no-redef]
    out: list[Any] = [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "Int16DType",
                     "Int8DType", "UInt64DType", "UInt32DType", "UInt16DType", "UInt8DType", "BoolDType"):
            if hasattr(dtypes, name):
                out.append(getattr(dtypes, name))
    return out


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with :func:`numpy_globals` allowed for this call only."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    with torch.serialization.safe_globals(numpy_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)


def allow_numpy_in_weights_only_loads() -> None:
    """Allow :func:`numpy_globals` in every weights-only ``torch.load`` of this process (idempotent).

    Only for loaders that are not ours (nerfstudio's, see the module docstring); our code calls
    :func:`load_checkpoint`.
    """
    torch.serialization.add_safe_globals(numpy_globals())


__all__ = ["allow_numpy_in_weights_only_loads", "atomic_torch_save", "atomic_write", "load_checkpoint",
           "numpy_globals", "sha256_file"]
