"""``tttlrm-export-triplane``: mesh (marching cubes on the density, vertex colours) and point cloud of a
``tttlrm-triplane`` run.

nerfstudio's ``ns-export marching-cubes`` only accepts SDF models (it asserts ``sdf_field`` and needs 512^3+ grids),
so the triplane mesh has its own command; ``ns-export pointcloud`` works on a ``tttlrm-triplane`` run as well (it
renders depth + colour along the train rays).

The density is evaluated on a ``resolution^3`` grid of cell centres of the object box, in chunks;
``skimage.measure.marching_cubes`` extracts the ``density_threshold`` level set; vertex colours are the field's
(view-independent) colour at the vertices. The point cloud holds the cells whose density exceeds the threshold, with
their colours. Both are written in the nerfstudio world frame (``--world-frame original``: the data's own frame) as
PLY files (trimesh), atomically. They read back with trimesh and Open3D.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np
import torch
import tyro

from tttlrm_ns.checkpoint_io import atomic_write
from tttlrm_ns.conventions import Similarity


@dataclass
class ExportTriplane:
    """Mesh + point cloud of a tttlrm-triplane run."""

    load_config: Path
    """config.yml of the run (outputs/.../tttlrm-triplane/.../config.yml)."""
    output_dir: Path
    """Folder for mesh.ply and point_cloud.ply."""
    resolution: int = 128
    """Grid cells per box side for marching cubes and the point cloud."""
    density_threshold: float = 10.0
    """Iso-level of the density (1 / box units): 10 makes a 0.07-thick layer 50 % opaque."""
    threshold_quantile: Optional[float] = None
    """Instead of density_threshold: this quantile of the grid's densities (e.g. 0.9 keeps the densest 10 % of the
    box; useful for weakly trained models whose densities never reach the absolute level)."""
    world_frame: Literal["nerfstudio", "original"] = "nerfstudio"
    """Frame of the written coordinates: nerfstudio's (dataparser-transformed) or the data's own."""
    max_points: int = 500000
    """Cap of the point cloud (random subset above it, seed 0)."""

    def main(self) -> None:
        from nerfstudio.utils.eval_utils import eval_setup
        from rich.console import Console

        console = Console()
        _, pipeline, _, _ = eval_setup(self.load_config, test_mode="inference")
        model = pipeline.model
        if not hasattr(model, "planes") or not hasattr(model, "world_to_object"):
            raise SystemExit(f"{self.load_config} is not a tttlrm-triplane run (its model has no triplane); "
                             "for Gaussian runs use ns-export gaussian-splat")
        if self.threshold_quantile is not None and not 0.0 < self.threshold_quantile < 1.0:
            raise SystemExit(f"--threshold-quantile must be in (0, 1), got {self.threshold_quantile}")
        mesh, cloud, level = export_geometry(model, self.resolution, self.density_threshold, self.max_points,
                                             self.threshold_quantile)
        console.print(f"density iso-level {level:.4g}")
        if self.world_frame == "original":
            outputs = pipeline.datamanager.train_dataparser_outputs
            for geom in (mesh, cloud):
                if geom is not None:
                    geom.vertices = _to_original(np.asarray(geom.vertices), outputs)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        if mesh is None:
            console.print(f"[yellow]the density never crosses {level:.4g} in the box: no mesh written; change "
                          "--density-threshold or use --threshold-quantile")
        else:
            atomic_write(self.output_dir / "mesh.ply", lambda tmp: mesh.export(tmp, file_type="ply"))
            console.print(f"mesh: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces -> "
                          f"{self.output_dir / 'mesh.ply'}")
        if cloud is not None:
            atomic_write(self.output_dir / "point_cloud.ply", lambda tmp: cloud.export(tmp, file_type="ply"))
            console.print(f"point cloud: {len(cloud.vertices)} points -> {self.output_dir / 'point_cloud.ply'}")


@torch.no_grad()
def export_geometry(model, resolution: int, threshold: float, max_points: int = 500000,
                    quantile: Optional[float] = None):
    """(trimesh.Trimesh or None, trimesh.PointCloud or None, iso-level) in the model's world frame.

    ``model`` needs ``planes`` [1, 3, C, R, R], ``field`` (:class:`TriplaneField`), ``world_to_object`` [4, 4] and
    ``object_scale`` (a :class:`tttlrm_ns.triplane.ns.TriplaneNSModel`)."""
    import trimesh
    from skimage.measure import marching_cubes

    planes, field = model.planes, model.field
    h = field.cfg.box_half
    sigma = field.density_grid(planes, resolution).cpu().numpy()  # [x, y, z]
    if quantile is not None:
        threshold = float(np.quantile(sigma, quantile))
    cell = 2 * h / resolution
    m = model.world_to_object.double().cpu()
    s = float(model.object_scale)

    def to_world(p_obj: np.ndarray) -> np.ndarray:  # object frame -> world: x_w = R^T (x_o - t) / s
        p = torch.from_numpy(p_obj).double()
        return ((p - m[:3, 3]) @ (m[:3, :3] / s)).div(s).numpy()

    def colours(p_obj: np.ndarray) -> np.ndarray:
        pts = torch.from_numpy(p_obj).to(planes)[None]
        rgb = torch.cat([field.query(planes, pts[:, i:i + 65536])[1] for i in range(0, pts.shape[1], 65536)], 1)
        return (rgb[0].clamp(0, 1).cpu().numpy() * 255).round().astype(np.uint8)

    mesh = None
    if sigma.max() > threshold > sigma.min():
        verts, faces, _, _ = marching_cubes(sigma, level=threshold, spacing=(cell, cell, cell))
        verts = verts - h + cell / 2  # grid index 0 is the first cell centre
        rgba = np.concatenate([colours(verts.astype(np.float32)), np.full((len(verts), 1), 255, np.uint8)], 1)
        mesh = trimesh.Trimesh(to_world(verts), faces, vertex_colors=rgba, process=False)
    cloud = None
    occ = np.argwhere(sigma > threshold)
    if len(occ):
        if len(occ) > max_points:
            occ = occ[np.random.default_rng(0).choice(len(occ), max_points, replace=False)]
        pts = (occ + 0.5) * cell - h
        rgba = np.concatenate([colours(pts.astype(np.float32)), np.full((len(pts), 1), 255, np.uint8)], 1)
        cloud = trimesh.PointCloud(to_world(pts), colors=rgba)
    return mesh, cloud, threshold


def _to_original(points: np.ndarray, outputs) -> np.ndarray:
    """nerfstudio-frame points [P, 3] -> the data's frame (undo ``x_ns = s (R x + t)``), float64."""
    sim = Similarity.from_nerfstudio(outputs.dataparser_transform, outputs.dataparser_scale)
    return sim.invert_points(torch.from_numpy(np.asarray(points, dtype=np.float64))).numpy()


def entrypoint() -> None:
    tyro.cli(ExportTriplane).main()


__all__ = ["ExportTriplane", "entrypoint", "export_geometry"]
