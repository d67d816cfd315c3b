// EWA projection (forward + exact vector-Jacobian product). Formulas: gsplat 1.4.0 fully_fused_projection
// (persp_proj with tan-fov clamping at 1.3x the image, eps2d blur, antialiasing compensation).
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace tttlrm {
namespace {

template <typename S>
struct Mat3 {
  S m[3][3];
};

template <typename S>
inline void quat_to_rot(const S* q_raw, S q[4], S R[3][3], S& inv_norm) {
  S n2 = q_raw[0] * q_raw[0] + q_raw[1] * q_raw[1] + q_raw[2] * q_raw[2] + q_raw[3] * q_raw[3];
  inv_norm = S(1) / std::max(std::sqrt(n2), S(1e-12));
  for (int k = 0; k < 4; ++k) q[k] = q_raw[k] * inv_norm;
  const S w = q[0], x = q[1], y = q[2], z = q[3];
  R[0][0] = 1 - 2 * (y * y + z * z); R[0][1] = 2 * (x * y - w * z); R[0][2] = 2 * (x * z + w * y);
  R[1][0] = 2 * (x * y + w * z); R[1][1] = 1 - 2 * (x * x + z * z); R[1][2] = 2 * (y * z - w * x);
  R[2][0] = 2 * (x * z - w * y); R[2][1] = 2 * (y * z + w * x); R[2][2] = 1 - 2 * (x * x + y * y);
}

// Per-camera constants.
template <typename S>
struct Cam {
  S R[3][3], t[3], fx, fy, cx, cy, lxp, lxn, lyp, lyn;
  Cam(const S* vm, const S* K, int W, int H) {
    for (int i = 0; i < 3; ++i) {
      for (int j = 0; j < 3; ++j) R[i][j] = vm[i * 4 + j];
      t[i] = vm[i * 4 + 3];
    }
    fx = K[0]; fy = K[4]; cx = K[2]; cy = K[5];
    const S tfx = S(0.5) * W / fx, tfy = S(0.5) * H / fy;
    lxp = (W - cx) / fx + S(0.3) * tfx;
    lxn = cx / fx + S(0.3) * tfx;
    lyp = (H - cy) / fy + S(0.3) * tfy;
    lyn = cy / fy + S(0.3) * tfy;
  }
};

// Everything the forward computes for one (camera, Gaussian) that the backward needs again.
template <typename S>
struct Proj {
  S q[4], Rq[3][3], inv_qn;      // normalised quaternion, its rotation, 1/|q_raw|
  S M[3][3];                     // Rq * diag(scales)
  S cov[3][3];                   // world covariance
  S mc[3];                       // camera-space mean
  S covc[3][3];                  // camera-space covariance
  S J[2][3];                     // clamped Jacobian
  S c2[3];                       // blurred 2D covariance (a, b, c)
  S det, det_orig;
  bool clamp_x, clamp_y;         // tx/ty hit the fov clamp
};

template <typename S>
inline void project_one(const Cam<S>& cam, const S* mean, const S* quat, const S* scale, S eps2d, Proj<S>& p) {
  quat_to_rot(quat, p.q, p.Rq, p.inv_qn);
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) p.M[i][j] = p.Rq[i][j] * scale[j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) p.cov[i][j] = p.M[i][0] * p.M[j][0] + p.M[i][1] * p.M[j][1] + p.M[i][2] * p.M[j][2];
  for (int i = 0; i < 3; ++i)
    p.mc[i] = cam.R[i][0] * mean[0] + cam.R[i][1] * mean[1] + cam.R[i][2] * mean[2] + cam.t[i];
  S RC[3][3];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) RC[i][j] = cam.R[i][0] * p.cov[0][j] + cam.R[i][1] * p.cov[1][j] + cam.R[i][2] * p.cov[2][j];
  for (int i = 0; i < 3; ++i)
    for (int j = 0; j < 3; ++j) p.covc[i][j] = RC[i][0] * cam.R[j][0] + RC[i][1] * cam.R[j][1] + RC[i][2] * cam.R[j][2];
  const S x = p.mc[0], y = p.mc[1], z = p.mc[2];
  const S rz = S(1) / z, rz2 = rz * rz;
  const S ux = x * rz, uy = y * rz;
  p.clamp_x = !(ux <= cam.lxp && ux >= -cam.lxn);
  p.clamp_y = !(uy <= cam.lyp && uy >= -cam.lyn);
  const S tx = z * std::min(cam.lxp, std::max(-cam.lxn, ux));
  const S ty = z * std::min(cam.lyp, std::max(-cam.lyn, uy));
  p.J[0][0] = cam.fx * rz; p.J[0][1] = 0; p.J[0][2] = -cam.fx * tx * rz2;
  p.J[1][0] = 0; p.J[1][1] = cam.fy * rz; p.J[1][2] = -cam.fy * ty * rz2;
  S JC[2][3];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j) JC[i][j] = p.J[i][0] * p.covc[0][j] + p.J[i][1] * p.covc[1][j] + p.J[i][2] * p.covc[2][j];
  S cv[2][2];
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 2; ++j) cv[i][j] = JC[i][0] * p.J[j][0] + JC[i][1] * p.J[j][1] + JC[i][2] * p.J[j][2];
  S a = cv[0][0], b = S(0.5) * (cv[0][1] + cv[1][0]), c = cv[1][1];
  p.det_orig = a * c - b * b;
  a += eps2d;
  c += eps2d;
  p.c2[0] = a; p.c2[1] = b; p.c2[2] = c;
  p.det = a * c - b * b;
}

}  // namespace

