// Torch bindings of the CPU rasterizer kernels (kernels.h). Inputs are validated and made contiguous here; the
// kernels run on raw float/double pointers. Autograd wiring lives in tttlrm_ns/render/cpu_backend.py.
#include <torch/extension.h>

#include <optional>
#include <tuple>
#include <vector>

#include "kernels.h"

using at::Tensor;

namespace {

void check(const Tensor& t, const char* name, at::ScalarType dtype) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " must have dtype ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

template <typename S>
const S* ptr(const std::optional<Tensor>& t) {
  return t.has_value() ? t->data_ptr<S>() : nullptr;
}

std::vector<Tensor> project_fwd(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, int64_t W,
                                int64_t H, double eps2d, double near_plane, double far_plane, bool calc_comps) {
  const auto dt = means.scalar_type();
  check(means, "means", dt); check(quats, "quats", dt); check(scales, "scales", dt);
  check(viewmats, "viewmats", dt); check(Ks, "Ks", dt);
  const int64_t N = means.size(0), C = viewmats.size(0);
  auto opt = means.options();
  Tensor radii = at::empty({C, N}, opt.dtype(at::kInt));
  Tensor means2d = at::empty({C, N, 2}, opt), depths = at::empty({C, N}, opt), conics = at::empty({C, N, 3}, opt);
  Tensor comps = calc_comps ? at::empty({C, N}, opt) : at::empty({0}, opt);
  AT_DISPATCH_FLOATING_TYPES(dt, "project_fwd", [&] {
    tttlrm::project_fwd<scalar_t>(C, N, means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(),
                                  scales.data_ptr<scalar_t>(), viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(),
                                  (int)W, (int)H, (scalar_t)eps2d, (scalar_t)near_plane, (scalar_t)far_plane,
                                  radii.data_ptr<int32_t>(), means2d.data_ptr<scalar_t>(), depths.data_ptr<scalar_t>(),
                                  conics.data_ptr<scalar_t>(), calc_comps ? comps.data_ptr<scalar_t>() : nullptr);
  });
  return {radii, means2d, depths, conics, comps};
}

std::vector<Tensor> project_bwd(Tensor means, Tensor quats, Tensor scales, Tensor viewmats, Tensor Ks, int64_t W,
                                int64_t H, double eps2d, Tensor radii, std::optional<Tensor> comps, Tensor v_means2d,
                                Tensor v_depths, Tensor v_conics, std::optional<Tensor> v_comps, bool viewmat_grad) {
  const auto dt = means.scalar_type();
  check(radii, "radii", at::kInt);
  check(v_means2d, "v_means2d", dt); check(v_depths, "v_depths", dt); check(v_conics, "v_conics", dt);
  TORCH_CHECK(!v_comps.has_value() || comps.has_value(), "v_comps needs comps");
  const int64_t N = means.size(0), C = viewmats.size(0);
  Tensor v_means = at::empty_like(means), v_quats = at::empty_like(quats), v_scales = at::empty_like(scales);
  Tensor v_view = viewmat_grad ? at::empty_like(viewmats) : at::empty({0}, means.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "project_bwd", [&] {
    tttlrm::project_bwd<scalar_t>(
        C, N, means.data_ptr<scalar_t>(), quats.data_ptr<scalar_t>(), scales.data_ptr<scalar_t>(),
        viewmats.data_ptr<scalar_t>(), Ks.data_ptr<scalar_t>(), (int)W, (int)H, (scalar_t)eps2d,
        radii.data_ptr<int32_t>(), ptr<scalar_t>(comps), v_means2d.data_ptr<scalar_t>(), v_depths.data_ptr<scalar_t>(),
        v_conics.data_ptr<scalar_t>(), ptr<scalar_t>(v_comps), v_means.data_ptr<scalar_t>(),
        v_quats.data_ptr<scalar_t>(), v_scales.data_ptr<scalar_t>(), viewmat_grad ? v_view.data_ptr<scalar_t>() : nullptr);
  });
  return {v_means, v_quats, v_scales, v_view};
}

std::vector<Tensor> bin_gaussians(Tensor means2d, Tensor radii, Tensor depths, int64_t tile_size, int64_t tiles_x,
                                  int64_t tiles_y) {
  const auto dt = means2d.scalar_type();
  check(means2d, "means2d", dt); check(radii, "radii", at::kInt); check(depths, "depths", dt);
  const int64_t C = radii.size(0), N = radii.size(1);
  TORCH_CHECK(C * N < INT32_MAX, "C * N = ", C * N, " (cameras x Gaussians) exceeds the int32 index range");
  std::vector<int64_t> offsets;
  std::vector<int32_t> ids;
  AT_DISPATCH_FLOATING_TYPES(dt, "bin_gaussians", [&] {
    tttlrm::bin_gaussians<scalar_t>(C, N, means2d.data_ptr<scalar_t>(), radii.data_ptr<int32_t>(),
                                    depths.data_ptr<scalar_t>(), (int)tile_size, (int)tiles_x, (int)tiles_y, offsets,
                                    ids);
  });
  // last_ids (int32) index this list: refuse sizes it cannot address instead of overflowing silently.
  TORCH_CHECK(ids.size() < (size_t)INT32_MAX, "too many Gaussian-tile intersections (", ids.size(),
              "): render fewer Gaussians or cameras per call, or use a larger tile_size");
  Tensor t_off = at::empty({(int64_t)offsets.size()}, at::kLong);
  Tensor t_ids = at::empty({(int64_t)ids.size()}, at::kInt);
  std::copy(offsets.begin(), offsets.end(), t_off.data_ptr<int64_t>());
  std::copy(ids.begin(), ids.end(), t_ids.data_ptr<int32_t>());
  return {t_off, t_ids};
}

std::vector<Tensor> raster_fwd(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities,
                               std::optional<Tensor> backgrounds, int64_t W, int64_t H, int64_t tile_size,
                               int64_t tiles_x, int64_t tiles_y, Tensor offsets, Tensor ids) {
  const auto dt = means2d.scalar_type();
  check(means2d, "means2d", dt); check(conics, "conics", dt); check(colors, "colors", dt);
  check(opacities, "opacities", dt); check(offsets, "offsets", at::kLong); check(ids, "ids", at::kInt);
  if (backgrounds.has_value()) check(*backgrounds, "backgrounds", dt);
  const int64_t C = colors.size(0), N = colors.size(1), D = colors.size(2);
  auto opt = means2d.options();
  Tensor out_c = at::empty({C, H, W, D}, opt), out_a = at::empty({C, H, W}, opt), t_final = at::empty({C, H, W}, opt);
  Tensor last = at::empty({C, H, W}, opt.dtype(at::kInt));
  AT_DISPATCH_FLOATING_TYPES(dt, "raster_fwd", [&] {
    tttlrm::raster_fwd<scalar_t>(C, N, (int)D, means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(),
                                 colors.data_ptr<scalar_t>(), opacities.data_ptr<scalar_t>(), ptr<scalar_t>(backgrounds),
                                 (int)W, (int)H, (int)tile_size, (int)tiles_x, (int)tiles_y, offsets.data_ptr<int64_t>(),
                                 ids.data_ptr<int32_t>(), out_c.data_ptr<scalar_t>(), out_a.data_ptr<scalar_t>(),
                                 t_final.data_ptr<scalar_t>(), last.data_ptr<int32_t>());
  });
  return {out_c, out_a, t_final, last};
}

std::vector<Tensor> raster_bwd(Tensor means2d, Tensor conics, Tensor colors, Tensor opacities,
                               std::optional<Tensor> backgrounds, int64_t W, int64_t H, int64_t tile_size,
                               int64_t tiles_x, int64_t tiles_y, Tensor offsets, Tensor ids, Tensor t_final,
                               Tensor last, Tensor v_out_c, Tensor v_out_a, bool absgrad) {
  const auto dt = means2d.scalar_type();
  check(t_final, "t_final", dt); check(last, "last_ids", at::kInt);
  check(v_out_c, "v_render_colors", dt); check(v_out_a, "v_render_alphas", dt);
  const int64_t C = colors.size(0), N = colors.size(1), D = colors.size(2);
  Tensor v_m = at::empty_like(means2d), v_con = at::empty_like(conics), v_col = at::empty_like(colors);
  Tensor v_op = at::empty_like(opacities);
  Tensor v_abs = absgrad ? at::empty_like(means2d) : at::empty({0}, means2d.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "raster_bwd", [&] {
    tttlrm::raster_bwd<scalar_t>(
        C, N, (int)D, means2d.data_ptr<scalar_t>(), conics.data_ptr<scalar_t>(), colors.data_ptr<scalar_t>(),
        opacities.data_ptr<scalar_t>(), ptr<scalar_t>(backgrounds), (int)W, (int)H, (int)tile_size, (int)tiles_x,
        (int)tiles_y, offsets.data_ptr<int64_t>(), ids.data_ptr<int32_t>(), t_final.data_ptr<scalar_t>(),
        last.data_ptr<int32_t>(), v_out_c.data_ptr<scalar_t>(), v_out_a.data_ptr<scalar_t>(), v_m.data_ptr<scalar_t>(),
        v_con.data_ptr<scalar_t>(), v_col.data_ptr<scalar_t>(), v_op.data_ptr<scalar_t>(),
        absgrad ? v_abs.data_ptr<scalar_t>() : nullptr);
  });
  return {v_m, v_con, v_col, v_op, v_abs};
}

Tensor sh_fwd(int64_t degree, Tensor dirs, Tensor coeffs) {
  const auto dt = dirs.scalar_type();
  check(dirs, "dirs", dt); check(coeffs, "coeffs", dt);
  const int64_t M = dirs.size(0), K = coeffs.size(1);
  Tensor rgb = at::empty({M, 3}, dirs.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "sh_fwd", [&] {
    tttlrm::sh_fwd<scalar_t>(M, (int)K, (int)degree, dirs.data_ptr<scalar_t>(), coeffs.data_ptr<scalar_t>(),
                             rgb.data_ptr<scalar_t>());
  });
  return rgb;
}

std::vector<Tensor> sh_bwd(int64_t degree, Tensor dirs, Tensor coeffs, Tensor v_rgb, bool dir_grad) {
  const auto dt = dirs.scalar_type();
  check(v_rgb, "v_rgb", dt);
  const int64_t M = dirs.size(0), K = coeffs.size(1);
  Tensor v_co = at::empty_like(coeffs);
  Tensor v_dirs = dir_grad ? at::empty_like(dirs) : at::empty({0}, dirs.options());
  AT_DISPATCH_FLOATING_TYPES(dt, "sh_bwd", [&] {
    tttlrm::sh_bwd<scalar_t>(M, (int)K, (int)degree, dirs.data_ptr<scalar_t>(), coeffs.data_ptr<scalar_t>(),
                             v_rgb.data_ptr<scalar_t>(), v_co.data_ptr<scalar_t>(),
                             dir_grad ? v_dirs.data_ptr<scalar_t>() : nullptr);
  });
  return {v_co, v_dirs};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("project_fwd", &project_fwd);
  m.def("project_bwd", &project_bwd);
  m.def("bin_gaussians", &bin_gaussians);
  m.def("raster_fwd", &raster_fwd);
  m.def("raster_bwd", &raster_bwd);
  m.def("sh_fwd", &sh_fwd);
  m.def("sh_bwd", &sh_bwd);
}
