// Tile binning and front-to-back alpha compositing (forward + exact backward), gsplat 1.4.0 semantics:
// pixel centres at +0.5, alpha = min(0.999, o * exp(-sigma)), skip sigma < 0 or alpha < 1/255, a pixel stops
// before the Gaussian that would bring its transmittance to <= 1e-4.
//
// CPU-specific design:
// * one task per (camera, tile), scheduled dynamically over OpenMP threads;
// * inside a tile, each Gaussian visits, row by row, only the pixels of its alpha >= 1/255 ellipse
//   (sigma <= log(255 o), slightly inflated and padded by a pixel so rounding never drops a pixel the exact test
//   keeps), widened to groups of 8 pixels; the per-pixel test itself is gsplat's, so results are unchanged;
// * tile state is structure-of-arrays with rows padded to 8 ("dead" pixels never contribute), so every group
//   loop has a constant trip count and vectorises (AVX2 when available); finished rows/spans are skipped via
//   per-row bit masks;
// * the backward pass walks each tile back to front (recovering T by division, as gsplat does, from the stored
//   final transmittance), accumulates per-lane partial sums per Gaussian and adds them once per (Gaussian,
//   tile) into per-thread gradient buffers (no atomics), which are reduced at the end.
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

namespace {

// exp for the compositing loops. float: Cephes-style range reduction + degree-6 polynomial (~1 ulp, like CUDA's
// __expf), written without calls so that `omp simd` loops vectorise; double: std::exp.
inline float fexp(float x) {
  x = std::min(std::max(x, -87.0f), 88.0f);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  const float r = (x - n * 0.693359375f) + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t e = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &e, 4);
  return p * scale;
}
inline double fexp(double x) { return std::exp(x); }

// Per-Gaussian description of the pixels where alpha >= 1/255 is possible: the ellipse
// 0.5 d^T Q d <= t with t = log(255 o), slightly inflated (t * 1.001 + 1e-3) and padded by a pixel so that float
// rounding can never drop a pixel the exact per-pixel test keeps. full = no usable ellipse: visit the whole tile.
template <typename S>
struct Footprint {
  bool full;
  S t2a, detq, a, b;  // 2 a t, det(Q), conic a, b
  int y0, y1;         // tile-local rows [y0, y1)
};

template <typename S>
inline Footprint<S> footprint(S mx, S my, S a, S b, S c, S o, int tx0, int ty0, int tw, int th) {
  Footprint<S> f{true, 0, 0, a, b, 0, th};
  const S detq = a * c - b * b;
  const S t = std::log(S(255) * o) * S(1.001) + S(1e-3);
  if (!(detq > 0) || !(a > 0) || !(c > 0) || !std::isfinite(t) || !std::isfinite(detq)) return f;
  const S ey = std::sqrt(S(2) * t * a / detq) + S(1);
  if (!std::isfinite(ey)) return f;
  const S ly = std::ceil(my - ey - S(0.5)) - ty0, hy = std::floor(my + ey - S(0.5)) - ty0 + 1;
  f.full = false;
  f.t2a = S(2) * a * t;
  f.detq = detq;
  f.y0 = static_cast<int>(std::min<S>(std::max<S>(ly, 0), th));
  f.y1 = static_cast<int>(std::min<S>(std::max<S>(hy, 0), th));
  return f;
}

