// The training loss of a fixed-step neural-ODE solve, forward and gradient in one call (CPU).
//
// For each member m (in parallel over members) and each of its B initial states:
//
//   f(t, y)  = out_scale[m] * net_m(in_weight[m] * y + in_bias[m] [, t])
//   y_{i+1}  = y_i + dt_i sum_s b_s k_s,  k_s = f(t_i + c_s dt_i, y_i + dt_i sum_{j<s} a_sj k_j)
//   loss[m]  = sum over observed (non-NaN) targets of (p - target)^2 / their count,
//              p = y at the output grid points (exp(y) when the field works in log coordinates)
//
// on the solver grid `grid` (every output time one of its points, `out_index`), with
// any explicit Runge-Kutta tableau (a, b, c). The network is a stack of layers:
//
//   kind 0  B-spline KAN layer on a uniform grid: edge (o, i) = base[o, i] act(x_i)
//           + scale[o, i] sum_j coef[o, i, j] B_j(x_i); the k+1 non-zero bases by Horner
//           from the value/slope matrix, continued linearly outside the grid
//           (kanode.nn.bspline); tensors coef (M, out, in, n_coef), scale, base (M, out, in),
//           shift, inv_h (M, in), mat (k+1, 2(k+1))
//   kind 1  linear: y = W x + b; tensors W (M, out, in), b (M, out)
//   kind 2  elementwise activation (codes as kanode.nn._native.ACTIVATION_CODES)
//
// The gradient is reverse-mode through the discrete solve (what autograd computes on the
// eager solve): the stage states are kept from the forward pass, each stage's network pass
// is recomputed in the backward pass to get the layers' inputs. One call does both, so a
// training step crosses from Python into C++ once.
//
// A member whose output scale is zero everywhere (a frozen member of an ensemble, or one a
// line search does not need at this evaluation: kanode.train's live mask) has f = 0: its
// network is not evaluated, forward or backward, so it costs next to nothing; its loss is
// that of its constant trajectory and its parameter gradients are zero, as the full pass
// gives for finite parameters.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "activation.h"

namespace {

using kanode::activation;

constexpr int64_t kMaxWidth = 8;  // spline order <= 7
enum Kind : int64_t { kKAN = 0, kLinear = 1, kActivation = 2 };

// One layer of one member: pointers already offset to the member.
template <typename T>
struct Layer {
  int64_t kind = 0, n_in = 0, n_out = 0, act = 0;
  int64_t width = 0, grid_size = 0, n_coef = 0;  // KAN: k + 1, G, G + k
  const T *coef = nullptr, *scale = nullptr, *base = nullptr, *shift = nullptr, *inv_h = nullptr, *mat = nullptr;
  const T *weight = nullptr, *bias = nullptr;
  T *g_coef = nullptr, *g_scale = nullptr, *g_base = nullptr, *g_weight = nullptr, *g_bias = nullptr;

  // Bases of input i at x: the cell; values[j] and their x-derivatives dvalues[j].
  inline int64_t basis(T x, int64_t i, T* values, T* dvalues) const {
    const int64_t W = width;
    const T s = x * inv_h[i] + shift[i];
    T first = std::floor(s);
    if (!(first >= T(0))) first = T(0);  // also catches NaN (which then propagates through u)
    if (first > T(grid_size - 1)) first = T(grid_size - 1);
    const T u = s - first;
    const T uc = std::min(std::max(u, T(0)), T(1));
    T acc[2 * kMaxWidth];
    for (int64_t c = 0; c < 2 * W; ++c) acc[c] = mat[(W - 1) * 2 * W + c];
    for (int64_t p = W - 2; p >= 0; --p)
      for (int64_t c = 0; c < 2 * W; ++c) acc[c] = mat[p * 2 * W + c] + acc[c] * uc;
    const T outside = u - uc;  // zero inside the grid
    for (int64_t j = 0; j < W; ++j) {
      values[j] = acc[j] + outside * acc[W + j];
      dvalues[j] = acc[W + j] * inv_h[i];
    }
    return static_cast<int64_t>(first);
  }

