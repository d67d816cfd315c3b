// Spherical-harmonics colours (degree 0-3) in gsplat's basis/sign convention, with +0.5 offset and clamp at 0,
// evaluated once per (camera, Gaussian). Backward gives coefficient and (unnormalised) direction gradients.
#include <omp.h>

#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace tttlrm {
namespace {

constexpr double C0 = 0.28209479177387814, C1 = 0.4886025119029199;
constexpr double C2[5] = {1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792,
                          0.5462742152960396};
constexpr double C3[7] = {-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
                          -0.4570457994644658, 1.445305721320277, -0.5900435899266435};

// Basis values (and, when grad != nullptr, their partial derivatives d/dx, d/dy, d/dz) at the unit vector u.
template <typename S>
inline int bases(int degree, S x, S y, S z, S* v, S (*grad)[3]) {
  int n = 0;
  auto put = [&](S val, S gx, S gy, S gz) {
    v[n] = val;
    if (grad) {
      grad[n][0] = gx; grad[n][1] = gy; grad[n][2] = gz;
    }
    ++n;
  };
  put(S(C0), 0, 0, 0);
  if (degree >= 1) {
    put(S(-C1) * y, 0, S(-C1), 0);
    put(S(C1) * z, 0, 0, S(C1));
    put(S(-C1) * x, S(-C1), 0, 0);
  }
  if (degree >= 2) {
    const S xx = x * x, yy = y * y, zz = z * z;
    put(S(C2[0]) * x * y, S(C2[0]) * y, S(C2[0]) * x, 0);
    put(S(C2[1]) * y * z, 0, S(C2[1]) * z, S(C2[1]) * y);
    put(S(C2[2]) * (2 * zz - xx - yy), S(-2 * C2[2]) * x, S(-2 * C2[2]) * y, S(4 * C2[2]) * z);
    put(S(C2[3]) * x * z, S(C2[3]) * z, 0, S(C2[3]) * x);
    put(S(C2[4]) * (xx - yy), S(2 * C2[4]) * x, S(-2 * C2[4]) * y, 0);
    if (degree >= 3) {
      put(S(C3[0]) * y * (3 * xx - yy), S(6 * C3[0]) * x * y, S(3 * C3[0]) * (xx - yy), 0);
      put(S(C3[1]) * x * y * z, S(C3[1]) * y * z, S(C3[1]) * x * z, S(C3[1]) * x * y);
      put(S(C3[2]) * y * (4 * zz - xx - yy), S(-2 * C3[2]) * x * y, S(C3[2]) * (4 * zz - xx - 3 * yy),
          S(8 * C3[2]) * y * z);
      put(S(C3[3]) * z * (2 * zz - 3 * xx - 3 * yy), S(-6 * C3[3]) * x * z, S(-6 * C3[3]) * y * z,
          S(C3[3]) * (6 * zz - 3 * xx - 3 * yy));
      put(S(C3[4]) * x * (4 * zz - xx - yy), S(C3[4]) * (4 * zz - 3 * xx - yy), S(-2 * C3[4]) * x * y,
          S(8 * C3[4]) * x * z);
      put(S(C3[5]) * z * (xx - yy), S(2 * C3[5]) * x * z, S(-2 * C3[5]) * y * z, S(C3[5]) * (xx - yy));
      put(S(C3[6]) * x * (xx - 3 * yy), S(3 * C3[6]) * (xx - yy), S(-6 * C3[6]) * x * y, 0);
    }
  }
  return n;
}

template <typename S>
inline S unit(const S* d, S u[3]) {
  const S n = std::max(std::sqrt(d[0] * d[0] + d[1] * d[1] + d[2] * d[2]), S(1e-12));
  for (int k = 0; k < 3; ++k) u[k] = d[k] / n;
  return n;
}

}  // namespace

template <typename S>
void sh_fwd(int64_t M, int K, int degree, const S* dirs, const S* coeffs, S* rgb) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < M; ++i) {
    S u[3], b[16];
    unit(dirs + 3 * i, u);
    const int n = bases<S>(degree, u[0], u[1], u[2], b, nullptr);
    const S* co = coeffs + static_cast<int64_t>(i) * K * 3;
    for (int ch = 0; ch < 3; ++ch) {
      S s = 0;
      for (int k = 0; k < n; ++k) s += b[k] * co[3 * k + ch];
      rgb[3 * i + ch] = std::max(s + S(0.5), S(0));
    }
  }
}

template <typename S>
void sh_bwd(int64_t M, int K, int degree, const S* dirs, const S* coeffs, const S* v_rgb, S* v_coeffs, S* v_dirs) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < M; ++i) {
    S u[3], b[16], gb[16][3];
    const S norm = unit(dirs + 3 * i, u);
    const int n = bases<S>(degree, u[0], u[1], u[2], b, v_dirs ? gb : nullptr);
    const S* co = coeffs + static_cast<int64_t>(i) * K * 3;
    S* vco = v_coeffs + static_cast<int64_t>(i) * K * 3;
    S v[3];
    for (int ch = 0; ch < 3; ++ch) {
      S s = 0;
      for (int k = 0; k < n; ++k) s += b[k] * co[3 * k + ch];
      // clamp_min(x, 0) passes the gradient where x >= 0 (torch's convention)
      v[ch] = (s + S(0.5) >= 0) ? v_rgb[3 * i + ch] : S(0);
    }
    for (int k = 0; k < K; ++k)
      for (int ch = 0; ch < 3; ++ch) vco[3 * k + ch] = k < n ? b[k] * v[ch] : S(0);
    if (v_dirs) {
      S gu[3] = {0, 0, 0};
      for (int k = 1; k < n; ++k) {
        const S vb = co[3 * k] * v[0] + co[3 * k + 1] * v[1] + co[3 * k + 2] * v[2];
        for (int j = 0; j < 3; ++j) gu[j] += vb * gb[k][j];
      }
      // u = d / |d|: dL/dd = (gu - u (u . gu)) / |d|
      const S dot = u[0] * gu[0] + u[1] * gu[1] + u[2] * gu[2];
      for (int j = 0; j < 3; ++j) v_dirs[3 * i + j] = (gu[j] - u[j] * dot) / norm;
    }
  }
}

#define INSTANTIATE(S)                                                 \
  template void sh_fwd<S>(int64_t, int, int, const S*, const S*, S*); \
  template void sh_bwd<S>(int64_t, int, int, const S*, const S*, const S*, S*, S*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace tttlrm