// Columns [x0, x1) of tile-local row with offset dy = my - pixel_centre_y that may be inside the footprint.
template <typename S>
inline void row_span(const Footprint<S>& f, S mx, S dy, int tx0, int tw, int& x0, int& x1) {
  if (f.full) {
    x0 = 0;
    x1 = tw;
    return;
  }
  const S disc = f.t2a - f.detq * dy * dy;  // a dx^2 + 2 b dy dx + c dy^2 - 2t <= 0 has real roots
  if (!(disc >= 0)) {
    x0 = x1 = 0;
    return;
  }
  const S h = std::sqrt(disc) / f.a, centre = -f.b * dy / f.a;  // dx in [centre - h, centre + h]
  // dx = mx - (x + 0.5)  ->  x in [mx - 0.5 - centre - h, mx - 0.5 - centre + h], padded by one pixel
  const S lo = std::ceil(mx - S(0.5) - centre - h - S(1)) - tx0, hi = std::floor(mx - S(0.5) - centre + h + S(1)) - tx0 + 1;
  x0 = static_cast<int>(std::min<S>(std::max<S>(lo, 0), tw));
  x1 = static_cast<int>(std::min<S>(std::max<S>(hi, 0), tw));
  if (x0 < x1) {
    // Widen to whole 8-pixel groups (tile rows are padded to a multiple of 8 with dead pixels): the group loops
    // have a constant trip count and vectorise fully. Extra pixels are harmless, the exact per-pixel test and
    // the dead-pixel state reject them.
    x0 &= ~7;
    x1 = (x1 + 7) & ~7;
  }
}

constexpr int64_t kPrefetch = 8;

template <typename S>
inline void prefetch_gaussian(int64_t g, const S* means2d, const S* conics, const S* opacities, const S* colors, int D) {
  __builtin_prefetch(means2d + 2 * g);
  __builtin_prefetch(conics + 3 * g);
  __builtin_prefetch(opacities + g);
  __builtin_prefetch(colors + g * D);
}

constexpr int kLanes = 8;  // pixels per group; tile rows are padded to a multiple of this

inline int padded_row(int tile_size) { return (tile_size + kLanes - 1) / kLanes * kLanes; }