  // y (n_out) = layer(x (n_in))
  void forward(const T* x, T* y) const {
    if (kind == kActivation) {
      T da;
      for (int64_t i = 0; i < n_in; ++i) activation<T>(act, x[i], y[i], da);
      return;
    }
    if (kind == kLinear) {
      for (int64_t o = 0; o < n_out; ++o) {
        T sum = bias[o];
        const T* w = weight + o * n_in;
        for (int64_t i = 0; i < n_in; ++i) sum += w[i] * x[i];
        y[o] = sum;
      }
      return;
    }
    T v[kMaxWidth], dv[kMaxWidth];
    std::fill(y, y + n_out, T(0));
    for (int64_t i = 0; i < n_in; ++i) {
      const int64_t cell = basis(x[i], i, v, dv);
      T a, da;
      activation<T>(act, x[i], a, da);
      for (int64_t o = 0; o < n_out; ++o) {
        const int64_t oi = o * n_in + i;
        const T* c = coef + oi * n_coef + cell;
        T spline = T(0);
        for (int64_t j = 0; j < width; ++j) spline += c[j] * v[j];
        y[o] += base[oi] * a + scale[oi] * spline;
      }
    }
  }

  // g_x (n_in) = (d layer / d x)^T g (n_out) at x; adds the parameter gradients when `params`.
  void backward(const T* x, const T* g, T* g_x, bool params) const {
    if (kind == kActivation) {
      T a, da;
      for (int64_t i = 0; i < n_in; ++i) {
        activation<T>(act, x[i], a, da);
        g_x[i] = g[i] * da;
      }
      return;
    }
    if (kind == kLinear) {
      std::fill(g_x, g_x + n_in, T(0));
      for (int64_t o = 0; o < n_out; ++o) {
        const T go = g[o];
        const T* w = weight + o * n_in;
        for (int64_t i = 0; i < n_in; ++i) g_x[i] += go * w[i];
        if (params) {
          T* gw = g_weight + o * n_in;
          for (int64_t i = 0; i < n_in; ++i) gw[i] += go * x[i];
          g_bias[o] += go;
        }
      }
      return;
    }
    T v[kMaxWidth], dv[kMaxWidth];
    for (int64_t i = 0; i < n_in; ++i) {
      const int64_t cell = basis(x[i], i, v, dv);
      T a, da;
      activation<T>(act, x[i], a, da);
      T dot = T(0);
      for (int64_t o = 0; o < n_out; ++o) {
        const int64_t oi = o * n_in + i;
        const T go = g[o];
        const T* c = coef + oi * n_coef + cell;
        T spline = T(0), dspline = T(0);
        for (int64_t j = 0; j < width; ++j) {
          spline += c[j] * v[j];
          dspline += c[j] * dv[j];
        }
        dot += go * (base[oi] * da + scale[oi] * dspline);
        if (params) {
          g_base[oi] += go * a;
          g_scale[oi] += go * spline;
          T* gc = g_coef + oi * n_coef + cell;
          const T gs = go * scale[oi];
          for (int64_t j = 0; j < width; ++j) gc[j] += gs * v[j];
        }
      }
      g_x[i] = dot;
    }
  }
};

// The vector field of one member on one state: normalisation, layers, output scale.
template <typename T>
struct Field {
  std::vector<Layer<T>> layers;
  const T *in_w = nullptr, *in_b = nullptr, *out_s = nullptr;
  int64_t dim = 0;
  bool time_input = false;
  std::vector<int64_t> offsets;  // start of each layer's input in the activation buffer; last: the output
  int64_t buffer_size = 0;

  void plan() {
    silent = true;  // out_scale zero: a frozen member of an ensemble (its live mask is 0)
    for (int64_t d = 0; d < dim; ++d) silent = silent && out_s[d] == T(0);
    offsets.clear();
    int64_t at = 0;
    for (const auto& layer : layers) {
      offsets.push_back(at);
      at += layer.n_in;
    }
    offsets.push_back(at);
    buffer_size = at + layers.back().n_out;
    widest_ = dim;
    for (const auto& layer : layers) widest_ = std::max({widest_, layer.n_in, layer.n_out});
  }

