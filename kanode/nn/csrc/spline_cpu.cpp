// Fused B-spline KAN layer on a uniform grid, CPU (float32 / float64).
//
// y[b, o] = sum_i base[o, i] act(x[b, i])
//         + sum_i scale[o, i] sum_j coef[o, i, j] B_j(x[b, i])
//
// One pass per (row, input): find the cell, evaluate the k+1 non-zero bases
// by Horner from the power-basis matrix, and multiply-add them with the k+1
// coefficient rows of that cell, plus the base weight row. Nothing of size
// (batch, in, n_coef) is ever built, and the cost does not depend on the
// grid size.
//
// Shapes: x (batch, in); coef (out, in, n_coef); scale, base (out, in);
// shift, inv_h (in,) with s = x * inv_h + shift the position in cells; or,
// with a leading member axis (M independent layers, kanode's ensembles), x
// (M, batch, in), coef (M, out, in, n_coef), scale, base (M, out, in), shift,
// inv_h (M * in,), computed member after member; mat
// (k+1, 2(k+1)): rows p = powers of u, columns = values then h * slopes of
// the k+1 cardinal pieces (kanode.nn.bspline.value_slope_matrix). Outside
// the grid each basis is continued linearly (value + slope at the clamped
// point), as in kanode.nn.bspline.
//
// The coefficients are first packed into a table (in, n_coef + 1, out): row
// j < n_coef holds scale * coef of basis j, row n_coef the base weights, so
// that every multiply-add runs along contiguous outputs.
//
// First-order derivatives only: kanode calls these kernels when no graph of
// the backward is needed and its differentiable PyTorch ops otherwise.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../../csrc/activation.h"

namespace {

using kanode::activation;

constexpr int64_t kMaxWidth = 8;  // spline order <= 7


template <typename T>
struct Grid {
  const T* shift;
  const T* inv_h;
  const T* mat;  // (W, 2 W)
  int64_t grid_size;
  int64_t n_coef;  // grid_size + W - 1

  // Bases at x of input i: returns the cell; fills values and h * slopes.
  template <int W>
  inline int64_t basis(T x, int64_t i, T* values, T* slopes) const {
    const T s = x * inv_h[i] + shift[i];
    T first = std::floor(s);
    if (!(first >= T(0))) first = T(0);  // also catches NaN (which then propagates through u)
    if (first > T(grid_size - 1)) first = T(grid_size - 1);
    const T u = s - first;
    const T uc = std::min(std::max(u, T(0)), T(1));
    T acc[2 * W];
    for (int c = 0; c < 2 * W; ++c) acc[c] = mat[(W - 1) * 2 * W + c];
    for (int p = W - 2; p >= 0; --p)
      for (int c = 0; c < 2 * W; ++c) acc[c] = mat[p * 2 * W + c] + acc[c] * uc;
    const T outside = u - uc;  // zero inside the grid
    for (int j = 0; j < W; ++j) {
      slopes[j] = acc[W + j];
      values[j] = acc[j] + outside * slopes[j];
    }
    return static_cast<int64_t>(first);
  }
};

// A grow-only buffer per slot and dtype, reused across calls: fresh
// allocations of this size cost a page fault per 4 kB on first touch, which
// was a third of the layer's time at in 28, out 64, grid 100. Calls hold the
// GIL (pybind11's default), so they never overlap. Never freed (process-lived).
at::Tensor workspace(int slot, at::IntArrayRef shape, const at::TensorOptions& options) {
  static auto* buffers = new std::vector<at::Tensor>(4);
  at::Tensor& buffer = (*buffers)[slot * 2 + (options.dtype() == at::kDouble ? 1 : 0)];
  int64_t numel = 1;
  for (const auto d : shape) numel *= d;
  if (!buffer.defined() || buffer.numel() < numel) buffer = at::empty({numel}, options);
  return buffer.narrow(0, 0, numel).view(shape);
}

// (in, n_coef + 1, out) packed table (see the header), one input's slab at a
// time so that the strided writes stay in L1.
template <typename T>
void pack_table(const T* cp, const T* sp, const T* bp, int64_t n_out, int64_t n_in, int64_t n_coef, T* tp) {
  at::parallel_for(0, n_in, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      T* slab = tp + i * (n_coef + 1) * n_out;
      for (int64_t o = 0; o < n_out; ++o) {
        const T sc = sp[o * n_in + i];
        const T* c = cp + (o * n_in + i) * n_coef;
        for (int64_t j = 0; j < n_coef; ++j) slab[j * n_out + o] = sc * c[j];
        slab[n_coef * n_out + o] = bp[o * n_in + i];
      }
    }
  });
}