// CD > 0: channel count known at compile time; CD == 0: runtime D.
// Tile state is structure-of-arrays with padded rows: pixel (xx, yy) of the tile is p = yy * RS + xx, channel k of
// a per-pixel vector lives at k * NP + p. Pixels with xx >= tw are dead (never composited, never written out).
template <typename S, int CD>
void raster_fwd_impl(int64_t C, int Druntime, const S* means2d, const S* conics, const S* colors, const S* opacities,
                     const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                     const int64_t* offsets, const int32_t* ids, S* out_colors, S* out_alphas, S* t_final,
                     int32_t* last_ids) {
  using K = Consts<S>;
  const int D = CD > 0 ? CD : Druntime;
  const int64_t n_tiles = static_cast<int64_t>(tiles_x) * tiles_y;
  const int64_t n_tasks = C * n_tiles;
  const int RS = padded_row(tile_size);
  const size_t NP = static_cast<size_t>(tile_size) * RS;
  const bool use_mask = RS <= 64;  // bit x of row_mask[y]: pixel done (or dead)
#pragma omp parallel
  {
    std::vector<S> T(NP), acc(NP * D);
    std::vector<int32_t> last(NP), done(NP);
    std::vector<uint64_t> row_mask(tile_size);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t c = task / n_tiles, tile = task % n_tiles;
      const int tx0 = static_cast<int>(tile % tiles_x) * tile_size, ty0 = static_cast<int>(tile / tiles_x) * tile_size;
      const int tw = std::min(tile_size, W - tx0), th = std::min(tile_size, H - ty0);
      const int np = tw * th;
      std::fill(T.begin(), T.end(), S(1));
      std::fill(acc.begin(), acc.end(), S(0));
      std::fill(last.begin(), last.end(), -1);
      for (int yy = 0; yy < tile_size; ++yy) {
        row_mask[yy] = 0;
        for (int xx = 0; xx < RS; ++xx) {
          const bool dead = xx >= tw || yy >= th;
          done[yy * RS + xx] = dead ? 1 : 0;
          if (dead && use_mask) row_mask[yy] |= uint64_t(1) << xx;
        }
      }
      int n_done = 0;
      const int64_t end = offsets[task + 1];
      for (int64_t idx = offsets[task]; idx < end && n_done < np; ++idx) {
        // Gaussians of a tile are scattered in memory (depth order): prefetch a few ahead.
        if (idx + kPrefetch < end) prefetch_gaussian(ids[idx + kPrefetch], means2d, conics, opacities, colors, D);
        const int64_t g = ids[idx];
        const S o = opacities[g];
        if (!(o >= K::alpha_min)) continue;  // alpha <= o everywhere
        const S mx = means2d[2 * g], my = means2d[2 * g + 1];
        const S a = conics[3 * g], b = conics[3 * g + 1], cc = conics[3 * g + 2];
        const Footprint<S> fp = footprint(mx, my, a, b, cc, o, tx0, ty0, tw, th);
        S col[CD > 0 ? CD : 1];
        const S* colp = colors + g * D;
        if constexpr (CD > 0)
          for (int k = 0; k < CD; ++k) col[k] = colp[k];
        const int32_t id32 = static_cast<int32_t>(idx);
        for (int yy = fp.y0; yy < fp.y1; ++yy) {
          const S dy = my - (static_cast<S>(ty0 + yy) + S(0.5));
          int x0, x1;
          row_span(fp, mx, dy, tx0, tw, x0, x1);
          if (fp.full) x1 = (tw + kLanes - 1) / kLanes * kLanes;
          if (x0 >= x1) continue;
          if (use_mask) {
            const uint64_t span = ((x1 - x0 == 64) ? ~uint64_t(0) : ((uint64_t(1) << (x1 - x0)) - 1)) << x0;
            if ((row_mask[yy] & span) == span) continue;
          }
          const int row = yy * RS;
          S* Tr = T.data() + row;
          int32_t* lr = last.data() + row;
          int32_t* dr = done.data() + row;
          int nd = 0;
          for (int xb = x0; xb < x1; xb += kLanes) {
#pragma omp simd reduction(+ : nd)
            for (int xx = xb; xx < xb + kLanes; ++xx) {
              const S dx = mx - (static_cast<S>(tx0 + xx) + S(0.5));
              const S sigma = S(0.5) * (a * dx * dx + cc * dy * dy) + b * dx * dy;
              const S ov = o * fexp(-sigma);
              const S clamp = static_cast<S>(ov > K::alpha_max);
              const S alpha = ov * (S(1) - clamp) + K::alpha_max * clamp;  // exact min(0.999, ov)
              const S Tp = Tr[xx];
              const S next_t = Tp * (S(1) - alpha);
              const bool valid = (dr[xx] == 0) & (sigma >= 0) & (alpha >= K::alpha_min);
              const bool stop = valid & (next_t <= K::t_min);  // pixel done: this Gaussian is excluded
              const bool comp = valid & !stop;
              const S w = comp ? alpha * Tp : S(0);
              for (int k = 0; k < D; ++k) acc[k * NP + row + xx] += (CD > 0 ? col[k] : colp[k]) * w;
              Tr[xx] = comp ? next_t : Tp;
              lr[xx] = comp ? id32 : lr[xx];
              dr[xx] = stop ? 1 : dr[xx];
              nd += stop ? 1 : 0;
            }
          }
          n_done += nd;
          if (nd && use_mask)
            for (int xx = x0; xx < x1; ++xx)
              if (dr[xx]) row_mask[yy] |= uint64_t(1) << xx;
        }
      }
      for (int yy = 0; yy < th; ++yy)
        for (int xx = 0; xx < tw; ++xx) {
          const int p = yy * RS + xx;
          const int64_t pix = (c * H + ty0 + yy) * W + tx0 + xx;
          for (int k = 0; k < D; ++k)
            out_colors[pix * D + k] = acc[k * NP + p] + (backgrounds ? T[p] * backgrounds[c * D + k] : S(0));
          out_alphas[pix] = S(1) - T[p];
          t_final[pix] = T[p];
          last_ids[pix] = last[p];
        }
    }
  }
}

