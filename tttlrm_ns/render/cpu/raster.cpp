// Tile binning and front-to-back alpha compositing (forward + exact backward), gsplat 1.4.0 semantics:
// pixel centres at +0.5, alpha = min(0.999, o * exp(-sigma)), skip sigma < 0 or alpha < 1/255, a pixel stops
// before the Gaussian that would bring its transmittance to <= 1e-4.
//
// CPU-specific design: one task per (camera, tile) scheduled dynamically over OpenMP threads; inside a tile each
// Gaussian only visits the pixels of the bounding box of its alpha >= 1/255 ellipse (sigma <= log(255 o)),
// padded by a pixel so that rounding can never drop a pixel the exact test would keep; the per-pixel test itself
// is the gsplat one, so results are unchanged. The backward pass walks each tile back to front and accumulates
// per-Gaussian gradients in per-thread buffers (no atomics), reduced at the end.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <type_traits>
#include <vector>

#include "kernels.h"

namespace tttlrm {
namespace {

template <typename S>
struct Consts {
  static constexpr S alpha_min = S(1) / S(255);
  static constexpr S alpha_max = S(0.999);
  static constexpr S t_min = S(1e-4);
};

struct Box {
  int x0, x1, y0, y1;  // tile-local, [x0, x1) x [y0, y1); empty when x0 >= x1 or y0 >= y1
};

// Pixels of the tile [tx0, tx0+tw) x [ty0, ty0+th) whose centres may satisfy sigma <= log(255 o).
template <typename S>
inline Box alpha_box(S mx, S my, S a, S b, S c, S o, int tx0, int ty0, int tw, int th) {
  Box full{0, tw, 0, th};
  const S detq = a * c - b * b;
  const S t = std::log(S(255) * o);
  if (!(detq > 0) || !(a > 0) || !(c > 0) || !std::isfinite(t)) return full;
  // Extent of {d : 0.5 d^T Q d <= t} along x is sqrt(2 t (Q^-1)_xx) with (Q^-1)_xx = c / det(Q).
  const S ex = std::sqrt(S(2) * std::max(t, S(0)) * c / detq) * S(1.001) + S(1);
  const S ey = std::sqrt(S(2) * std::max(t, S(0)) * a / detq) * S(1.001) + S(1);
  if (!std::isfinite(ex) || !std::isfinite(ey)) return full;
  // Pixel x (centre x + 0.5) can be inside iff mx - ex <= x + 0.5 <= mx + ex.
  const S lx = std::ceil(mx - ex - S(0.5)) - tx0, hx = std::floor(mx + ex - S(0.5)) - tx0 + 1;
  const S ly = std::ceil(my - ey - S(0.5)) - ty0, hy = std::floor(my + ey - S(0.5)) - ty0 + 1;
  Box bx;
  bx.x0 = static_cast<int>(std::min<S>(std::max<S>(lx, 0), tw));
  bx.x1 = static_cast<int>(std::min<S>(std::max<S>(hx, 0), tw));
  bx.y0 = static_cast<int>(std::min<S>(std::max<S>(ly, 0), th));
  bx.y1 = static_cast<int>(std::min<S>(std::max<S>(hy, 0), th));
  return bx;
}

inline uint32_t float_key(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);  // monotone map float -> uint32
}

// Stable LSD radix sort of idx by key (8 bits per pass).
void radix_sort(std::vector<uint32_t>& key, std::vector<int32_t>& idx) {
  const size_t n = key.size();
  std::vector<uint32_t> k2(n);
  std::vector<int32_t> i2(n);
  for (int shift = 0; shift < 32; shift += 8) {
    size_t cnt[257] = {0};
    for (size_t i = 0; i < n; ++i) ++cnt[((key[i] >> shift) & 255u) + 1];
    if (cnt[1 + ((key[0] >> shift) & 255u)] == n) continue;  // all equal in this digit
    for (int b = 0; b < 256; ++b) cnt[b + 1] += cnt[b];
    for (size_t i = 0; i < n; ++i) {
      const size_t d = cnt[(key[i] >> shift) & 255u]++;
      k2[d] = key[i];
      i2[d] = idx[i];
    }
    key.swap(k2);
    idx.swap(i2);
  }
}

}  // namespace

