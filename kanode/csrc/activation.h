// Base activations of kanode's C++ kernels: act(x) and its derivative, as torch computes
// them (softplus: beta 1, threshold 20). The codes are kanode.nn._native.ACTIVATION_CODES.
// Shared by nn/csrc/spline_cpu.cpp (the KAN layer) and csrc/window_cpu.cpp (the training window).

#pragma once

#include <cmath>
#include <cstdint>

namespace kanode {

enum Activation : int64_t { kIdentity = 0, kSilu = 1, kTanh = 2, kRelu = 3, kSoftplus = 4, kGelu = 5 };

// act(x) and its derivative, as torch computes them (softplus: beta 1, threshold 20).
template <typename T>
inline void activation(int64_t kind, T x, T& a, T& da) {
  switch (kind) {
    case kSilu: {
      const T s = T(1) / (T(1) + std::exp(-x));
      a = x * s;
      da = s * (T(1) + x * (T(1) - s));
      break;
    }
    case kTanh: {
      a = std::tanh(x);
      da = T(1) - a * a;
      break;
    }
    case kRelu:
      a = x > T(0) ? x : T(0);
      da = x > T(0) ? T(1) : T(0);
      break;
    case kSoftplus:
      if (x > T(20)) {
        a = x;
        da = T(1);
      } else {
        const T z = std::exp(x);
        a = std::log1p(z);
        da = z / (z + T(1));
      }
      break;
    case kGelu: {
      const T cdf = T(0.5) * (T(1) + std::erf(x * T(M_SQRT1_2)));
      a = x * cdf;
      da = cdf + x * std::exp(T(-0.5) * x * x) * T(0.5 * M_2_SQRTPI * M_SQRT1_2);
      break;
    }
    default:
      a = x;
      da = T(1);
  }
}

}  // namespace kanode
