// Tri-plane sampling on the CPU: bilinear reads of the planes XY, XZ, YZ, summed.
//
// Semantics: exactly F.grid_sample(mode="bilinear", padding_mode="zeros", align_corners=False) per
// plane, plane XY read at (width=x, height=y), XZ at (x, z), YZ at (y, z) (DESIGN.md, "Tri-plane
// axes"; the table lives in rodin/triplane/sampling.py as PLANE_AXES, repeated in kAxes below).
// Non-finite coordinates read zeros from the planes they fall on.
//
// Ops (namespace rodin_triplane, called from rodin/triplane/sampling.py):
//   order(points, batch_index?, B, H, W, C) -> int32 (N,) visiting order, or empty (no reordering)
//   forward(planes, points, batch_index?, order) -> (N, C)
//   backward(grad_out, points, batch_index?, order, B, H, W) -> (B, 3, C, H, W)
// planes: float32 (B, 3, C, H, W), contiguous or channels-last; the kernel reads channels-last
// (B, 3, H, W, C), so that each corner is one contiguous C-vector, copying into a kept workspace
// when needed. points (N, 3) float32; batch_index (N,) int64 or None.
//
// Speed: random points over planes larger than the caches are visited grouped by 3D cell (Morton
// order, a counting sort), their own rows prefetched, outputs written with streaming stores.
// Parallel with at::parallel_for (follows torch.set_num_threads). The backward scatters into private
// per-task buffers that are summed at the end: no data races and, for a given number of threads, a
// deterministic result.
//
// Note: no __restrict__ on point_corners' arguments: GCC 12 at -O3 miscompiled the forward for 4 and
// 8 channels with it (wrong weights); tests/test_sampling.py covers those channel counts.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#if defined(__AVX__)
#include <immintrin.h>
#endif