template <typename S>
void bin_gaussians(int64_t C, int64_t N, const S* means2d, const int32_t* radii, const S* depths, int tile_size,
                   int tiles_x, int tiles_y, std::vector<int64_t>& offsets, std::vector<int32_t>& ids) {
  const int64_t n_tiles = static_cast<int64_t>(tiles_x) * tiles_y;
  offsets.assign(C * n_tiles + 1, 0);
  std::vector<std::vector<int32_t>> order(C);
  std::vector<std::vector<int32_t>> rect(C);  // per visible Gaussian: x0, x1, y0, y1 in tiles
  const S ts = static_cast<S>(tile_size);
  for (int64_t c = 0; c < C; ++c) {
    std::vector<int32_t>& ord = order[c];
    ord.reserve(N);
    for (int64_t i = 0; i < N; ++i)
      if (radii[c * N + i] > 0) ord.push_back(static_cast<int32_t>(i));
    // Depth order, ties by index (stable sort of an index-ordered list).
    if constexpr (std::is_same<S, float>::value) {
      std::vector<uint32_t> key(ord.size());
      for (size_t j = 0; j < ord.size(); ++j) key[j] = float_key(depths[c * N + ord[j]]);
      if (!ord.empty()) radix_sort(key, ord);
    } else {
      std::stable_sort(ord.begin(), ord.end(),
                       [&](int32_t a, int32_t b) { return depths[c * N + a] < depths[c * N + b]; });
    }
    std::vector<int32_t>& rc = rect[c];
    rc.resize(4 * ord.size());
    int64_t* cnt = offsets.data() + 1 + c * n_tiles;
    for (size_t j = 0; j < ord.size(); ++j) {
      const int64_t o = c * N + ord[j];
      const S tx = means2d[2 * o] / ts, ty = means2d[2 * o + 1] / ts;
      const S tr = static_cast<S>(radii[o]) / ts;
      auto clampi = [](S v, int hi) { return static_cast<int32_t>(std::min<S>(std::max<S>(v, 0), hi)); };
      const int32_t x0 = clampi(std::floor(tx - tr), tiles_x), x1 = clampi(std::ceil(tx + tr), tiles_x);
      const int32_t y0 = clampi(std::floor(ty - tr), tiles_y), y1 = clampi(std::ceil(ty + tr), tiles_y);
      rc[4 * j] = x0; rc[4 * j + 1] = x1; rc[4 * j + 2] = y0; rc[4 * j + 3] = y1;
      for (int32_t y = y0; y < y1; ++y)
        for (int32_t x = x0; x < x1; ++x) ++cnt[static_cast<int64_t>(y) * tiles_x + x];
    }
  }
  for (int64_t t = 0; t < C * n_tiles; ++t) offsets[t + 1] += offsets[t];
  ids.resize(offsets[C * n_tiles]);
  std::vector<int64_t> cursor(offsets.begin(), offsets.end() - 1);
  for (int64_t c = 0; c < C; ++c) {
    const std::vector<int32_t>& ord = order[c];
    const std::vector<int32_t>& rc = rect[c];
    int64_t* cur = cursor.data() + c * n_tiles;
    for (size_t j = 0; j < ord.size(); ++j) {
      const int32_t g = static_cast<int32_t>(c * N + ord[j]);
      for (int32_t y = rc[4 * j + 2]; y < rc[4 * j + 3]; ++y)
        for (int32_t x = rc[4 * j]; x < rc[4 * j + 1]; ++x) ids[cur[static_cast<int64_t>(y) * tiles_x + x]++] = g;
    }
  }
}