// The table gradient (in, n_coef + 1, out) → gradients of coef, scale, base
// (each written only when its pointer is given).
template <typename T>
void unpack_grad(const T* gt, const T* cp, const T* sp, int64_t n_out, int64_t n_in, int64_t n_coef, T* gc, T* gs,
                 T* gb) {
  at::parallel_for(0, n_in, 1, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const T* slab = gt + i * (n_coef + 1) * n_out;
      for (int64_t o = 0; o < n_out; ++o) {
        const T* c = cp + (o * n_in + i) * n_coef;
        const T sc = sp[o * n_in + i];
        T dscale = T(0);
        for (int64_t j = 0; j < n_coef; ++j) {
          const T g = slab[j * n_out + o];  // d loss / d (scale * coef_j)
          if (gc) gc[(o * n_in + i) * n_coef + j] = g * sc;
          dscale += g * c[j];
        }
        if (gs) gs[o * n_in + i] = dscale;
        if (gb) gb[o * n_in + i] = slab[n_coef * n_out + o];
      }
    }
  });
}

constexpr int64_t kBlock = 32;  // rows per block of the forward pass

// Parallel over blocks of rows. Per block, input by input: the bases of each
// row, then one multiply-add of k + 2 table rows into the output row. Input
// by input keeps that input's table rows (n_coef + 1 rows) in cache for the
// whole block, and the block's output rows stay in L1.
template <typename T, int W>
void forward_kernel(const T* xp, const T* tp, const Grid<T>& grid, int64_t act, int64_t batch, int64_t n_in,
                    int64_t n_out, T* yp) {
  const int64_t n_coef = grid.n_coef, stride = (n_coef + 1) * n_out;
  const int64_t n_blocks = (batch + kBlock - 1) / kBlock;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max<int64_t>(1, kBlock * n_in * (W + 1) * n_out));
  at::parallel_for(0, n_blocks, grain, [&](int64_t k0, int64_t k1) {
    T v[W + 1], slopes[W], da;
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t b0 = k * kBlock, b1 = std::min(batch, b0 + kBlock);
      std::fill(yp + b0 * n_out, yp + b1 * n_out, T(0));
      for (int64_t i = 0; i < n_in; ++i) {
        const T* __restrict__ base_row = tp + i * stride + n_coef * n_out;
        for (int64_t b = b0; b < b1; ++b) {
          const T xv = xp[b * n_in + i];
          const int64_t cell = grid.template basis<W>(xv, i, v, slopes);
          activation<T>(act, xv, v[W], da);
          const T* __restrict__ r = tp + i * stride + cell * n_out;
          T* __restrict__ yb = yp + b * n_out;
#pragma omp simd
          for (int64_t o = 0; o < n_out; ++o) {
            T sum = v[W] * base_row[o];
            for (int j = 0; j < W; ++j) sum += v[j] * r[j * n_out + o];
            yb[o] += sum;
          }
        }
      }
    }
  });
}

