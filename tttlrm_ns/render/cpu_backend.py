"""CPU backend: loads the C++ extension in `render/cpu/` (built once with torch.utils.cpp_extension and cached)
and wires its kernels into autograd.

Cache: $TORCH_EXTENSIONS_DIR if set, else ~/.cache/tttlrm_ns/torch_extensions. The build directory name includes
a hash of the sources, the compiler flags and the torch version, so stale builds are never reused. Flags are
-O3 -fno-trapping-math -fno-math-errno (neither changes results; they let the compositing loops vectorise)
plus -mavx2 -mfma only when this CPU reports both (never -march=native, so a cache shared between machines
stays valid: the hash changes with the flags).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
from pathlib import Path
from typing import Optional, Tuple

import torch
from torch import Tensor

_SRC_DIR = Path(__file__).resolve().parent / "cpu"
_SOURCES = ("ext.cpp", "projection.cpp", "raster.cpp", "sh.cpp")
_HEADERS = ("kernels.h",)
_lock = threading.Lock()
_ext = None


def _cpu_flags() -> list:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= flags else []


def _cache_root() -> Path:
    env = os.environ.get("TORCH_EXTENSIONS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "tttlrm_ns" / "torch_extensions"


def load_extension():
    """Compile (first call only) and import the C++ extension. Raises RuntimeError with the compiler output."""
    global _ext
    if _ext is not None:
        return _ext
    with _lock:
        if _ext is not None:
            return _ext
        from torch.utils import cpp_extension

        cflags = ["-O3", "-fopenmp", "-fno-trapping-math", "-fno-math-errno"] + _cpu_flags()
        h = hashlib.sha256()
        for name in _SOURCES + _HEADERS:
            h.update((_SRC_DIR / name).read_bytes())
        h.update(" ".join(cflags).encode())
        h.update(torch.__version__.encode())
        name = f"tttlrm_ns_cpu_raster_{h.hexdigest()[:12]}"
        build_dir = _cache_root() / name
        build_dir.mkdir(parents=True, exist_ok=True)
        try:
            _ext = cpp_extension.load(
                name=name,
                sources=[str(_SRC_DIR / s) for s in _SOURCES],
                extra_cflags=cflags,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build_dir),
                verbose=False,
            )
        except Exception as exc:  # compiler missing, compile error, ninja missing ...
            raise RuntimeError(
                "tttlrm_ns: building the C++ CPU rasterizer failed. It needs a C++20 compiler (g++ >= 10) and "
                "ninja: install them (Debian/Ubuntu: `apt-get install g++ ninja-build`, or `pip install ninja`), "
                "or point the CXX environment variable at a working compiler, then retry. Build directory: "
                f"{build_dir}. Compiler output:\n{exc}"
            ) from exc
        return _ext


def _check_dtype(*tensors: Tensor) -> None:
    for t in tensors:
        if t.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"the CPU rasterizer supports float32/float64 tensors, got {t.dtype}")


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, calc_comps):
        ext = load_extension()
        dt = means.dtype
        args = [t.detach().to(dt).contiguous() for t in (means, quats, scales, viewmats, Ks)]
        radii, means2d, depths, conics, comps = ext.project_fwd(*args, width, height, eps2d, near, far, calc_comps)
        ctx.save_for_backward(*args, radii, comps)
        ctx.cfg = (width, height, eps2d, calc_comps)
        ctx.mark_non_differentiable(radii)
        return radii, means2d, depths, conics, comps

    @staticmethod
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics, v_comps):
        means, quats, scales, viewmats, Ks, radii, comps = ctx.saved_tensors
        width, height, eps2d, calc_comps = ctx.cfg

        def g(v, like):
            return torch.zeros_like(like) if v is None else v.contiguous()

        v_m, v_q, v_s, v_v = load_extension().project_bwd(
            means, quats, scales, viewmats, Ks, width, height, eps2d, radii, comps if calc_comps else None,
            g(v_means2d, means.new_empty(radii.shape + (2,))), g(v_depths, means.new_empty(radii.shape)),
            g(v_conics, means.new_empty(radii.shape + (3,))),
            (g(v_comps, comps) if calc_comps else None), bool(ctx.needs_input_grad[3]))
        return v_m, v_q, v_s, (v_v if ctx.needs_input_grad[3] else None), None, None, None, None, None, None, None


def project_gaussians(
    means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
    eps2d: float = 0.3, near_plane: float = 0.01, far_plane: float = 1e10, calc_compensations: bool = False,
) -> Tuple[Tensor, Tensor, Tensor, Tensor, Optional[Tensor]]:
    """C++ version of `reference.project_gaussians` (same arguments, shapes and culling; gradients for means,
    quats, scales and viewmats)."""
    _check_dtype(means, quats, scales, viewmats, Ks)
    radii, means2d, depths, conics, comps = _Project.apply(
        means, quats, scales, viewmats, Ks, int(width), int(height), float(eps2d), float(near_plane),
        float(far_plane), bool(calc_compensations))
    return radii, means2d, depths, conics, (comps if calc_compensations else None)


class _SH(torch.autograd.Function):
    @staticmethod
    def forward(ctx, degree, dirs, coeffs):
        dirs_c, coeffs_c = dirs.detach().contiguous(), coeffs.detach().to(dirs.dtype).contiguous()
        ctx.save_for_backward(dirs_c, coeffs_c)
        ctx.degree = degree
        return load_extension().sh_fwd(degree, dirs_c, coeffs_c)

    @staticmethod
    def backward(ctx, v_rgb):
        dirs, coeffs = ctx.saved_tensors
        v_co, v_dirs = load_extension().sh_bwd(ctx.degree, dirs, coeffs, v_rgb.contiguous(),
                                               bool(ctx.needs_input_grad[1]))
        return None, (v_dirs if ctx.needs_input_grad[1] else None), v_co


def sh_to_rgb(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """C++ version of `tttlrm_ns.sh.sh_to_rgb`: dirs [..., 3], coeffs [..., K, 3] -> [..., 3]."""
    lead = dirs.shape[:-1]
    out = _SH.apply(degree, dirs.reshape(-1, 3), coeffs.reshape(-1, *coeffs.shape[-2:]))
    return out.reshape(*lead, 3)


class _Raster(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, backgrounds, geom, offsets, ids, absgrad, holder):
        ext = load_extension()
        dt = means2d.dtype
        m2, co, col, op = (t.detach().to(dt).contiguous() for t in (means2d, conics, colors, opacities))
        bg = None if backgrounds is None else backgrounds.detach().to(dt).contiguous()
        out_c, out_a, t_final, last = ext.raster_fwd(m2, co, col, op, bg, *geom, offsets, ids)
        ctx.save_for_backward(m2, co, col, op, offsets, ids, t_final, last, *([] if bg is None else [bg]))
        ctx.geom, ctx.absgrad, ctx.holder, ctx.has_bg = geom, absgrad, holder, bg is not None
        ctx.mark_non_differentiable(t_final)
        return out_c, out_a[..., None]

    @staticmethod
    def backward(ctx, v_c, v_a):
        saved = ctx.saved_tensors
        m2, co, col, op, offsets, ids, t_final, last = saved[:8]
        bg = saved[8] if ctx.has_bg else None
        v_c = torch.zeros(t_final.shape + (col.shape[-1],), dtype=m2.dtype) if v_c is None else v_c.contiguous()
        v_a = torch.zeros_like(t_final) if v_a is None else v_a[..., 0].contiguous()
        v_m, v_con, v_col, v_op, v_abs = load_extension().raster_bwd(
            m2, co, col, op, bg, *ctx.geom, offsets, ids, t_final, last, v_c.to(m2.dtype), v_a.to(m2.dtype),
            bool(ctx.absgrad))
        if ctx.absgrad and ctx.holder is not None:
            ctx.holder.absgrad = v_abs  # gsplat convention: screen-space |grad| sums for densification
        v_bg = None
        if ctx.has_bg and ctx.needs_input_grad[4]:
            v_bg = (v_c * t_final[..., None]).sum(dim=(1, 2))
        return v_m, v_con, v_col, v_op, v_bg, None, None, None, None, None


def rasterize_to_pixels(
    means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, radii: Tensor, depths: Tensor,
    width: int, height: int, tile_size: int = 16, backgrounds: Optional[Tensor] = None, absgrad: bool = False,
) -> Tuple[Tensor, Tensor]:
    """C++ version of `reference.rasterize_to_pixels` (same arguments and outputs). With absgrad=True the
    backward pass stores the summed per-pixel |d loss / d means2d| in `means2d.absgrad`."""
    _check_dtype(means2d, conics, colors, opacities)
    tiles_x, tiles_y = math.ceil(width / tile_size), math.ceil(height / tile_size)
    ext = load_extension()
    dt = means2d.dtype
    offsets, ids = ext.bin_gaussians(means2d.detach().contiguous(), radii.to(torch.int32).contiguous(),
                                     depths.detach().to(dt).contiguous(), tile_size, tiles_x, tiles_y)
    geom = (int(width), int(height), int(tile_size), tiles_x, tiles_y)
    return _Raster.apply(means2d, conics, colors, opacities, backgrounds, geom, offsets, ids, absgrad,
                         means2d if absgrad else None)