template <typename S>
void raster_fwd(int64_t C, int64_t N, int D, const S* means2d, const S* conics, const S* colors,
                const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                const int64_t* offsets, const int32_t* ids, S* out_colors, S* out_alphas, S* t_final,
                int32_t* last_ids) {
  using K = Consts<S>;
  const int64_t n_tiles = static_cast<int64_t>(tiles_x) * tiles_y;
  const int64_t n_tasks = C * n_tiles;
  const int tp = tile_size * tile_size;
#pragma omp parallel
  {
    std::vector<S> T(tp), acc(static_cast<size_t>(tp) * D);
    std::vector<int32_t> last(tp);
    std::vector<uint8_t> done(tp);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t c = task / n_tiles, tile = task % n_tiles;
      const int tx0 = static_cast<int>(tile % tiles_x) * tile_size, ty0 = static_cast<int>(tile / tiles_x) * tile_size;
      const int tw = std::min(tile_size, W - tx0), th = std::min(tile_size, H - ty0);
      const int np = tw * th;
      std::fill(T.begin(), T.begin() + np, S(1));
      std::fill(acc.begin(), acc.begin() + static_cast<size_t>(np) * D, S(0));
      std::fill(last.begin(), last.begin() + np, -1);
      std::fill(done.begin(), done.begin() + np, 0);
      int n_done = 0;
      for (int64_t idx = offsets[task]; idx < offsets[task + 1] && n_done < np; ++idx) {
        const int64_t g = ids[idx];
        const S o = opacities[g];
        if (!(o >= K::alpha_min)) continue;  // alpha <= o everywhere
        const S mx = means2d[2 * g], my = means2d[2 * g + 1];
        const S a = conics[3 * g], b = conics[3 * g + 1], cc = conics[3 * g + 2];
        const Box bx = alpha_box(mx, my, a, b, cc, o, tx0, ty0, tw, th);
        const S* col = colors + g * D;
        for (int yy = bx.y0; yy < bx.y1; ++yy) {
          const S dy = my - (static_cast<S>(ty0 + yy) + S(0.5));
          for (int xx = bx.x0; xx < bx.x1; ++xx) {
            const int p = yy * tw + xx;
            if (done[p]) continue;
            const S dx = mx - (static_cast<S>(tx0 + xx) + S(0.5));
            const S sigma = S(0.5) * (a * dx * dx + cc * dy * dy) + b * dx * dy;
            if (sigma < 0) continue;
            const S alpha = std::min(K::alpha_max, o * std::exp(-sigma));
            if (alpha < K::alpha_min) continue;
            const S next_t = T[p] * (S(1) - alpha);
            if (next_t <= K::t_min) {
              done[p] = 1;
              ++n_done;
              continue;
            }
            const S w = alpha * T[p];
            S* ap = acc.data() + static_cast<size_t>(p) * D;
            for (int k = 0; k < D; ++k) ap[k] += col[k] * w;
            T[p] = next_t;
            last[p] = static_cast<int32_t>(idx);
          }
        }
      }
      for (int yy = 0; yy < th; ++yy)
        for (int xx = 0; xx < tw; ++xx) {
          const int p = yy * tw + xx;
          const int64_t pix = (c * H + ty0 + yy) * W + tx0 + xx;
          for (int k = 0; k < D; ++k)
            out_colors[pix * D + k] = acc[static_cast<size_t>(p) * D + k] + (backgrounds ? T[p] * backgrounds[c * D + k] : S(0));
          out_alphas[pix] = S(1) - T[p];
          t_final[pix] = T[p];
          last_ids[pix] = last[p];
        }
    }
  }
}