// Parallel over inputs: each thread owns the table rows of its inputs, so the
// table gradient needs no reduction across threads (and is deterministic).
// One loop over the outputs does both the x-gradient (a dot product) and the
// table gradient (k + 2 row updates).
template <typename T, int W, bool NEED_X, bool NEED_TABLE>
void backward_pass(const T* gp, const T* xp, const T* tp, const Grid<T>& grid, int64_t act, int64_t batch,
                   int64_t n_in, int64_t n_out, T* gxp, T* gtp) {
  const int64_t n_coef = grid.n_coef, stride = (n_coef + 1) * n_out;
  at::parallel_for(0, n_in, 1, [&](int64_t i0, int64_t i1) {
    T v[W + 1], s[W + 1];
    for (int64_t i = i0; i < i1; ++i) {
      const T inv_h = grid.inv_h[i];
      const T* __restrict__ base_row = tp + i * stride + n_coef * n_out;
      T* __restrict__ g_base_row = NEED_TABLE ? gtp + i * stride + n_coef * n_out : nullptr;
      for (int64_t b = 0; b < batch; ++b) {
        const T xv = xp[b * n_in + i];
        const int64_t cell = grid.template basis<W>(xv, i, v, s);
        activation<T>(act, xv, v[W], s[W]);
        for (int j = 0; j < W; ++j) s[j] *= inv_h;  // d B_j / dx
        const T* __restrict__ g = gp + b * n_out;
        const T* __restrict__ r = tp + i * stride + cell * n_out;
        T* __restrict__ gr = NEED_TABLE ? gtp + i * stride + cell * n_out : nullptr;
        T dot = T(0);
#pragma omp simd reduction(+ : dot)
        for (int64_t o = 0; o < n_out; ++o) {
          const T go = g[o];
          if constexpr (NEED_X) {  // sum_o g[o] (sum_j B_j' row_j[o] + act' base[o])
            T d = s[W] * base_row[o];
            for (int j = 0; j < W; ++j) d += s[j] * r[j * n_out + o];
            dot += go * d;
          }
          if constexpr (NEED_TABLE) {
            for (int j = 0; j < W; ++j) gr[j * n_out + o] += v[j] * go;
            g_base_row[o] += v[W] * go;
          }
        }
        if constexpr (NEED_X) gxp[b * n_in + i] = dot;
      }
    }
  });
}

template <typename T, int W>
void backward_kernel(const T* gp, const T* xp, const T* tp, const Grid<T>& grid, int64_t act, int64_t batch,
                     int64_t n_in, int64_t n_out, T* gxp, T* gtp) {
  if (gxp && gtp) return backward_pass<T, W, true, true>(gp, xp, tp, grid, act, batch, n_in, n_out, gxp, gtp);
  if (gxp) return backward_pass<T, W, true, false>(gp, xp, tp, grid, act, batch, n_in, n_out, gxp, gtp);
  if (gtp) return backward_pass<T, W, false, true>(gp, xp, tp, grid, act, batch, n_in, n_out, gxp, gtp);
}

// The kernels for the runtime width W = k + 1 (unrolled per width).
template <typename T, int W = 2>
void forward_width(int64_t width, const T* xp, const T* tp, const Grid<T>& grid, int64_t act, int64_t batch,
                   int64_t n_in, int64_t n_out, T* yp) {
  if constexpr (W <= kMaxWidth) {
    if (width == W) return forward_kernel<T, W>(xp, tp, grid, act, batch, n_in, n_out, yp);
    return forward_width<T, W + 1>(width, xp, tp, grid, act, batch, n_in, n_out, yp);
  }
  TORCH_CHECK(false, "kanode native spline: spline order must be 1..", kMaxWidth - 1);
}

template <typename T, int W = 2>
void backward_width(int64_t width, const T* gp, const T* xp, const T* tp, const Grid<T>& grid, int64_t act,
                    int64_t batch, int64_t n_in, int64_t n_out, T* gxp, T* gtp) {
  if constexpr (W <= kMaxWidth) {
    if (width == W) return backward_kernel<T, W>(gp, xp, tp, grid, act, batch, n_in, n_out, gxp, gtp);
    return backward_width<T, W + 1>(width, gp, xp, tp, grid, act, batch, n_in, n_out, gxp, gtp);
  }
  TORCH_CHECK(false, "kanode native spline: spline order must be 1..", kMaxWidth - 1);
}

