// The L-BFGS two-loop recursion of M members in one call (CPU): the direction -H g of each
// member from its ring buffer of (s, y) pairs, newest pair first, as torch.optim.LBFGS
// computes it (kanode.optim.lbfgs.BatchedLBFGS._two_loop is the PyTorch version of the
// same loops, used where this kernel is not built).
//
// Shapes: grad (M, P); steps, grads (M, H, P) ring buffers; head, count (M,) int64 (the
// ring position of the next pair, the number of valid pairs); h_diag (M,).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace {

template <typename T>
T dot(const T* a, const T* b, int64_t n) {
  T sum = T(0);
  for (int64_t i = 0; i < n; ++i) sum += a[i] * b[i];
  return sum;
}

}  // namespace

at::Tensor two_loop(const at::Tensor& grad_, const at::Tensor& steps_, const at::Tensor& grads_,
                    const at::Tensor& head_, const at::Tensor& count_, const at::Tensor& h_diag_) {
  TORCH_CHECK(grad_.device().is_cpu(), "kanode lbfgs kernel: CPU tensors only");
  auto grad = grad_.contiguous(), steps = steps_.contiguous(), grads = grads_.contiguous();
  auto head = head_.to(at::kLong).contiguous(), count = count_.to(at::kLong).contiguous();
  auto h_diag = h_diag_.to(grad.scalar_type()).contiguous();
  TORCH_CHECK(grad.dim() == 2 && steps.dim() == 3 && steps.sizes() == grads.sizes() &&
                  steps.size(0) == grad.size(0) && steps.size(2) == grad.size(1),
              "kanode lbfgs kernel: grad (M, P), steps and grads (M, H, P)");
  TORCH_CHECK(steps.scalar_type() == grad.scalar_type() && grads.scalar_type() == grad.scalar_type(),
              "kanode lbfgs kernel: dtypes must match");
  const int64_t n_members = grad.size(0), size = grad.size(1), history = steps.size(1);
  auto direction = at::empty_like(grad);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "kanode_two_loop", [&] {
    using T = scalar_t;
    // threads only for members of real work (~1e6 flops a chunk): on a busy machine a
    // parallel region costs more than a small recursion
    const int64_t work = std::max<int64_t>(1, 4 * history * size);
    at::parallel_for(0, n_members, std::max<int64_t>(1, (int64_t(1) << 20) / work), [&](int64_t m0, int64_t m1) {
      std::vector<T> alpha(history), ro(history);
      for (int64_t m = m0; m < m1; ++m) {
        const T* g = grad.data_ptr<T>() + m * size;
        T* q = direction.data_ptr<T>() + m * size;
        const T* s_hist = steps.data_ptr<T>() + m * history * size;
        const T* y_hist = grads.data_ptr<T>() + m * history * size;
        const int64_t n = count.data_ptr<int64_t>()[m], top = head.data_ptr<int64_t>()[m];
        for (int64_t i = 0; i < size; ++i) q[i] = -g[i];
        for (int64_t j = 0; j < n; ++j) {  // newest first
          const int64_t pos = ((top - 1 - j) % history + history) % history;
          const T* s = s_hist + pos * size;
          const T* y = y_hist + pos * size;
          ro[j] = T(1) / dot(y, s, size);
          alpha[j] = dot(s, q, size) * ro[j];
          for (int64_t i = 0; i < size; ++i) q[i] -= alpha[j] * y[i];
        }
        const T hd = h_diag.data_ptr<T>()[m];
        for (int64_t i = 0; i < size; ++i) q[i] *= hd;
        for (int64_t j = n - 1; j >= 0; --j) {  // oldest first
          const int64_t pos = ((top - 1 - j) % history + history) % history;
          const T* s = s_hist + pos * size;
          const T* y = y_hist + pos * size;
          const T beta = dot(y, q, size) * ro[j];
          for (int64_t i = 0; i < size; ++i) q[i] += s[i] * (alpha[j] - beta);
        }
      }
    });
  });
  return direction;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("two_loop", &two_loop, "L-BFGS two-loop recursion of M members (CPU)");
}