template <typename S>
void raster_bwd(int64_t C, int64_t N, int D, const S* means2d, const S* conics, const S* colors,
                const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                const int64_t* offsets, const int32_t* ids, const S* t_final, const int32_t* last_ids,
                const S* v_out_colors, const S* v_out_alphas, S* v_means2d, S* v_conics, S* v_colors,
                S* v_opacities, S* v_means2d_abs) {
  using K = Consts<S>;
  const int64_t n_tiles = static_cast<int64_t>(tiles_x) * tiles_y;
  const int64_t n_tasks = C * n_tiles;
  const int tp = tile_size * tile_size;
  const bool want_abs = v_means2d_abs != nullptr;
  // Per-Gaussian gradient record: means2d (2), conic (3), opacity (1), abs means2d (2), colours (D).
  const int stride = 8 + D;
  const int64_t CN = C * N;
  const int nthreads = omp_get_max_threads();
  std::vector<std::vector<S>> bufs(nthreads);
#pragma omp parallel
  {
    const int tid = omp_get_thread_num();
    std::vector<S>& G = bufs[tid];
    G.assign(static_cast<size_t>(CN) * stride, S(0));
    std::vector<S> T(tp), buf(static_cast<size_t>(tp) * D), vc(static_cast<size_t>(tp) * D), va(tp), tf(tp);
    std::vector<int32_t> last(tp);
    std::vector<S> lg(stride);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t c = task / n_tiles, tile = task % n_tiles;
      const int tx0 = static_cast<int>(tile % tiles_x) * tile_size, ty0 = static_cast<int>(tile / tiles_x) * tile_size;
      const int tw = std::min(tile_size, W - tx0), th = std::min(tile_size, H - ty0);
      int32_t max_last = -1;
      for (int yy = 0; yy < th; ++yy)
        for (int xx = 0; xx < tw; ++xx) {
          const int p = yy * tw + xx;
          const int64_t pix = (c * H + ty0 + yy) * W + tx0 + xx;
          last[p] = last_ids[pix];
          max_last = std::max(max_last, last[p]);
          tf[p] = T[p] = t_final[pix];
          S bgdot = 0;
          for (int k = 0; k < D; ++k) {
            const S v = v_out_colors[pix * D + k];
            vc[static_cast<size_t>(p) * D + k] = v;
            buf[static_cast<size_t>(p) * D + k] = 0;
            if (backgrounds) bgdot += backgrounds[c * D + k] * v;
          }
          // Both the alpha output and the background term depend on alpha_i only through T_final.
          va[p] = v_out_alphas[pix] - bgdot;
        }
      if (max_last < offsets[task]) continue;
      for (int64_t idx = max_last; idx >= offsets[task]; --idx) {
        const int64_t g = ids[idx];
        const S o = opacities[g];
        if (!(o >= K::alpha_min)) continue;
        const S mx = means2d[2 * g], my = means2d[2 * g + 1];
        const S a = conics[3 * g], b = conics[3 * g + 1], cc = conics[3 * g + 2];
        const Box bx = alpha_box(mx, my, a, b, cc, o, tx0, ty0, tw, th);
        const S* col = colors + g * D;
        bool any = false;
        std::fill(lg.begin(), lg.end(), S(0));
        S* lcol = lg.data() + 8;
        for (int yy = bx.y0; yy < bx.y1; ++yy) {
          const S dy = my - (static_cast<S>(ty0 + yy) + S(0.5));
          for (int xx = bx.x0; xx < bx.x1; ++xx) {
            const int p = yy * tw + xx;
            if (last[p] < idx) continue;
            const S dx = mx - (static_cast<S>(tx0 + xx) + S(0.5));
            const S sigma = S(0.5) * (a * dx * dx + cc * dy * dy) + b * dx * dy;
            if (sigma < 0) continue;
            const S vis = std::exp(-sigma);
            const S alpha = std::min(K::alpha_max, o * vis);
            if (alpha < K::alpha_min) continue;
            any = true;
            const S ra = S(1) / (S(1) - alpha);
            T[p] *= ra;  // transmittance in front of this Gaussian
            const S fac = alpha * T[p];
            S* bp = buf.data() + static_cast<size_t>(p) * D;
            const S* vp = vc.data() + static_cast<size_t>(p) * D;
            S v_alpha = 0;
            for (int k = 0; k < D; ++k) {
              lcol[k] += fac * vp[k];
              v_alpha += (col[k] * T[p] - bp[k] * ra) * vp[k];
              bp[k] += col[k] * fac;
            }
            v_alpha += tf[p] * ra * va[p];
            if (o * vis <= K::alpha_max) {
              const S v_sigma = -o * vis * v_alpha;
              const S gx = v_sigma * (a * dx + b * dy), gy = v_sigma * (b * dx + cc * dy);
              lg[0] += gx;
              lg[1] += gy;
              lg[2] += S(0.5) * v_sigma * dx * dx;
              lg[3] += v_sigma * dx * dy;
              lg[4] += S(0.5) * v_sigma * dy * dy;
              lg[5] += vis * v_alpha;
              if (want_abs) {
                lg[6] += std::abs(gx);
                lg[7] += std::abs(gy);
              }
            }
          }
        }
        if (any) {
          S* gp = G.data() + static_cast<size_t>(g) * stride;
          for (int k = 0; k < stride; ++k) gp[k] += lg[k];
        }
      }
    }
#pragma omp barrier
#pragma omp for schedule(static)
    for (int64_t g = 0; g < CN; ++g) {
      S tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int t = 0; t < nthreads; ++t) {
        if (bufs[t].empty()) continue;
        const S* gp = bufs[t].data() + static_cast<size_t>(g) * stride;
        for (int k = 0; k < 8; ++k) tot[k] += gp[k];
      }
      v_means2d[2 * g] = tot[0];
      v_means2d[2 * g + 1] = tot[1];
      v_conics[3 * g] = tot[2];
      v_conics[3 * g + 1] = tot[3];
      v_conics[3 * g + 2] = tot[4];
      v_opacities[g] = tot[5];
      if (want_abs) {
        v_means2d_abs[2 * g] = tot[6];
        v_means2d_abs[2 * g + 1] = tot[7];
      }
      for (int k = 0; k < D; ++k) {
        S s = 0;
        for (int t = 0; t < nthreads; ++t)
          if (!bufs[t].empty()) s += bufs[t][static_cast<size_t>(g) * stride + 8 + k];
        v_colors[g * D + k] = s;
      }
    }
  }
}

#define INSTANTIATE(S)                                                                                          \
  template void bin_gaussians<S>(int64_t, int64_t, const S*, const int32_t*, const S*, int, int, int,            \
                                 std::vector<int64_t>&, std::vector<int32_t>&);                                  \
  template void raster_fwd<S>(int64_t, int64_t, int, const S*, const S*, const S*, const S*, const S*, int, int, \
                              int, int, int, const int64_t*, const int32_t*, S*, S*, S*, int32_t*);              \
  template void raster_bwd<S>(int64_t, int64_t, int, const S*, const S*, const S*, const S*, const S*, int, int, \
                              int, int, int, const int64_t*, const int32_t*, const S*, const int32_t*, const S*, \
                              const S*, S*, S*, S*, S*, S*);
INSTANTIATE(float)
INSTANTIATE(double)

}  // namespace tttlrm
