"""tttlrm_ns.checkpoint_io: atomic writes, sha256 of a file, the weights-only loader and its numpy allowlist."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tttlrm_ns.checkpoint_io import atomic_torch_save, atomic_write, load_checkpoint, sha256_file

REPO = Path(__file__).resolve().parents[1]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_write_creates_the_folder_and_leaves_no_temporary_file(tmp_path):
    path = atomic_write(tmp_path / "sub" / "a.bin", lambda tmp: Path(tmp).write_bytes(b"new"))
    assert path.read_bytes() == b"new" and [p.name for p in path.parent.iterdir()] == ["a.bin"]
    # the mode of any new file, not mkstemp's 0600
    assert path.stat().st_mode & 0o777 == 0o666 & ~_umask()


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_interrupted_write_keeps_the_previous_file(tmp_path, error):
    path = tmp_path / "a.bin"
    path.write_bytes(b"old")

    def write(tmp):
        Path(tmp).write_bytes(b"half")
        raise error

    with pytest.raises(type(error)):
        atomic_write(path, write)
    assert path.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_sha256_of_a_file_larger_than_one_read(tmp_path):
    data = np.random.default_rng(0).bytes((1 << 20) + 12345)  # two 1 MiB chunks
    (tmp_path / "w").write_bytes(data)
    assert sha256_file(tmp_path / "w") == hashlib.sha256(data).hexdigest()


def _older_checkpoint(path: Path) -> None:
    """Both kinds of numpy values our older checkpoints hold: nerfstudio's numpy learning rates, and tttlrm-train's
    numpy RNG state tuple (a uint32 array)."""
    torch.save({"lr": np.float64(1e-3), "last_epoch": np.int64(3), "flag": np.bool_(True),
                "rng": ("MT19937", np.arange(4, dtype=np.uint32), 2), "w": torch.ones(2)}, path)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_load_checkpoint_reads_older_numpy_values_and_refuses_code(tmp_path):
    _older_checkpoint(tmp_path / "old.pt")
    got = load_checkpoint(tmp_path / "old.pt")
    assert got["lr"] == 1e-3 and got["last_epoch"] == 3 and bool(got["flag"]) is True
    np.testing.assert_array_equal(got["rng"][1], np.arange(4, dtype=np.uint32))
    assert got["rng"][1].dtype == np.uint32 and torch.equal(got["w"], torch.ones(2))
    torch.save({"evil": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(Exception, match="(?i)weights only|unsupported global"):
        load_checkpoint(tmp_path / "evil.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    atomic_torch_save({"step": 1, "w": torch.arange(3)}, tmp_path / "new.pt")
    assert torch.equal(load_checkpoint(tmp_path / "new.pt")["w"], torch.arange(3))


def test_numpy_allowlist_is_applied_by_building_a_model_not_by_imports(tmp_path):
    """Importing the nerfstudio glue changes nothing in torch's loader; building a model of our methods admits the
    numpy values for nerfstudio's own ``torch.load`` calls (still no code). Its own process: the allowlist is global."""
    _older_checkpoint(tmp_path / "old.pt")
    torch.save({"evil": _Exploit()}, tmp_path / "evil.pt")
    script = textwrap.dedent(f"""
        import torch
        import tttlrm_ns.method_configs, tttlrm_ns.ns.splatfacto_cpu as sc
        from nerfstudio.data.scene_box import SceneBox

        def loads(name):
            try:
                torch.load({str(tmp_path)!r} + "/" + name, weights_only=True)
                return True
            except Exception:
                return False

        before = loads("old.pt")
        sc.SplatfactoCPUModelConfig(random_init=True, num_random=10).setup(
            scene_box=SceneBox(aabb=torch.tensor([[-1.0, -1, -1], [1, 1, 1]])), num_train_data=1)
        print(before, loads("old.pt"), loads("evil.pt"))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-3:] == ["False", "True", "False"]