template <typename S, int CD>
void raster_bwd_impl(int64_t C, int64_t N, int Druntime, const S* means2d, const S* conics, const S* colors,
                     const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                     const int64_t* offsets, const int32_t* ids, const S* t_final, const int32_t* last_ids,
                     const S* v_out_colors, const S* v_out_alphas, S* v_means2d, S* v_conics, S* v_colors,
                     S* v_opacities, S* v_means2d_abs) {
  using K = Consts<S>;
  const int D = CD > 0 ? CD : Druntime;
  const int64_t n_tiles = static_cast<int64_t>(tiles_x) * tiles_y;
  const int64_t n_tasks = C * n_tiles;
  const int RS = padded_row(tile_size);
  const size_t NP = static_cast<size_t>(tile_size) * RS;
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
    // buf = colour accumulated behind the current Gaussian, vc = d loss / d colour, va = d loss / d T_final.
    std::vector<S> T(NP), buf(NP * D), vc(NP * D), va(NP), tf(NP);
    std::vector<S> tmp(static_cast<size_t>(RS) * 12);  // per-row scratch
    std::vector<int32_t> last(NP), row_max(tile_size);
    // Per-lane partial sums for the current Gaussian within this tile: colour gradient [D][8] and
    // means2d (2), conic (3), opacity (1), |means2d| (2), active-pixel count (1) as [9][8].
    std::vector<S> lcol(static_cast<size_t>(D) * kLanes), lcol_sum(D), lane(9 * kLanes);
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_tasks; ++task) {
      const int64_t c = task / n_tiles, tile = task % n_tiles;
      const int tx0 = static_cast<int>(tile % tiles_x) * tile_size, ty0 = static_cast<int>(tile / tiles_x) * tile_size;
      const int tw = std::min(tile_size, W - tx0), th = std::min(tile_size, H - ty0);
      std::fill(T.begin(), T.end(), S(0));
      std::fill(tf.begin(), tf.end(), S(0));
      std::fill(va.begin(), va.end(), S(0));
      std::fill(vc.begin(), vc.end(), S(0));
      std::fill(buf.begin(), buf.end(), S(0));
      std::fill(last.begin(), last.end(), -1);
      int32_t max_last = -1;
      for (int yy = 0; yy < th; ++yy) {
        row_max[yy] = -1;
        for (int xx = 0; xx < tw; ++xx) {
          const int p = yy * RS + xx;
          const int64_t pix = (c * H + ty0 + yy) * W + tx0 + xx;
          last[p] = last_ids[pix];
          row_max[yy] = std::max(row_max[yy], last[p]);
          max_last = std::max(max_last, last[p]);
          tf[p] = T[p] = t_final[pix];
          S bgdot = 0;
          for (int k = 0; k < D; ++k) {
            const S v = v_out_colors[pix * D + k];
            vc[k * NP + p] = v;
            if (backgrounds) bgdot += backgrounds[c * D + k] * v;
          }
          // The alpha output and the background term depend on alpha_i only through T_final.
          va[p] = v_out_alphas[pix] - bgdot;
        }
      }
      const int64_t begin = offsets[task];
      if (max_last < begin) continue;
      for (int64_t idx = max_last; idx >= begin; --idx) {
        if (idx - kPrefetch >= begin) {
          const int64_t gn = ids[idx - kPrefetch];
          prefetch_gaussian(gn, means2d, conics, opacities, colors, D);
          __builtin_prefetch(G.data() + static_cast<size_t>(gn) * stride, 1);
        }
        const int64_t g = ids[idx];
        const S o = opacities[g];
        if (!(o >= K::alpha_min)) continue;
        const S mx = means2d[2 * g], my = means2d[2 * g + 1];
        const S a = conics[3 * g], b = conics[3 * g + 1], cc = conics[3 * g + 2];
        const Footprint<S> fp = footprint(mx, my, a, b, cc, o, tx0, ty0, tw, th);
        S col[CD > 0 ? CD : 1];
        const S* colp = colors + g * D;
        if constexpr (CD > 0)
          for (int k = 0; k < CD; ++k) col[k] = colp[k];
        const int32_t id32 = static_cast<int32_t>(idx);
        std::fill(lcol.begin(), lcol.end(), S(0));
        std::fill(lane.begin(), lane.end(), S(0));
        for (int yy = fp.y0; yy < fp.y1; ++yy) {
          if (row_max[yy] < id32) continue;  // no pixel of this row reaches this deep
          const S dy = my - (static_cast<S>(ty0 + yy) + S(0.5));
          int x0, x1;
          row_span(fp, mx, dy, tx0, tw, x0, x1);
          if (fp.full) x1 = (tw + kLanes - 1) / kLanes * kLanes;
          if (x0 >= x1) continue;
          const int row = yy * RS;
          S* Tr = T.data() + row;
          const int32_t* lr = last.data() + row;
          const S* tfr = tf.data() + row;
          const S* var = va.data() + row;
          // Three passes over the row span: (1) alpha, transmittance, weights; (2) per channel, the
          // d loss / d alpha terms and the behind-colour buffer; (3) gradients of sigma's inputs.
          S *fr = tmp.data(), *um = fr + RS, *ura = um + RS, *utn = ura + RS, *uva = utn + RS, *uvis = uva + RS;
          for (int xb = x0; xb < x1; xb += kLanes) {
#pragma omp simd
            for (int xx = xb; xx < xb + kLanes; ++xx) {
              const S dx = mx - (static_cast<S>(tx0 + xx) + S(0.5));
              const S sigma = S(0.5) * (a * dx * dx + cc * dy * dy) + b * dx * dy;
              const S vis = fexp(-sigma);
              const S ov = o * vis;
              const S clamp = static_cast<S>(ov > K::alpha_max);
              const S alpha = ov * (S(1) - clamp) + K::alpha_max * clamp;  // exact min(0.999, ov)
              const bool m = (lr[xx] >= id32) & (sigma >= 0) & (alpha >= K::alpha_min);
              const S ra = S(1) / (S(1) - alpha);
              const S Told = Tr[xx];
              const S Tn = Told * ra;  // transmittance in front of this Gaussian
              Tr[xx] = m ? Tn : Told;
              fr[xx] = m ? alpha * Tn : S(0);
              um[xx] = m ? S(1) : S(0);
              ura[xx] = ra;
              utn[xx] = Tn;
              uvis[xx] = vis;
              uva[xx] = tfr[xx] * ra * var[xx];
            }
          }
          // Channel pass and gradient sums accumulate per lane (horizontal sums once per Gaussian, below).
          for (int k = 0; k < D; ++k) {
            const S ck = CD > 0 ? col[k] : colp[k];
            S* bq = buf.data() + k * NP + row;
            const S* vq = vc.data() + k * NP + row;
            S* lk = lcol.data() + k * kLanes;
            for (int xb = x0; xb < x1; xb += kLanes) {
#pragma omp simd
              for (int j = 0; j < kLanes; ++j) {
                const int xx = xb + j;
                uva[xx] += (ck * utn[xx] - bq[xx] * ura[xx]) * vq[xx];
                bq[xx] += ck * fr[xx];
                lk[j] += fr[xx] * vq[xx];
              }
            }
          }
          for (int xb = x0; xb < x1; xb += kLanes) {
#pragma omp simd
            for (int j = 0; j < kLanes; ++j) {
              const int xx = xb + j;
              const S dx = mx - (static_cast<S>(tx0 + xx) + S(0.5));
              const S vis = uvis[xx];
              // 0/1 mask; a clamped alpha (o * vis > 0.999) passes no gradient to o and sigma
              const S mg = um[xx] * static_cast<S>(o * vis <= K::alpha_max);
              const S v_sigma = -o * vis * uva[xx] * mg;
              const S ggx = v_sigma * (a * dx + b * dy), ggy = v_sigma * (b * dx + cc * dy);
              lane[0 * kLanes + j] += ggx;
              lane[1 * kLanes + j] += ggy;
              lane[2 * kLanes + j] += S(0.5) * v_sigma * dx * dx;
              lane[3 * kLanes + j] += v_sigma * dx * dy;
              lane[4 * kLanes + j] += S(0.5) * v_sigma * dy * dy;
              lane[5 * kLanes + j] += vis * uva[xx] * mg;
              lane[6 * kLanes + j] += std::abs(ggx);
              lane[7 * kLanes + j] += std::abs(ggy);
              lane[8 * kLanes + j] += um[xx];
            }
          }
        }
        S sums[9];
        for (int q = 0; q < 9; ++q) {
          S t = 0;
          for (int j = 0; j < kLanes; ++j) t += lane[q * kLanes + j];
          sums[q] = t;
        }
        const bool used = sums[8] > 0;
        const S gx = sums[0], gy = sums[1], gc0 = sums[2], gc1 = sums[3], gc2 = sums[4], gop = sums[5];
        const S gax = sums[6], gay = sums[7];
        if (used)
          for (int k = 0; k < D; ++k) {
            S t = 0;
            for (int j = 0; j < kLanes; ++j) t += lcol[k * kLanes + j];
            lcol_sum[k] = t;
          }
        if (used) {
          S* gp = G.data() + static_cast<size_t>(g) * stride;
          gp[0] += gx; gp[1] += gy; gp[2] += gc0; gp[3] += gc1; gp[4] += gc2; gp[5] += gop;
          if (want_abs) {
            gp[6] += gax;
            gp[7] += gay;
          }
          for (int k = 0; k < D; ++k) gp[8 + k] += lcol_sum[k];
        }
      }
    }