namespace {

// (width axis, height axis) per plane: XY -> (x, y), XZ -> (x, z), YZ -> (y, z).
constexpr int kAxes[3][2] = {{0, 1}, {0, 2}, {1, 2}};

struct Corners {
  int64_t offset[4];  // element offsets (texel * C) into the channels-last planes
  float weight[4];    // bilinear weights, 0 for corners outside the plane
};

// The four corners of one plane read; returns false when no corner is inside the plane (or the
// coordinate is not finite), true otherwise.
static inline bool plane_corners(float u, float v, int64_t H, int64_t W, int64_t C, int64_t plane_base,
                                 Corners& out) {
  const float ix = ((u + 1.f) * static_cast<float>(W) - 1.f) * 0.5f;
  const float iy = ((v + 1.f) * static_cast<float>(H) - 1.f) * 0.5f;
  // NaN fails both comparisons; beyond these bounds every corner has weight 0.
  if (!(ix > -1.f && ix < static_cast<float>(W) && iy > -1.f && iy < static_cast<float>(H))) return false;
  const float fx0 = std::floor(ix);
  const float fy0 = std::floor(iy);
  const float tx = ix - fx0;
  const float ty = iy - fy0;
  const int64_t x0 = static_cast<int64_t>(fx0);
  const int64_t y0 = static_cast<int64_t>(fy0);
  const int64_t x1 = x0 + 1;
  const int64_t y1 = y0 + 1;
  const float wx0 = x0 >= 0 ? 1.f - tx : 0.f;
  const float wx1 = x1 < W ? tx : 0.f;
  const float wy0 = y0 >= 0 ? 1.f - ty : 0.f;
  const float wy1 = y1 < H ? ty : 0.f;
  const int64_t cx0 = x0 >= 0 ? x0 : 0;
  const int64_t cx1 = x1 < W ? x1 : W - 1;
  const int64_t cy0 = y0 >= 0 ? y0 : 0;
  const int64_t cy1 = y1 < H ? y1 : H - 1;
  const int64_t r0 = plane_base + cy0 * W;
  const int64_t r1 = plane_base + cy1 * W;
  out.offset[0] = (r0 + cx0) * C;
  out.offset[1] = (r0 + cx1) * C;
  out.offset[2] = (r1 + cx0) * C;
  out.offset[3] = (r1 + cx1) * C;
  out.weight[0] = wx0 * wy0;
  out.weight[1] = wx1 * wy0;
  out.weight[2] = wx0 * wy1;
  out.weight[3] = wx1 * wy1;
  return true;
}

// Corners of the three planes for point n; returns a bit mask of the planes that are read. Planes
// that are not read get offsets 0 and weights 0, so callers may also read all 12 corners blindly.
static inline int point_corners(const float* points, const int64_t* batch, int64_t n,
                                int64_t H, int64_t W, int64_t C, Corners* corners) {
  const float* p = points + n * 3;
  const int64_t b = batch ? batch[n] : 0;
  int mask = 0;
  for (int k = 0; k < 3; ++k) {
    const int64_t plane_base = (b * 3 + k) * H * W;
    if (plane_corners(p[kAxes[k][0]], p[kAxes[k][1]], H, W, C, plane_base, corners[k])) {
      mask |= 1 << k;
    } else {
      for (int j = 0; j < 4; ++j) {
        corners[k].offset[j] = 0;
        corners[k].weight[j] = 0.f;
      }
    }
  }
  return mask;
}

void check_points(const at::Tensor& points, const std::optional<at::Tensor>& batch_index, int64_t B) {
  TORCH_CHECK(points.device().is_cpu() && points.scalar_type() == at::kFloat && points.dim() == 2 &&
                  points.size(1) == 3 && points.is_contiguous(),
              "points must be a contiguous float32 CPU tensor (N, 3)");
  if (batch_index.has_value()) {
    const at::Tensor& b = *batch_index;
    TORCH_CHECK(b.device().is_cpu() && b.scalar_type() == at::kLong && b.dim() == 1 && b.is_contiguous() &&
                    b.size(0) == points.size(0),
                "batch_index must be a contiguous int64 CPU tensor (N,)");
    if (b.numel() > 0) {
      const auto range = at::aminmax(b);
      TORCH_CHECK(std::get<0>(range).item<int64_t>() >= 0 && std::get<1>(range).item<int64_t>() < B,
                  "batch_index out of range [0, ", B, ")");
    }
  }
}

// ---- workspaces ---------------------------------------------------------------------------------

// A float buffer kept between calls: fresh large allocations cost page faults (about 0.4 ms per MB
// here), more than the kernel itself. Kept only while small enough; one user at a time.
class Workspace {
 public:
  float* get(int64_t n) {
    if (n > capacity_) {
      data_.reset(new float[static_cast<size_t>(n)]);
      capacity_ = n;
    }
    return data_.get();
  }
  void release_if_large() {
    if (capacity_ > kKeep) {
      data_.reset();
      capacity_ = 0;
    }
  }
  std::mutex mutex;

