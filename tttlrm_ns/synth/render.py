"""pyrender (OSMesa) rendering of a :class:`~tttlrm_ns.synth.room.SceneSpec` from OpenGL camera poses.

Outputs per view: colour (uint8 [H, W, 3]), coverage alpha (uint8 [H, W], objects only) and planar z-depth
(float32 [H, W], metres along the optical axis, 0 = background), all sampled at pixel centres (checked in
``tests/test_synth.py``); optional odd supersampling anti-aliases colour and alpha without moving the depth samples.

Not used on purpose: pyrender's framebuffer path (4x MSAA, RGBA read-back), which OSMesa could run if
``supports_framebuffers`` were patched to True: its resolved depth is one MSAA sample, measured ~0.4 px off the
pixel centre, which would break the exact camera model of the stored depth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tttlrm_ns.synth.gl import import_pyrender
from tttlrm_ns.synth.room import SceneSpec


@dataclass
class Intrinsics:
    """Pixel intrinsics in the pixel-centre rule of :mod:`tttlrm_ns.conventions` (pyrender's own convention)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int


def _ordered_scene_class(pr):
    """A pyrender Scene that iterates its mesh and light nodes in name order.

    pyrender keeps nodes in Python sets (iteration order follows memory addresses, so it changes from run to run).
    Its renderer draws meshes in that order after a stable sort by node distance -- all our nodes sit at the origin,
    so the order decides which of two coplanar faces wins the depth test -- and sums lights in that order (float
    rounding). Both made repeated renders differ by a few pixel levels; name order makes them byte-identical.
    """

    class OrderedScene(pr.Scene):
        @property
        def mesh_nodes(self):
            return sorted(self._mesh_nodes, key=lambda n: n.name or "")

        @property
        def light_nodes(self):
            nodes = self.point_light_nodes | self.spot_light_nodes | self.directional_light_nodes
            return sorted(nodes, key=lambda n: n.name or "")

    return OrderedScene


_TEXTURE_ATTRS = ("baseColorTexture", "metallicRoughnessTexture", "normalTexture", "occlusionTexture",
                  "emissiveTexture", "diffuseTexture", "specularGlossinessTexture")


class SpecRenderer:
    """Holds one pyrender OffscreenRenderer (one GL context) per output size and renders scene specs.

    Usage::

        r = SpecRenderer()
        views = r.render(spec, intr, poses_gl, rgba=False)   # list of (rgb, alpha or None, depth)
    """

    def __init__(self) -> None:
        self._pr = import_pyrender()
        self._scene_cls = _ordered_scene_class(self._pr)
        self._renderers: dict[tuple[int, int], object] = {}

    def _renderer(self, width: int, height: int):
        key = (width, height)
        if key not in self._renderers:
            self._renderers[key] = self._pr.OffscreenRenderer(width, height)
        return self._renderers[key]

    def build(self, spec: SceneSpec):
        """spec -> pyrender.Scene (meshes double-sided: Sweet Home 3D models have inconsistent winding)."""
        pr = self._pr
        scene = self._scene_cls(bg_color=list(map(float, spec.bg_color)), ambient_light=[float(spec.ambient)] * 3)
        for i, (mesh, smooth) in enumerate(spec.meshes):
            pm = pr.Mesh.from_trimesh(mesh, smooth=smooth and mesh.vertex_normals is not None)
            for prim in pm.primitives:
                if prim.material is not None:
                    prim.material.doubleSided = True
                    if prim.texcoord_0 is None:
                        # Some furniture OBJs reference a texture but carry no UVs; pyrender would then emit a
                        # shader that samples the texture at an undeclared uv_0 and fail to compile. Without UVs
                        # the texture cannot be placed anyway: keep the material's base colour only.
                        for attr in _TEXTURE_ATTRS:
                            if getattr(prim.material, attr, None) is not None:
                                setattr(prim.material, attr, None)
            scene.add(pm, name=f"mesh{i:06d}")
        for i, light in enumerate(spec.lights):
            color, intensity = light.color.astype(float), float(light.intensity)
            if light.kind == "point":
                node = pr.PointLight(color=color, intensity=intensity)
            elif light.kind == "directional":
                node = pr.DirectionalLight(color=color, intensity=intensity)
            elif light.kind == "spot":
                node = pr.SpotLight(color=color, intensity=intensity, innerConeAngle=float(light.inner_cone),
                                    outerConeAngle=float(light.outer_cone))
            else:
                raise ValueError(f"unknown light kind {light.kind!r} (point, directional or spot)")
            scene.add(node, pose=light.pose, name=f"light{i:06d}")
        return scene

    def render(self, spec: SceneSpec, intr: Intrinsics, poses_gl: np.ndarray, rgba: bool = False,
               headlight: float = 0.0, supersample: int = 1, znear: float = 0.05, zfar: float = 100.0):
        """Render every pose [N, 4, 4] (OpenGL c2w), yielding (rgb uint8 [H, W, 3], alpha uint8 [H, W] or None,
        depth float32 [H, W]) per pose (a generator, so long paths are written frame by frame).

        pyrender's OSMesa path draws into the OSMesa buffer without MSAA, so every pixel is one sample at its centre
        (colour and depth alike). ``supersample = S`` (odd) renders at S x the resolution with the intrinsics scaled
        by S: sub-pixel ``(S u + (S - 1) / 2)`` then samples exactly the output pixel centre ``u + 0.5``, which
        gives the depth, while colour and coverage are S x S box averages (anti-aliasing).

        With ``rgba`` the alpha is the fraction of covered sub-pixels (depth > 0) and the colour is the mean over
        covered sub-pixels only (straight alpha: compositing over white reproduces a render over white).
        """
        if supersample < 1 or supersample % 2 == 0:
            raise ValueError(f"supersample must be an odd integer >= 1 (got {supersample}) so that a sub-pixel "
                             "sits exactly at every pixel centre")
        pr, s = self._pr, supersample
        h, w = intr.height, intr.width
        scene = self.build(spec)
        cam = scene.add(pr.IntrinsicsCamera(intr.fx * s, intr.fy * s, intr.cx * s, intr.cy * s, znear=znear,
                                            zfar=zfar))
        if headlight > 0:  # a light that follows the camera: evenly lit object turntables
            scene.add(pr.DirectionalLight(color=np.ones(3), intensity=headlight), parent_node=cam, name="light_head")
        renderer = self._renderer(w * s, h * s)
        mid = (s - 1) // 2
        for pose in poses_gl:
            scene.set_pose(cam, pose)
            color, depth_hi = renderer.render(scene)
            depth = np.ascontiguousarray(depth_hi[mid::s, mid::s], dtype=np.float32)
            if not rgba:
                rgb = color if s == 1 else color.reshape(h, s, w, s, 3).mean((1, 3))
                yield np.ascontiguousarray(np.rint(rgb), dtype=np.uint8) if s > 1 else color, None, depth
                continue
            cov = (depth_hi > 0).reshape(h, s, w, s, 1).astype(np.float32)
            count = cov.sum((1, 3))
            csum = (color.reshape(h, s, w, s, 3) * cov).sum((1, 3))
            rgb = np.where(count > 0, csum / np.maximum(count, 1), 255.0)
            alpha = count[..., 0] * (255.0 / (s * s))
            yield np.rint(rgb).astype(np.uint8), np.rint(alpha).astype(np.uint8), depth

    def close(self) -> None:
        for r in self._renderers.values():
            r.delete()
        self._renderers.clear()


__all__ = ["Intrinsics", "SpecRenderer"]