template <typename S>
void project_fwd(int64_t C, int64_t N, const S* means, const S* quats, const S* scales, const S* viewmats,
                 const S* Ks, int W, int H, S eps2d, S near_plane, S far_plane, int32_t* radii, S* means2d,
                 S* depths, S* conics, S* comps) {
  for (int64_t c = 0; c < C; ++c) {
    const Cam<S> cam(viewmats + 16 * c, Ks + 9 * c, W, H);
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < N; ++i) {
      const int64_t o = c * N + i;
      radii[o] = 0;
      means2d[2 * o] = means2d[2 * o + 1] = 0;
      depths[o] = 0;
      conics[3 * o] = conics[3 * o + 1] = conics[3 * o + 2] = 0;
      if (comps) comps[o] = 0;
      const S* m = means + 3 * i;
      const S z = cam.R[2][0] * m[0] + cam.R[2][1] * m[1] + cam.R[2][2] * m[2] + cam.t[2];
      if (!(z >= near_plane && z <= far_plane)) continue;
      Proj<S> p;
      project_one(cam, m, quats + 4 * i, scales + 3 * i, eps2d, p);
      if (!(p.det > 0)) continue;
      const S mx = cam.fx * p.mc[0] / p.mc[2] + cam.cx;
      const S my = cam.fy * p.mc[1] / p.mc[2] + cam.cy;
      const S hb = S(0.5) * (p.c2[0] + p.c2[2]);
      const S v1 = hb + std::sqrt(std::max(S(0.01), hb * hb - p.det));
      const S r = std::ceil(S(3) * std::sqrt(std::max(v1, S(0))));
      if (!(mx + r > 0 && mx - r < W && my + r > 0 && my - r < H) || !std::isfinite(r)) continue;
      radii[o] = static_cast<int32_t>(r);
      means2d[2 * o] = mx;
      means2d[2 * o + 1] = my;
      depths[o] = p.mc[2];
      conics[3 * o] = p.c2[2] / p.det;
      conics[3 * o + 1] = -p.c2[1] / p.det;
      conics[3 * o + 2] = p.c2[0] / p.det;
      if (comps) comps[o] = std::sqrt(std::max(S(0), p.det_orig / p.det));
    }
  }
}