 private:
  static constexpr int64_t kKeep = int64_t{1} << 26;  // floats (256 MiB)
  std::unique_ptr<float[]> data_;
  int64_t capacity_ = 0;
};

Workspace& forward_workspace() {
  static Workspace w;
  return w;
}
Workspace& backward_workspace() {
  static Workspace w;
  return w;
}

// ---- locality order ---------------------------------------------------------------------------

// Random points read corners all over planes that do not fit in cache; visiting them grouped by a
// coarse 3D cell (in Morton order) turns most reads into cache hits. A counting sort: O(N).
static inline uint32_t spread3(uint32_t v) {  // bits b -> 3b, for v < 1024
  v = (v | (v << 16)) & 0x030000FFu;
  v = (v | (v << 8)) & 0x0300F00Fu;
  v = (v | (v << 4)) & 0x030C30C3u;
  v = (v | (v << 2)) & 0x09249249u;
  return v;
}

static inline int64_t cell_of(float t, int64_t G) {
  const float f = (t + 1.f) * 0.5f * static_cast<float>(G);
  if (!(f > 0.f)) return 0;  // also NaN
  if (f >= static_cast<float>(G)) return G - 1;
  return static_cast<int64_t>(f);
}

at::Tensor locality_order(const at::Tensor& points, const std::optional<at::Tensor>& batch_index, int64_t B,
                          int64_t H, int64_t W, int64_t C) {
  check_points(points, batch_index, B);
  const int64_t N = points.size(0);
  const int64_t table_bytes = B * 3 * H * W * C * 4;
  auto empty = at::empty({0}, points.options().dtype(at::kInt));
  // Small planes stay in cache anyway; few points do not repay the sort.
  if (N < 8192 || table_bytes < (int64_t{4} << 20) || N > (int64_t{1} << 30)) return empty;
  int64_t G = 1;
  while (G < 64 && G * 2 * 4 <= std::max(H, W)) G *= 2;  // cells of about 4 texels
  while (G > 1 && B * G * G * G > 2 * N) G /= 2;
  const int64_t cells = G * G * G;
  const int64_t bins = B * cells;
  const float* p = points.data_ptr<float>();
  const int64_t* bi = batch_index.has_value() ? batch_index->data_ptr<int64_t>() : nullptr;
  std::vector<int32_t> key(static_cast<size_t>(N));
  at::parallel_for(0, N, 1 << 14, [&](int64_t begin, int64_t end) {
    for (int64_t n = begin; n < end; ++n) {
      const float* q = p + 3 * n;
      const uint32_t m = spread3(static_cast<uint32_t>(cell_of(q[0], G))) |
                         (spread3(static_cast<uint32_t>(cell_of(q[1], G))) << 1) |
                         (spread3(static_cast<uint32_t>(cell_of(q[2], G))) << 2);
      key[n] = static_cast<int32_t>((bi ? bi[n] : 0) * cells + m);
    }
  });
  std::vector<int32_t> start(static_cast<size_t>(bins) + 1, 0);
  for (int64_t n = 0; n < N; ++n) ++start[key[n] + 1];
  for (int64_t k = 0; k < bins; ++k) start[k + 1] += start[k];
  at::Tensor order = at::empty({N}, points.options().dtype(at::kInt));
  int32_t* o = order.data_ptr<int32_t>();
  for (int64_t n = 0; n < N; ++n) o[start[key[n]]++] = static_cast<int32_t>(n);
  return order;
}

// ---- forward ----------------------------------------------------------------------------------

// Points ahead whose rows are prefetched when visiting in locality order.
constexpr int64_t kAhead = 12;

// CS > 0: channels known at compile time (fully unrolled, vectorised); CS == 0: runtime C.
// STREAM: write output rows with non-temporal stores (whole cache lines, no read for ownership):
// in locality order the rows land all over the output, and fetching each line first would double
// the memory traffic.
template <int CS, bool STREAM>
void forward_range(const float* __restrict__ planes, const float* __restrict__ points,
                   const int64_t* __restrict__ batch, const int32_t* __restrict__ order, float* __restrict__ out,
                   int64_t begin, int64_t end, int64_t H, int64_t W, int64_t Cdyn) {
  const int64_t C = CS > 0 ? CS : Cdyn;
  Corners corners[3];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t n = order ? order[i] : i;
    if (order && i + kAhead < end) {  // visiting points out of order: fetch their rows early
      const int64_t m = order[i + kAhead];
      __builtin_prefetch(points + 3 * m);
      if (batch) __builtin_prefetch(batch + m);
      if constexpr (!STREAM)
        for (int64_t c = 0; c < C; c += 16) __builtin_prefetch(out + m * C + c, 1);
    }
    point_corners(points, batch, n, H, W, C, corners);
    const float* __restrict__ r[12];
    float w[12];
    for (int k = 0; k < 3; ++k)
      for (int j = 0; j < 4; ++j) {
        r[4 * k + j] = planes + corners[k].offset[j];
        w[4 * k + j] = corners[k].weight[j];
      }
    float* __restrict__ o = out + n * C;
    // One pass over the channels, all 12 corners at once (zero weights where nothing is read).
#if defined(__AVX__)
    if constexpr (STREAM && CS > 0 && CS % 16 == 0) {
      alignas(32) float acc[CS];
      for (int c = 0; c < CS; ++c) {
        acc[c] = w[0] * r[0][c] + w[1] * r[1][c] + w[2] * r[2][c] + w[3] * r[3][c] + w[4] * r[4][c] +
                 w[5] * r[5][c] + w[6] * r[6][c] + w[7] * r[7][c] + w[8] * r[8][c] + w[9] * r[9][c] +
                 w[10] * r[10][c] + w[11] * r[11][c];
      }
      for (int c = 0; c < CS; c += 8) _mm256_stream_ps(o + c, _mm256_load_ps(acc + c));
      continue;
    }
#endif
    for (int64_t c = 0; c < C; ++c) {
      o[c] = w[0] * r[0][c] + w[1] * r[1][c] + w[2] * r[2][c] + w[3] * r[3][c] + w[4] * r[4][c] +
             w[5] * r[5][c] + w[6] * r[6][c] + w[7] * r[7][c] + w[8] * r[8][c] + w[9] * r[9][c] +
             w[10] * r[10][c] + w[11] * r[11][c];
    }
  }
#if defined(__AVX__)
  if constexpr (STREAM) _mm_sfence();
#endif
}