// The member count M (1 without a member axis) after checking every shape.
int64_t check_args(const at::Tensor& x, const at::Tensor& coef, const at::Tensor& scale, const at::Tensor& base,
                   const at::Tensor& shift, const at::Tensor& inv_h, const at::Tensor& mat, int64_t grid_size) {
  TORCH_CHECK(x.device().is_cpu(), "kanode native spline: CPU tensors only");
  const bool members = x.dim() == 3;
  TORCH_CHECK((x.dim() == 2 || members) && coef.dim() == x.dim() + 1 && scale.dim() == x.dim() && mat.dim() == 2,
              "kanode native spline: bad ranks");
  const int64_t n_members = members ? x.size(0) : 1;
  const int64_t width = mat.size(0), n_in = x.size(-1), n_out = coef.size(-3);
  TORCH_CHECK(width >= 2 && width <= kMaxWidth && mat.size(1) == 2 * width, "kanode native spline: bad mat");
  TORCH_CHECK(grid_size >= 1 && coef.size(-2) == n_in && coef.size(-1) == grid_size + width - 1 &&
                  (!members || coef.size(0) == n_members),
              "kanode native spline: coef must be ([M,] out, in, grid_size + order)");
  TORCH_CHECK(scale.sizes() == base.sizes() && scale.size(-2) == n_out && scale.size(-1) == n_in &&
                  (!members || scale.size(0) == n_members),
              "kanode native spline: scale and base must be ([M,] out, in)");
  TORCH_CHECK(shift.numel() == n_members * n_in && inv_h.numel() == n_members * n_in,
              "kanode native spline: bad grid scale");
  for (const auto* t : {&coef, &scale, &base, &shift, &inv_h, &mat})
    TORCH_CHECK(t->scalar_type() == x.scalar_type(), "kanode native spline: dtypes must match");
  return n_members;
}

}  // namespace

// -> y ([M,] batch, out)
at::Tensor layer_forward(const at::Tensor& x_, const at::Tensor& coef_, const at::Tensor& scale_,
                                      const at::Tensor& base_, const at::Tensor& shift_, const at::Tensor& inv_h_,
                                      const at::Tensor& mat_, int64_t grid_size, int64_t act) {
  auto x = x_.contiguous(), coef = coef_.contiguous(), scale = scale_.contiguous(), base = base_.contiguous();
  auto shift = shift_.contiguous(), inv_h = inv_h_.contiguous(), mat = mat_.contiguous();
  const int64_t n_members = check_args(x, coef, scale, base, shift, inv_h, mat, grid_size);
  const int64_t batch = x.size(-2), n_in = x.size(-1), n_out = coef.size(-3), width = mat.size(0);
  const int64_t n_coef = grid_size + width - 1;
  auto y = x.dim() == 3 ? at::empty({n_members, batch, n_out}, x.options()) : at::empty({batch, n_out}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kanode_layer_forward", [&] {
    using T = scalar_t;
    auto table = workspace(0, {n_in, n_coef + 1, n_out}, coef.options());
    for (int64_t m = 0; m < n_members; ++m) {
      const int64_t edges = m * n_out * n_in;
      pack_table<T>(coef.data_ptr<T>() + edges * n_coef, scale.data_ptr<T>() + edges, base.data_ptr<T>() + edges,
                    n_out, n_in, n_coef, table.data_ptr<T>());
      Grid<T> grid{shift.data_ptr<T>() + m * n_in, inv_h.data_ptr<T>() + m * n_in, mat.data_ptr<T>(), grid_size,
                   n_coef};
      forward_width<T>(width, x.data_ptr<T>() + m * batch * n_in, table.data_ptr<T>(), grid, act, batch, n_in,
                       n_out, y.data_ptr<T>() + m * batch * n_out);
    }
  });
  return y;
}