template <typename S>
void project_bwd(int64_t C, int64_t N, const S* means, const S* quats, const S* scales, const S* viewmats,
                 const S* Ks, int W, int H, S eps2d, const int32_t* radii, const S* comps, const S* v_means2d,
                 const S* v_depths, const S* v_conics, const S* v_comps, S* v_means, S* v_quats, S* v_scales,
                 S* v_viewmats) {
  std::vector<Cam<S>> cams;
  for (int64_t c = 0; c < C; ++c) cams.emplace_back(viewmats + 16 * c, Ks + 9 * c, W, H);
  const int nthreads = omp_get_max_threads();
  // Camera-pose gradients are sums over Gaussians: per-thread partial sums, reduced at the end.
  std::vector<S> vview_part(v_viewmats ? static_cast<size_t>(nthreads) * C * 12 : 0, S(0));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < N; ++i) {
    S* vm_acc = v_viewmats ? vview_part.data() + static_cast<size_t>(omp_get_thread_num()) * C * 12 : nullptr;
    S gm[3] = {0, 0, 0}, gcov[3][3] = {{0}}; // grads wrt world mean and world covariance
    for (int64_t c = 0; c < C; ++c) {
      const int64_t o = c * N + i;
      if (radii[o] <= 0) continue;
      const Cam<S>& cam = cams[c];
      Proj<S> p;
      project_one(cam, means + 3 * i, quats + 4 * i, scales + 3 * i, eps2d, p);
      // conic = inverse(blurred cov2d): dL/dcov2d = -Q G Q with G the symmetric gradient of the conic.
      const S id = S(1) / p.det;
      const S Q[2][2] = {{p.c2[2] * id, -p.c2[1] * id}, {-p.c2[1] * id, p.c2[0] * id}};
      const S* vc = v_conics + 3 * o;
      const S G[2][2] = {{vc[0], S(0.5) * vc[1]}, {S(0.5) * vc[1], vc[2]}};
      S QG[2][2], V2[2][2];
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) QG[a][b] = Q[a][0] * G[0][b] + Q[a][1] * G[1][b];
      for (int a = 0; a < 2; ++a)
        for (int b = 0; b < 2; ++b) V2[a][b] = -(QG[a][0] * Q[0][b] + QG[a][1] * Q[1][b]);
      if (v_comps) {
        // comp = sqrt(det(cov)/det(cov + eps I)); d(det ratio)/dcov = (1 - comp^2) Q - eps det(Q) I.
        const S comp = comps[o];
        // Exact derivative (gsplat adds 1e-6 to comp here, a ~1e-6 relative deviation); comp == 0 only when the
        // unblurred 2D covariance is singular, where the sqrt is not differentiable: pass no gradient.
        const S k = comp > 0 ? v_comps[o] * S(0.5) / comp : S(0);
        const S detQ = Q[0][0] * Q[1][1] - Q[0][1] * Q[1][0];
        const S one_m = S(1) - comp * comp;
        for (int a = 0; a < 2; ++a)
          for (int b = 0; b < 2; ++b) V2[a][b] += k * (one_m * Q[a][b] - (a == b ? eps2d * detQ : S(0)));
      }
      // cov2d = J covc J^T, means2d = (fx x/z + cx, fy y/z + cy)
      const S x = p.mc[0], y = p.mc[1], z = p.mc[2];
      const S rz = S(1) / z, rz2 = rz * rz, rz3 = rz2 * rz;
      const S vmx = v_means2d[2 * o], vmy = v_means2d[2 * o + 1];
      S gmc[3] = {cam.fx * rz * vmx, cam.fy * rz * vmy, -(cam.fx * x * vmx + cam.fy * y * vmy) * rz2 + v_depths[o]};
      S gcovc[3][3];  // J^T V2 J
      S V2J[2][3];
      for (int a = 0; a < 2; ++a)
        for (int j = 0; j < 3; ++j) V2J[a][j] = V2[a][0] * p.J[0][j] + V2[a][1] * p.J[1][j];
      for (int i2 = 0; i2 < 3; ++i2)
        for (int j = 0; j < 3; ++j) gcovc[i2][j] = p.J[0][i2] * V2J[0][j] + p.J[1][i2] * V2J[1][j];
      // dL/dJ = (V2 + V2^T) J covc
      S gJ[2][3];
      for (int a = 0; a < 2; ++a)
        for (int j = 0; j < 3; ++j) {
          S s = 0;
          for (int k = 0; k < 3; ++k) s += (V2J[a][k]) * p.covc[k][j];
          gJ[a][j] = S(2) * s;
        }
      // J00 = fx/z, J11 = fy/z, J02 = -fx tx/z^2, J12 = -fy ty/z^2 with tx = x (or z * clamp limit).
      const S ux = x * rz, uy = y * rz;
      const S tx = z * std::min(cam.lxp, std::max(-cam.lxn, ux));
      const S ty = z * std::min(cam.lyp, std::max(-cam.lyn, uy));
      gmc[2] += -cam.fx * rz2 * gJ[0][0] - cam.fy * rz2 * gJ[1][1];
      if (!p.clamp_x) {
        gmc[0] += -cam.fx * rz2 * gJ[0][2];
        gmc[2] += S(2) * cam.fx * tx * rz3 * gJ[0][2];
      } else {
        gmc[2] += cam.fx * tx * rz3 * gJ[0][2];
      }
      if (!p.clamp_y) {
        gmc[1] += -cam.fy * rz2 * gJ[1][2];
        gmc[2] += S(2) * cam.fy * ty * rz3 * gJ[1][2];
      } else {
        gmc[2] += cam.fy * ty * rz3 * gJ[1][2];
      }
      // world -> camera: mc = R m + t, covc = R cov R^T
      for (int j = 0; j < 3; ++j) gm[j] += cam.R[0][j] * gmc[0] + cam.R[1][j] * gmc[1] + cam.R[2][j] * gmc[2];
      S GR[3][3];  // gcovc R
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) GR[a][b] = gcovc[a][0] * cam.R[0][b] + gcovc[a][1] * cam.R[1][b] + gcovc[a][2] * cam.R[2][b];
      for (int a = 0; a < 3; ++a)
        for (int b = 0; b < 3; ++b) gcov[a][b] += cam.R[0][a] * GR[0][b] + cam.R[1][a] * GR[1][b] + cam.R[2][a] * GR[2][b];
      if (vm_acc) {
        S* g = vm_acc + 12 * c;
        const S* m = means + 3 * i;
        // dL/dR = gmc m^T + (gcovc + gcovc^T) R cov ; dL/dt = gmc
        S RC[3][3];
        for (int a = 0; a < 3; ++a)
          for (int b = 0; b < 3; ++b) RC[a][b] = cam.R[a][0] * p.cov[0][b] + cam.R[a][1] * p.cov[1][b] + cam.R[a][2] * p.cov[2][b];
        for (int a = 0; a < 3; ++a) {
          for (int b = 0; b < 3; ++b) {
            S s = gmc[a] * m[b];
            for (int k = 0; k < 3; ++k) s += (gcovc[a][k] + gcovc[k][a]) * RC[k][b];
            g[a * 4 + b] += s;
          }
          g[a * 4 + 3] += gmc[a];
        }
      }
    }
    S* vmn = v_means + 3 * i;
    for (int j = 0; j < 3; ++j) vmn[j] = gm[j];
    // cov = M M^T, M = Rq diag(s): dL/dM = (G + G^T) M
    const S* sc = scales + 3 * i;
    Proj<S> p0;
    quat_to_rot(quats + 4 * i, p0.q, p0.Rq, p0.inv_qn);
    S gM[3][3], gRq[3][3];
    for (int a = 0; a < 3; ++a)
      for (int b = 0; b < 3; ++b) {
        S s = 0;
        for (int k = 0; k < 3; ++k) s += (gcov[a][k] + gcov[k][a]) * p0.Rq[k][b] * sc[b];
        gM[a][b] = s;
        gRq[a][b] = s * sc[b];
      }
    S* vs = v_scales + 3 * i;
    for (int b = 0; b < 3; ++b) vs[b] = gM[0][b] * p0.Rq[0][b] + gM[1][b] * p0.Rq[1][b] + gM[2][b] * p0.Rq[2][b];
    const S w = p0.q[0], x = p0.q[1], y = p0.q[2], z = p0.q[3];
    const S (*Gq)[3] = gRq;
    S gq[4];
    gq[0] = 2 * (-z * Gq[0][1] + y * Gq[0][2] + z * Gq[1][0] - x * Gq[1][2] - y * Gq[2][0] + x * Gq[2][1]);
    gq[1] = 2 * (y * Gq[0][1] + z * Gq[0][2] + y * Gq[1][0] - 2 * x * Gq[1][1] - w * Gq[1][2] + z * Gq[2][0] +
                 w * Gq[2][1] - 2 * x * Gq[2][2]);
    gq[2] = 2 * (-2 * y * Gq[0][0] + x * Gq[0][1] + w * Gq[0][2] + x * Gq[1][0] + z * Gq[1][2] - w * Gq[2][0] +
                 z * Gq[2][1] - 2 * y * Gq[2][2]);
    gq[3] = 2 * (-2 * z * Gq[0][0] - w * Gq[0][1] + x * Gq[0][2] + w * Gq[1][0] - 2 * z * Gq[1][1] + y * Gq[1][2] +
                 x * Gq[2][0] + y * Gq[2][1]);
    // q = q_raw / |q_raw|
    const S dot = w * gq[0] + x * gq[1] + y * gq[2] + z * gq[3];
    S* vq = v_quats + 4 * i;
    for (int k = 0; k < 4; ++k) vq[k] = (gq[k] - p0.q[k] * dot) * p0.inv_qn;
  }
  if (v_viewmats) {
    for (int64_t c = 0; c < C; ++c) {
      S* out = v_viewmats + 16 * c;
      for (int k = 0; k < 16; ++k) out[k] = 0;
      for (int t = 0; t < nthreads; ++t)
        for (int k = 0; k < 12; ++k) out[k] += vview_part[(static_cast<size_t>(t) * C + c) * 12 + k];
    }
  }
}

#define INSTANTIATE(S)                                                                                         \
  template void project_fwd<S>(int64_t, int64_t, const S*, const S*, const S*, const S*, const S*, int, int, S, \
                               S, S, int32_t*, S*, S*, S*, S*);                                                \
  template void project_bwd<S>(int64_t, int64_t, const S*, const S*, const S*, const S*, const S*, int, int, S, \
                               const int32_t*, const S*, const S*, const S*, const S*, const S*, S*, S*, S*, S*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace tttlrm