// Whether forward_range<CS, true> can stream: AVX, rows of whole 64-byte lines, aligned output.
template <int CS>
bool can_stream(const float* out) {
#if defined(__AVX__)
  return CS > 0 && CS % 16 == 0 && reinterpret_cast<uintptr_t>(out) % 64 == 0;
#else
  (void)out;
  return false;
#endif
}

// ---- backward ---------------------------------------------------------------------------------

template <int CS>
void backward_range(const float* __restrict__ grad_out, const float* __restrict__ points,
                    const int64_t* __restrict__ batch, const int32_t* __restrict__ order, float* __restrict__ grad,
                    int64_t begin, int64_t end, int64_t H, int64_t W, int64_t Cdyn) {
  const int64_t C = CS > 0 ? CS : Cdyn;
  Corners corners[3];
  for (int64_t i = begin; i < end; ++i) {
    const int64_t n = order ? order[i] : i;
    if (order && i + kAhead < end) {
      const int64_t m = order[i + kAhead];
      __builtin_prefetch(points + 3 * m);
      if (batch) __builtin_prefetch(batch + m);
      for (int64_t c = 0; c < C; c += 16) __builtin_prefetch(grad_out + m * C + c);
    }
    const int mask = point_corners(points, batch, n, H, W, C, corners);
    const float* __restrict__ g = grad_out + n * C;
    for (int k = 0; k < 3; ++k) {
      if (!(mask >> k & 1)) continue;
      const Corners& q = corners[k];
      for (int j = 0; j < 4; ++j) {
        const float w = q.weight[j];
        float* __restrict__ dst = grad + q.offset[j];
        for (int64_t c = 0; c < C; ++c) dst[c] += w * g[c];
      }
    }
  }
}

template <typename F>
void dispatch_channels(int64_t C, F&& f) {
  switch (C) {
    case 4: f(std::integral_constant<int, 4>{}); break;
    case 8: f(std::integral_constant<int, 8>{}); break;
    case 16: f(std::integral_constant<int, 16>{}); break;
    case 32: f(std::integral_constant<int, 32>{}); break;
    case 48: f(std::integral_constant<int, 48>{}); break;
    case 64: f(std::integral_constant<int, 64>{}); break;
    default: f(std::integral_constant<int, 0>{}); break;
  }
}

// Point ranges per task, at least this many points each.
constexpr int64_t kGrain = 1024;

const int32_t* order_pointer(const at::Tensor& order, int64_t N) {
  if (order.numel() == 0) return nullptr;
  TORCH_CHECK(order.device().is_cpu() && order.scalar_type() == at::kInt && order.dim() == 1 &&
                  order.size(0) == N && order.is_contiguous(),
              "order must be an int32 permutation of the points (or empty)");
  return order.data_ptr<int32_t>();
}