  // k (dim) = f(t, y (dim)); `acts` (buffer_size) receives every layer's input and the output.
  void eval(T t, const T* y, T* k, T* acts) const {
    if (silent) {  // f = 0 * net = 0: the network is not evaluated
      for (int64_t d = 0; d < dim; ++d) k[d] = T(0);
      return;
    }
    for (int64_t d = 0; d < dim; ++d) acts[d] = in_w[d] * y[d] + in_b[d];
    if (time_input) acts[dim] = t;
    for (size_t n = 0; n < layers.size(); ++n) layers[n].forward(acts + offsets[n], acts + offsets[n + 1]);
    const T* out = acts + offsets.back();
    for (int64_t d = 0; d < dim; ++d) k[d] = out[d] * out_s[d];
  }

  // g_y (dim) = (df/dy)^T g_k (dim) at (t, y), adding parameter gradients; recomputes the pass.
  void vjp(T t, const T* y, const T* g_k, T* g_y, T* acts, T* grads) const {
    if (silent) {  // no gradient flows through a zero output scale
      for (int64_t d = 0; d < dim; ++d) g_y[d] = T(0);
      return;
    }
    T k_unused[64];
    std::vector<T> k_big;
    T* k = k_unused;
    if (dim > 64) {
      k_big.resize(dim);
      k = k_big.data();
    }
    eval(t, y, k, acts);
    T* g = grads;  // grads: two scratch vectors of the widest layer
    T* g_next = grads + widest_;
    for (int64_t d = 0; d < dim; ++d) g[d] = g_k[d] * out_s[d];
    for (int64_t n = static_cast<int64_t>(layers.size()) - 1; n >= 0; --n) {
      layers[n].backward(acts + offsets[n], g, g_next, true);
      std::swap(g, g_next);
    }
    for (int64_t d = 0; d < dim; ++d) g_y[d] = g[d] * in_w[d];  // the time input gets no gradient
  }