#pragma omp for schedule(static)
    for (int64_t g = 0; g < CN; ++g) {
      S tot[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (int t = 0; t < nthreads; ++t) {
        if (bufs[t].empty()) continue;
        const S* q = bufs[t].data() + static_cast<size_t>(g) * stride;
        for (int k = 0; k < 8; ++k) tot[k] += q[k];
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

}  // namespace

template <typename S>
void raster_fwd(int64_t C, int64_t N, int D, const S* means2d, const S* conics, const S* colors,
                const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                const int64_t* offsets, const int32_t* ids, S* out_colors, S* out_alphas, S* t_final,
                int32_t* last_ids) {
  (void)N;
#define TTT_FWD(CD)                                                                                              \
  raster_fwd_impl<S, CD>(C, D, means2d, conics, colors, opacities, backgrounds, W, H, tile_size, tiles_x, tiles_y, \
                         offsets, ids, out_colors, out_alphas, t_final, last_ids)
  switch (D) {
    case 1: TTT_FWD(1); break;
    case 2: TTT_FWD(2); break;
    case 3: TTT_FWD(3); break;
    case 4: TTT_FWD(4); break;
    default: TTT_FWD(0); break;
  }
#undef TTT_FWD
}

template <typename S>
void raster_bwd(int64_t C, int64_t N, int D, const S* means2d, const S* conics, const S* colors,
                const S* opacities, const S* backgrounds, int W, int H, int tile_size, int tiles_x, int tiles_y,
                const int64_t* offsets, const int32_t* ids, const S* t_final, const int32_t* last_ids,
                const S* v_out_colors, const S* v_out_alphas, S* v_means2d, S* v_conics, S* v_colors,
                S* v_opacities, S* v_means2d_abs) {
#define TTT_BWD(CD)                                                                                              \
  raster_bwd_impl<S, CD>(C, N, D, means2d, conics, colors, opacities, backgrounds, W, H, tile_size, tiles_x,       \
                         tiles_y, offsets, ids, t_final, last_ids, v_out_colors, v_out_alphas, v_means2d, v_conics, \
                         v_colors, v_opacities, v_means2d_abs)
  switch (D) {
    case 1: TTT_BWD(1); break;
    case 2: TTT_BWD(2); break;
    case 3: TTT_BWD(3); break;
    case 4: TTT_BWD(4); break;
    default: TTT_BWD(0); break;
  }
#undef TTT_BWD
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