// Whether planes (B, 3, C, H, W) are stored channels-last, i.e. as a contiguous (B, 3, H, W, C).
bool is_channels_last(const at::Tensor& planes) {
  const int64_t C = planes.size(2), H = planes.size(3), W = planes.size(4);
  return planes.stride(2) == 1 && planes.stride(4) == C && planes.stride(3) == W * C &&
         planes.stride(1) == H * W * C && (planes.size(0) == 1 || planes.stride(0) == 3 * H * W * C);
}

at::Tensor triplane_forward(const at::Tensor& planes, const at::Tensor& points,
                            const std::optional<at::Tensor>& batch_index, const at::Tensor& order) {
  TORCH_CHECK(planes.device().is_cpu() && planes.scalar_type() == at::kFloat && planes.dim() == 5 &&
                  planes.size(1) == 3 && (planes.is_contiguous() || is_channels_last(planes)),
              "planes must be a float32 CPU tensor (B, 3, C, H, W), contiguous or channels-last");
  const int64_t B = planes.size(0), C = planes.size(2), H = planes.size(3), W = planes.size(4);
  check_points(points, batch_index, B);
  const int64_t N = points.size(0);
  at::Tensor out = at::empty({N, C}, planes.options());
  if (N == 0) return out;
  if (C == 0 || H == 0 || W == 0 || B == 0) return out.zero_();
  const int32_t* ord = order_pointer(order, N);
  Workspace& ws = forward_workspace();
  std::lock_guard<std::mutex> lock(ws.mutex);
  const int64_t HW = H * W;
  const float* cl = planes.data_ptr<float>();
  if (!is_channels_last(planes)) {
    // Channels-last copy (B, 3, H, W, C): each corner becomes one contiguous C-vector.
    float* copy = ws.get(B * 3 * HW * C);
    const float* src = planes.data_ptr<float>();
    at::parallel_for(0, B * 3 * H, 16, [&](int64_t r0, int64_t r1) {
      constexpr int64_t kTile = 16;  // texels per tile: one cache line from each channel row
      std::vector<float> tile(static_cast<size_t>(kTile * C));
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t plane = r / H, h = r % H;
        const float* s = src + plane * C * HW + h * W;
        float* d = copy + (plane * HW + h * W) * C;
        for (int64_t w0 = 0; w0 < W; w0 += kTile) {
          const int64_t n = std::min(kTile, W - w0);
          for (int64_t c = 0; c < C; ++c) {
            const float* sc = s + c * HW + w0;
            for (int64_t j = 0; j < n; ++j) tile[j * C + c] = sc[j];
          }
          std::memcpy(d + w0 * C, tile.data(), sizeof(float) * static_cast<size_t>(n * C));
        }
      }
    });
    cl = copy;
  }
  const float* pt = points.data_ptr<float>();
  const int64_t* bi = batch_index.has_value() ? batch_index->data_ptr<int64_t>() : nullptr;
  float* o = out.data_ptr<float>();
  dispatch_channels(C, [&](auto cs) {
    constexpr int CS = decltype(cs)::value;
    const bool stream = ord != nullptr && can_stream<CS>(o);
    at::parallel_for(0, N, kGrain, [&](int64_t begin, int64_t end) {
      if (stream)
        forward_range<CS, true>(cl, pt, bi, ord, o, begin, end, H, W, C);
      else
        forward_range<CS, false>(cl, pt, bi, ord, o, begin, end, H, W, C);
    });
  });
  ws.release_if_large();
  return out;
}