  int64_t widest_ = 0;  // the widest layer input or output (set by plan)
  bool silent = false;  // every output scale is zero: f = 0 (set by plan; exact for finite networks)
};

template <typename T>
void run_member(const Field<T>& field, int64_t batch, const T* y0, const T* grid, int64_t n_grid,
                const int64_t* out_index, int64_t n_out_t, const T* target, int64_t target_stride_t,
                const double* a, const double* b, const double* c, int64_t stages, bool exp_output, bool need_grad,
                T* loss, T* g_y0, T* pred_out) {
  const int64_t dim = field.dim, n_steps = n_grid - 1;
  const int64_t row = batch * dim;
  // stage states of every step: (n_steps, stages, batch, dim); the grid states (n_grid, batch, dim)
  std::vector<T> ys(static_cast<size_t>(n_grid) * row);
  std::vector<T> stage_states(need_grad ? static_cast<size_t>(n_steps) * stages * row : 0);
  std::vector<T> k(static_cast<size_t>(stages) * dim), state(dim), acts(field.buffer_size);
  std::copy(y0, y0 + row, ys.begin());
  for (int64_t i = 0; i < n_steps; ++i) {
    const T t0 = grid[i], dt = grid[i + 1] - grid[i];
    const T* yi = ys.data() + i * row;
    T* ynext = ys.data() + (i + 1) * row;
    for (int64_t r = 0; r < batch; ++r) {
      for (int64_t s = 0; s < stages; ++s) {
        for (int64_t d = 0; d < dim; ++d) {
          T sum = T(0);
          for (int64_t j = 0; j < s; ++j) sum += T(a[s * stages + j]) * k[j * dim + d];
          state[d] = yi[r * dim + d] + dt * sum;
        }
        if (need_grad) std::copy(state.begin(), state.end(), stage_states.data() + ((i * stages + s) * batch + r) * dim);
        field.eval(t0 + T(c[s]) * dt, state.data(), k.data() + s * dim, acts.data());
      }
      for (int64_t d = 0; d < dim; ++d) {
        T sum = T(0);
        for (int64_t s = 0; s < stages; ++s) sum += T(b[s]) * k[s * dim + d];
        ynext[r * dim + d] = yi[r * dim + d] + dt * sum;
      }
    }
  }
  if (pred_out != nullptr) {  // the solution at the output times, (n_t, M, B, D) rows of this member
    for (int64_t j = 0; j < n_out_t; ++j) {
      const T* p = ys.data() + out_index[j] * row;
      T* o = pred_out + j * target_stride_t;
      for (int64_t e = 0; e < row; ++e) o[e] = exp_output ? std::exp(p[e]) : p[e];
    }
    return;
  }
  // the loss over the observed values at the output times; its gradient per grid state
  std::vector<T> g_grid(need_grad ? static_cast<size_t>(n_grid) * row : 0, T(0));
  T total = T(0);
  int64_t count = 0;
  for (int64_t j = 0; j < n_out_t; ++j) {
    const T* p = ys.data() + out_index[j] * row;
    const T* q = target + j * target_stride_t;
    for (int64_t e = 0; e < row; ++e) {
      if (std::isnan(q[e])) continue;
      const T pred = exp_output ? std::exp(p[e]) : p[e];
      const T err = pred - q[e];
      total += err * err;
      ++count;
    }
  }
  *loss = total / T(count);  // NaN when nothing is observed, as kanode.data.observed_mse
  if (!need_grad) return;
  const T norm = T(2) / T(count);
  for (int64_t j = 0; j < n_out_t; ++j) {
    const T* p = ys.data() + out_index[j] * row;
    const T* q = target + j * target_stride_t;
    T* g = g_grid.data() + out_index[j] * row;
    for (int64_t e = 0; e < row; ++e) {
      if (std::isnan(q[e])) continue;
      const T pred = exp_output ? std::exp(p[e]) : p[e];
      g[e] += norm * (pred - q[e]) * (exp_output ? pred : T(1));
    }
  }
  // reverse through the steps
  std::vector<T> ybar(row), kbar(static_cast<size_t>(stages) * dim), stage_bar(dim), scratch(2 * field.widest_);
  std::copy(g_grid.begin() + n_steps * row, g_grid.begin() + n_grid * row, ybar.begin());
  for (int64_t i = n_steps - 1; i >= 0; --i) {
    const T t0 = grid[i], dt = grid[i + 1] - grid[i];
    for (int64_t r = 0; r < batch; ++r) {
      T* yb = ybar.data() + r * dim;
      for (int64_t s = 0; s < stages; ++s)
        for (int64_t d = 0; d < dim; ++d) kbar[s * dim + d] = dt * T(b[s]) * yb[d];
      // yb stays dL/dy_i's direct part (y_{i+1} = y_i + ...); stage contributions are added below
      for (int64_t s = stages - 1; s >= 0; --s) {
        const T* st = stage_states.data() + ((i * stages + s) * batch + r) * dim;
        field.vjp(t0 + T(c[s]) * dt, st, kbar.data() + s * dim, stage_bar.data(), acts.data(), scratch.data());
        for (int64_t d = 0; d < dim; ++d) {
          yb[d] += stage_bar[d];
          for (int64_t j = 0; j < s; ++j) kbar[j * dim + d] += dt * T(a[s * stages + j]) * stage_bar[d];
        }
      }
    }
    const T* gi = g_grid.data() + i * row;
    for (int64_t e = 0; e < row; ++e) ybar[e] += gi[e];
  }
  std::copy(ybar.begin(), ybar.end(), g_y0);
}

}  // namespace