// -> (d/dx ([M,] batch, in), d/dcoef ([M,] out, in, n_coef), d/dscale ([M,] out, in), d/dbase ([M,] out, in));
//    each undefined (None) unless asked for
std::vector<at::Tensor> layer_backward(const at::Tensor& grad_, const at::Tensor& x_, const at::Tensor& coef_,
                                       const at::Tensor& scale_, const at::Tensor& base_, const at::Tensor& shift_,
                                       const at::Tensor& inv_h_, const at::Tensor& mat_, int64_t grid_size,
                                       int64_t act, bool need_x, bool need_coef, bool need_scale, bool need_base) {
  auto grad = grad_.contiguous(), x = x_.contiguous(), coef = coef_.contiguous();
  auto scale = scale_.contiguous(), base = base_.contiguous();
  auto shift = shift_.contiguous(), inv_h = inv_h_.contiguous(), mat = mat_.contiguous();
  const int64_t n_members = check_args(x, coef, scale, base, shift, inv_h, mat, grid_size);
  const int64_t batch = x.size(-2), n_in = x.size(-1), n_out = coef.size(-3), width = mat.size(0);
  const int64_t n_coef = grid_size + width - 1;
  TORCH_CHECK(grad.dim() == x.dim() && grad.size(-2) == batch && grad.size(-1) == n_out &&
                  (x.dim() == 2 || grad.size(0) == n_members) && grad.scalar_type() == x.scalar_type(),
              "kanode native spline: grad must be ([M,] batch, out) of the input's dtype");
  const bool need_table = need_coef || need_scale || need_base;
  at::Tensor g_x = need_x ? at::empty_like(x) : at::Tensor();
  at::Tensor g_coef = need_coef ? at::empty_like(coef) : at::Tensor();
  at::Tensor g_scale = need_scale ? at::empty_like(scale) : at::Tensor();
  at::Tensor g_base = need_base ? at::empty_like(base) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "kanode_layer_backward", [&] {
    using T = scalar_t;
    auto table = workspace(0, {n_in, n_coef + 1, n_out}, coef.options());
    at::Tensor g_table;
    if (need_table) g_table = workspace(1, table.sizes(), table.options());
    for (int64_t m = 0; m < n_members; ++m) {
      const int64_t edges = m * n_out * n_in;
      const T* cp = coef.data_ptr<T>() + edges * n_coef;
      const T* sp = scale.data_ptr<T>() + edges;
      pack_table<T>(cp, sp, base.data_ptr<T>() + edges, n_out, n_in, n_coef, table.data_ptr<T>());
      if (need_table) g_table.zero_();
      Grid<T> grid{shift.data_ptr<T>() + m * n_in, inv_h.data_ptr<T>() + m * n_in, mat.data_ptr<T>(), grid_size,
                   n_coef};
      backward_width<T>(width, grad.data_ptr<T>() + m * batch * n_out, x.data_ptr<T>() + m * batch * n_in,
                        table.data_ptr<T>(), grid, act, batch, n_in, n_out,
                        need_x ? g_x.data_ptr<T>() + m * batch * n_in : nullptr,
                        need_table ? g_table.data_ptr<T>() : nullptr);
      if (need_table)
        unpack_grad<T>(g_table.data_ptr<T>(), cp, sp, n_out, n_in, n_coef,
                       need_coef ? g_coef.data_ptr<T>() + edges * n_coef : nullptr,
                       need_scale ? g_scale.data_ptr<T>() + edges : nullptr,
                       need_base ? g_base.data_ptr<T>() + edges : nullptr);
    }
  });
  return {g_x, g_coef, g_scale, g_base};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &layer_forward, "fused uniform-grid B-spline KAN layer (CPU)");
  m.def("backward", &layer_backward, "its first-order backward (CPU)");
}