at::Tensor triplane_backward(const at::Tensor& grad_out, const at::Tensor& points,
                             const std::optional<at::Tensor>& batch_index, const at::Tensor& order, int64_t B,
                             int64_t H, int64_t W) {
  check_points(points, batch_index, B);
  const int64_t N = points.size(0);
  TORCH_CHECK(grad_out.device().is_cpu() && grad_out.scalar_type() == at::kFloat && grad_out.dim() == 2 &&
                  grad_out.size(0) == N && grad_out.is_contiguous(),
              "grad_out must be a contiguous float32 CPU tensor (N, C)");
  const int64_t C = grad_out.size(1);
  const int64_t HW = H * W;
  const int64_t table = B * 3 * HW * C;
  if (N == 0 || table == 0) return at::zeros({B, 3, C, H, W}, grad_out.options());
  const int32_t* ord = order_pointer(order, N);
  // Private buffers, one per task, summed at the end. Each buffer costs zeroing and summing
  // `table` floats while the scatter work N * 12 * C is shared out: split only when that pays.
  const int64_t threads = at::get_num_threads();
  int64_t tasks = 1;
  if (threads > 1 && N >= 2 * kGrain) {
    const double work = static_cast<double>(N) * 12.0 * static_cast<double>(C);
    tasks = std::min<int64_t>(threads, N / kGrain);
    const int64_t cap = std::max<int64_t>(1, (int64_t{1} << 28) / table);  // at most 1 GiB of buffers
    tasks = std::min(tasks, cap);
    while (tasks > 1 && work * (1.0 - 1.0 / static_cast<double>(tasks)) < 2.0 * static_cast<double>(table))
      --tasks;
  }
  Workspace& ws = backward_workspace();
  std::lock_guard<std::mutex> lock(ws.mutex);
  float* buf = ws.get(tasks * table);
  const float* g = grad_out.data_ptr<float>();
  const float* pt = points.data_ptr<float>();
  const int64_t* bi = batch_index.has_value() ? batch_index->data_ptr<int64_t>() : nullptr;
  dispatch_channels(C, [&](auto cs) {
    constexpr int CS = decltype(cs)::value;
    at::parallel_for(0, tasks, 1, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        float* target = buf + t * table;
        std::memset(target, 0, sizeof(float) * static_cast<size_t>(table));
        backward_range<CS>(g, pt, bi, ord, target, N * t / tasks, N * (t + 1) / tasks, H, W, C);
      }
    });
  });
  // Sum the buffers and go back to (B, 3, C, H, W).
  at::Tensor grad = at::empty({B, 3, C, H, W}, grad_out.options());
  float* out = grad.data_ptr<float>();
  at::parallel_for(0, B * 3 * H, 16, [&](int64_t r0, int64_t r1) {
    constexpr int64_t kTile = 16;
    std::vector<float> tile(static_cast<size_t>(kTile * C));
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t plane = r / H, h = r % H;
      float* d = out + plane * C * HW + h * W;
      for (int64_t w0 = 0; w0 < W; w0 += kTile) {
        const int64_t n = std::min(kTile, W - w0) * C;
        const float* first = buf + (plane * HW + h * W + w0) * C;
        float* __restrict__ acc = tile.data();
        for (int64_t i = 0; i < n; ++i) acc[i] = first[i];
        for (int64_t t = 1; t < tasks; ++t) {
          const float* __restrict__ src = first + t * table;
          for (int64_t i = 0; i < n; ++i) acc[i] += src[i];
        }
        const int64_t texels = n / C;
        for (int64_t c = 0; c < C; ++c)
          for (int64_t j = 0; j < texels; ++j) d[c * HW + w0 + j] = acc[j * C + c];
      }
    }
  });
  ws.release_if_large();
  return grad;
}

}  // namespace

TORCH_LIBRARY(rodin_triplane, m) {
  m.def("order(Tensor points, Tensor? batch_index, int B, int H, int W, int C) -> Tensor");
  m.def("forward(Tensor planes, Tensor points, Tensor? batch_index, Tensor order) -> Tensor");
  m.def("backward(Tensor grad_out, Tensor points, Tensor? batch_index, Tensor order, int B, int H, int W) -> Tensor");
}

TORCH_LIBRARY_IMPL(rodin_triplane, CPU, m) {
  m.impl("order", &locality_order);
  m.impl("forward", &triplane_forward);
  m.impl("backward", &triplane_backward);
}