// -> [losses (M,), grad of y0 (M, B, D), then the gradient of every trainable tensor in `tensors`
//     in order (KAN: coef, scale, base; linear: weight, bias)]; only the losses when !need_grad;
//     with `solution`, only the solution at the output times (n_t, M, B, D) (target gives the
//     shape; its values are not read).
std::vector<at::Tensor> window_loss(const at::Tensor& y0_, const at::Tensor& grid_, const at::Tensor& out_index_,
                                    const at::Tensor& target_, const at::Tensor& in_w_, const at::Tensor& in_b_,
                                    const at::Tensor& out_s_, const std::vector<double>& tab_a,
                                    const std::vector<double>& tab_b, const std::vector<double>& tab_c,
                                    const std::vector<int64_t>& kinds, const std::vector<int64_t>& acts,
                                    const std::vector<at::Tensor>& tensors_, bool time_input, bool exp_output,
                                    bool need_grad, bool solution) {
  TORCH_CHECK(y0_.device().is_cpu(), "kanode window kernel: CPU tensors only");
  auto y0 = y0_.contiguous(), grid = grid_.contiguous(), target = target_.contiguous();
  auto out_index = out_index_.to(at::kLong).contiguous();
  auto in_w = in_w_.contiguous(), in_b = in_b_.contiguous(), out_s = out_s_.contiguous();
  std::vector<at::Tensor> tensors;
  for (const auto& t : tensors_) tensors.push_back(t.contiguous());
  TORCH_CHECK(y0.dim() == 3, "kanode window kernel: y0 must be (M, B, D)");
  const int64_t n_members = y0.size(0), batch = y0.size(1), dim = y0.size(2);
  const int64_t n_grid = grid.numel(), n_out_t = out_index.numel();
  const int64_t stages = static_cast<int64_t>(tab_b.size());
  TORCH_CHECK(stages >= 1 && tab_a.size() == static_cast<size_t>(stages * stages) &&
                  tab_c.size() == static_cast<size_t>(stages), "kanode window kernel: bad tableau");
  TORCH_CHECK(target.dim() == 4 && target.size(0) == n_out_t && target.size(1) == n_members &&
                  target.size(2) == batch && target.size(3) == dim, "kanode window kernel: target must be (n_t, M, B, D)");
  TORCH_CHECK(in_w.sizes() == at::IntArrayRef({n_members, dim}) && in_b.sizes() == in_w.sizes() &&
                  out_s.sizes() == in_w.sizes(), "kanode window kernel: normalisation must be (M, D)");
  TORCH_CHECK(kinds.size() == acts.size() && !kinds.empty(), "kanode window kernel: bad layer list");
  const auto dtype = y0.scalar_type();
  for (const auto& t : tensors) TORCH_CHECK(t.scalar_type() == dtype, "kanode window kernel: dtypes must match");
  for (const auto* t : {&grid, &target, &in_w, &in_b, &out_s})
    TORCH_CHECK(t->scalar_type() == dtype, "kanode window kernel: dtypes must match");
  const int64_t max_index = n_out_t ? out_index.max().item<int64_t>() : 0;
  TORCH_CHECK(n_out_t == 0 || (out_index.min().item<int64_t>() >= 0 && max_index < n_grid),
              "kanode window kernel: output index outside the grid");

  need_grad = need_grad && !solution;
  auto losses = at::empty({n_members}, y0.options());
  auto pred = solution ? at::empty_like(target) : at::Tensor();
  std::vector<at::Tensor> outputs{solution ? pred : losses};
  at::Tensor g_y0;
  std::vector<at::Tensor> grads;  // one per trainable tensor, zero-initialised
  if (need_grad) {
    g_y0 = at::zeros_like(y0);
    outputs.push_back(g_y0);
  }
  // layer tensors: KAN 6 (coef, scale, base, shift, inv_h, mat; first three trainable), linear 2
  std::vector<std::vector<int64_t>> trainable(kinds.size());
  {
    size_t at_tensor = 0;
    for (size_t n = 0; n < kinds.size(); ++n) {
      const int64_t count = kinds[n] == kKAN ? 6 : kinds[n] == kLinear ? 2 : 0;
      const int64_t n_train = kinds[n] == kKAN ? 3 : kinds[n] == kLinear ? 2 : 0;
      TORCH_CHECK(at_tensor + count <= tensors.size(), "kanode window kernel: too few layer tensors");
      for (int64_t q = 0; q < n_train; ++q) {
        trainable[n].push_back(static_cast<int64_t>(grads.size()));
        grads.push_back(need_grad ? at::zeros_like(tensors[at_tensor + q]) : at::Tensor());
      }
      at_tensor += count;
    }
    TORCH_CHECK(at_tensor == tensors.size(), "kanode window kernel: too many layer tensors");
  }
  if (need_grad) outputs.insert(outputs.end(), grads.begin(), grads.end());

  AT_DISPATCH_FLOATING_TYPES(dtype, "kanode_window_loss", [&] {
    using T = scalar_t;
    // threads only for members of real work (~1e6 flops a chunk): on a busy machine a
    // parallel region costs more than a small solve
    int64_t per_eval = 0, width = dim + (time_input ? 1 : 0);
    for (size_t n = 0, at_tensor = 0; n < kinds.size(); ++n) {
      const int64_t out = kinds[n] == kKAN ? tensors[at_tensor].size(1) : kinds[n] == kLinear ? tensors[at_tensor].size(1) : width;
      per_eval += width * out * (kinds[n] == kKAN ? 12 : 2);
      at_tensor += kinds[n] == kKAN ? 6 : kinds[n] == kLinear ? 2 : 0;
      width = out;
    }
    const int64_t work = std::max<int64_t>(1, 3 * per_eval * (n_grid - 1) * stages * batch);
    at::parallel_for(0, n_members, std::max<int64_t>(1, (int64_t(1) << 20) / work), [&](int64_t m0, int64_t m1) {
      for (int64_t m = m0; m < m1; ++m) {
        Field<T> field;
        field.dim = dim;
        field.time_input = time_input;
        field.in_w = in_w.data_ptr<T>() + m * dim;
        field.in_b = in_b.data_ptr<T>() + m * dim;
        field.out_s = out_s.data_ptr<T>() + m * dim;
        size_t at_tensor = 0;
        int64_t width_in = dim + (time_input ? 1 : 0);
        for (size_t n = 0; n < kinds.size(); ++n) {
          Layer<T> layer;
          layer.kind = kinds[n];
          layer.act = acts[n];
          layer.n_in = width_in;
          if (layer.kind == kKAN) {
            const auto &coef = tensors[at_tensor], &mat = tensors[at_tensor + 5];
            layer.n_out = coef.size(1);
            layer.n_coef = coef.size(3);
            layer.width = mat.size(0);
            layer.grid_size = layer.n_coef - layer.width + 1;
            const int64_t edges = layer.n_out * layer.n_in;
            layer.coef = coef.data_ptr<T>() + m * edges * layer.n_coef;
            layer.scale = tensors[at_tensor + 1].data_ptr<T>() + m * edges;
            layer.base = tensors[at_tensor + 2].data_ptr<T>() + m * edges;
            layer.shift = tensors[at_tensor + 3].data_ptr<T>() + m * layer.n_in;
            layer.inv_h = tensors[at_tensor + 4].data_ptr<T>() + m * layer.n_in;
            layer.mat = mat.data_ptr<T>();
            if (need_grad) {
              layer.g_coef = grads[trainable[n][0]].data_ptr<T>() + m * edges * layer.n_coef;
              layer.g_scale = grads[trainable[n][1]].data_ptr<T>() + m * edges;
              layer.g_base = grads[trainable[n][2]].data_ptr<T>() + m * edges;
            }
            at_tensor += 6;
          } else if (layer.kind == kLinear) {
            const auto& weight = tensors[at_tensor];
            layer.n_out = weight.size(1);
            layer.weight = weight.data_ptr<T>() + m * layer.n_out * layer.n_in;
            layer.bias = tensors[at_tensor + 1].data_ptr<T>() + m * layer.n_out;
            if (need_grad) {
              layer.g_weight = grads[trainable[n][0]].data_ptr<T>() + m * layer.n_out * layer.n_in;
              layer.g_bias = grads[trainable[n][1]].data_ptr<T>() + m * layer.n_out;
            }
            at_tensor += 2;
          } else {
            layer.n_out = layer.n_in;
          }
          width_in = layer.n_out;
          field.layers.push_back(layer);
        }
        field.plan();
        const T* target_m = target.data_ptr<T>() + m * batch * dim;
        run_member<T>(field, batch, y0.data_ptr<T>() + m * batch * dim, grid.data_ptr<T>(), n_grid,
                      out_index.data_ptr<int64_t>(), n_out_t, target_m, n_members * batch * dim, tab_a.data(),
                      tab_b.data(), tab_c.data(), stages, exp_output, need_grad, losses.data_ptr<T>() + m,
                      need_grad ? g_y0.data_ptr<T>() + m * batch * dim : nullptr,
                      solution ? pred.data_ptr<T>() + m * batch * dim : nullptr);
      }
    });
  });
  return outputs;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("window_loss", &window_loss, "fixed-step neural-ODE window loss and its gradient (CPU)");
}
