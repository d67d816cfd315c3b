"""CPU backend ops. TEMPORARY: delegates to the pure-torch reference until the C++ extension lands."""

from tttlrm_ns.render.reference import project_gaussians  # noqa: F401
from tttlrm_ns.render.reference import rasterize_to_pixels as _ref_rasterize


def rasterize_to_pixels(*args, absgrad: bool = False, **kwargs):
    if absgrad:
        raise ValueError("absgrad=True needs the C++ extension (not built yet)")
    return _ref_rasterize(*args, **kwargs)
