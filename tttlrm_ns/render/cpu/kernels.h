// Raw-pointer CPU kernels of the Gaussian rasterizer (no torch headers here, so these files compile quickly).
// Semantics follow gsplat 1.4.0's CUDA kernels; tttlrm_ns/render/reference.py is the executable specification.
// All arrays are dense, row-major, of scalar type S (float or double) unless noted.
#pragma once
#include <cstdint>
#include <vector>

namespace tttlrm {

// Projection of N Gaussians into C pinhole cameras (EWA with gsplat's tan-fov clamped Jacobian).
// in : means [N,3], quats [N,4] (w,x,y,z), scales [N,3], viewmats [C,4,4] (world->camera), Ks [C,3,3]
// out: radii [C,N] int32 (0 = culled), means2d [C,N,2], depths [C,N], conics [C,N,3], comps [C,N] (nullable)
// Culled entries are written as zeros.
template <typename S>
void project_fwd(int64_t C, int64_t N, const S* means, const S* quats, const S* scales, const S* viewmats,
                 const S* Ks, int W, int H, S eps2d, S near_plane, S far_plane, int32_t* radii, S* means2d,
                 S* depths, S* conics, S* comps);

// Vector-Jacobian product of project_fwd for the non-culled entries (radii > 0).
// in : v_means2d [C,N,2], v_depths [C,N], v_conics [C,N,3], v_comps [C,N] (nullable; comps must be given then)
// out: v_means [N,3], v_quats [N,4], v_scales [N,3], v_viewmats [C,4,4] (nullable); all overwritten.
template <typename S>
void project_bwd(int64_t C, int64_t N, const S* means, const S* quats, const S* scales, const S* viewmats,
                 const S* Ks, int W, int H, S eps2d, const int32_t* radii, const S* comps, const S* v_means2d,
                 const S* v_depths, const S* v_conics, const S* v_comps, S* v_means, S* v_quats, S* v_scales,
                 S* v_viewmats);

// Tile binning: every non-culled (camera, Gaussian) is listed in every tile its radius square touches; each
// tile's run is in ascending depth (ties: Gaussian index). offsets has C*tiles_y*tiles_x + 1 entries; ids hold
// camera-flattened indices c*N + i.
template <typename S>
void bin_gaussians(int64_t C, int64_t N, const S* means2d, const int32_t* radii, const S* depths, int tile_size,
                   int tiles_x, int tiles_y, std::vector<int64_t>& offsets, std::vector<int32_t>& ids);

// Front-to-back compositing per tile.
// in : means2d [C,N,2], conics [C,N,3], colors [C,N,D], opacities [C,N], backgrounds [C,D] (nullable)
// out: out_colors [C,H,W,D] (with background), out_alphas [C,H,W], t_final [C,H,W] (transmittance after the
//      last composited Gaussian), last_ids [C,H,W] int32 (index into ids of that Gaussian, -1 if none)
template <typename S>
void raster_fwd(int64_t C, int64_t N, int D, const S* means2d, const S* conics, const S* colors,
                const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                const int64_t* offsets, const int32_t* ids, S* out_colors, S* out_alphas, S* t_final,
                int32_t* last_ids);

// Exact backward of raster_fwd (given v_out_colors [C,H,W,D], v_out_alphas [C,H,W]).
// out: v_means2d [C,N,2], v_conics [C,N,3], v_colors [C,N,D], v_opacities [C,N], v_means2d_abs [C,N,2]
//      (nullable: per-pixel |d loss / d means2d| summed, gsplat's absgrad); all overwritten.
template <typename S>
void raster_bwd(int64_t C, int64_t N, int D, const S* means2d, const S* conics, const S* colors,
                const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                const int64_t* offsets, const int32_t* ids, const S* t_final, const int32_t* last_ids,
                const S* v_out_colors, const S* v_out_alphas, S* v_means2d, S* v_conics, S* v_colors,
                S* v_opacities, S* v_means2d_abs);

// Spherical-harmonics colours, gsplat convention: rgb = max(sum_k basis_k(dir/|dir|) * coeffs_k + 0.5, 0).
// in : dirs [M,3], coeffs [M,K,3] (K >= (degree+1)^2; extra bands ignored)   out: rgb [M,3]
template <typename S>
void sh_fwd(int64_t M, int K, int degree, const S* dirs, const S* coeffs, S* rgb);
// in : v_rgb [M,3]  out: v_coeffs [M,K,3] (overwritten), v_dirs [M,3] (nullable, overwritten)
template <typename S>
void sh_bwd(int64_t M, int K, int degree, const S* dirs, const S* coeffs, const S* v_rgb, S* v_coeffs,
            S* v_dirs);

}  // namespace tttlrm
