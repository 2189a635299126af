// seqvae::lstm_cell: the pointwise part of an LSTM step as one CPU kernel, forward and backward.
//
// Eager PyTorch runs an LSTM cell as about ten kernels forward and fifteen autograd nodes
// backward, each paying a dispatch and an allocation on a (batch, hidden) tensor; inside a
// stochastic RNN's step loop that overhead is a tenth of a small model's training step. Here
// the forward is one pass over the gates and the backward one pass over the saved activations.
//
// Built on first use by seqvae/native.py (torch.utils.cpp_extension), with CPU_CAPABILITY_*
// set to what this machine's ATen runs, so that Vectorized<T> maps onto AVX2 or AVX-512.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/autograd.h>
#include <torch/library.h>

namespace {

using at::Tensor;
using at::vec::Vectorized;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Rows per parallel chunk: enough elements that a thread's share outweighs waking it.
constexpr int64_t kGrainElements = 16384;

// exp_u20 is ATen's inlined polynomial exp (about 20 ulp in float, exact Sleef exp in double):
// the Sleef functions behind exp() and tanh() are out-of-line calls and cost 2-4x as much here.
template <typename T>
inline Vectorized<T> sigmoid(Vectorized<T> x) {
  const Vectorized<T> one(T(1));
  if constexpr (std::is_same_v<T, double>) {
    return one / (one + x.neg().exp());
  }
  return one / (one + x.neg().exp_u20());
}

template <typename T>
inline Vectorized<T> tanh(Vectorized<T> x) {
  // |x| >= 1/4: 1 - 2 / (e^2|x| + 1), which saturates to 1 when e^2|x| overflows;
  // |x| < 1/4: odd Taylor polynomial to x^9 (next term < 1e-8 relative), where the quotient
  // would lose the relative precision of small values to cancellation.
  if constexpr (std::is_same_v<T, double>) {
    return x.tanh();  // double is for checks against the composed cell: exact rather than fast
  }
  using V = Vectorized<T>;
  const V one(T(1)), two(T(2)), quarter(T(0.25)), zero(T(0));
  const V c3(T(-1.0 / 3)), c5(T(2.0 / 15)), c7(T(-17.0 / 315)), c9(T(62.0 / 2835));
  auto ax = x.abs();
  auto far = one - two / ((ax * two).exp_u20() + one);
  far = V::blendv(far, far.neg(), x < zero);
  auto x2 = x * x;
  auto near = x + x * x2 * (c3 + x2 * (c5 + x2 * (c7 + x2 * c9)));
  return V::blendv(far, near, ax < quarter);
}

int64_t grain_rows(int64_t hidden) { return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, hidden)); }

// Calls body(gates_at, at, n) for every vector of every row, rows split across threads:
// gates_at is where the vector's i-gate values start in a (B, 4H) tensor (the f, g and o gates
// follow hidden apart), at where its values start in a (B, H) tensor, n the lanes in use.
template <typename T, typename Body>
void for_each_vector(int64_t batch, int64_t hidden, const Body& body) {
  constexpr int64_t lanes = Vectorized<T>::size();
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t j = 0; j < hidden; j += lanes) {
        body(b * 4 * hidden + j, b * hidden + j, std::min<int64_t>(lanes, hidden - j));
      }
    }
  });
}

// act = [sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)], c_new = f c + i g, tc = tanh(c_new), h = o tc
template <typename T>
void forward_kernel(const T* gates, const T* c, T* act, T* c_new, T* tc, T* h, int64_t batch, int64_t hidden) {
  using V = Vectorized<T>;
  for_each_vector<T>(batch, hidden, [&](int64_t gi, int64_t k, int64_t n) {
    auto i = sigmoid(V::loadu(gates + gi, n));
    auto f = sigmoid(V::loadu(gates + gi + hidden, n));
    auto z = tanh(V::loadu(gates + gi + 2 * hidden, n));
    auto o = sigmoid(V::loadu(gates + gi + 3 * hidden, n));
    auto cn = f * V::loadu(c + k, n) + i * z;
    auto t = tanh(cn);
    i.store(act + gi, n);
    f.store(act + gi + hidden, n);
    z.store(act + gi + 2 * hidden, n);
    o.store(act + gi + 3 * hidden, n);
    cn.store(c_new + k, n);
    t.store(tc + k, n);
    (o * t).store(h + k, n);
  });
}

// dc = dc_new + dh o (1 - tc^2); d[i, f, g, o] = dc [g, c, i, 0] * act' + [0, 0, 0, dh tc o'];
// dc_prev = dc f. Autograd passes zeros for an output that nothing read (materialized grads).
template <typename T>
void backward_kernel(const T* dh, const T* dcn, const T* act, const T* c, const T* tc, T* dgates, T* dc_prev,
                     int64_t batch, int64_t hidden) {
  using V = Vectorized<T>;
  const V one(T(1));
  for_each_vector<T>(batch, hidden, [&](int64_t gi, int64_t k, int64_t n) {
    auto i = V::loadu(act + gi, n);
    auto f = V::loadu(act + gi + hidden, n);
    auto z = V::loadu(act + gi + 2 * hidden, n);
    auto o = V::loadu(act + gi + 3 * hidden, n);
    auto t = V::loadu(tc + k, n);
    auto gh = V::loadu(dh + k, n);
    auto dc = V::loadu(dcn + k, n) + gh * o * (one - t * t);
    (dc * z * i * (one - i)).store(dgates + gi, n);
    (dc * V::loadu(c + k, n) * f * (one - f)).store(dgates + gi + hidden, n);
    (dc * i * (one - z * z)).store(dgates + gi + 2 * hidden, n);
    (gh * t * o * (one - o)).store(dgates + gi + 3 * hidden, n);
    (dc * f).store(dc_prev + k, n);
  });
}

void check_inputs(const Tensor& gates, const Tensor& c) {
  TORCH_CHECK(gates.dim() == 2 && c.dim() == 2, "seqvae::lstm_cell: gates (B, 4H) and c (B, H) must be 2-D");
  TORCH_CHECK(gates.size(0) == c.size(0) && gates.size(1) == 4 * c.size(1),
              "seqvae::lstm_cell: gates ", gates.sizes(), " do not match c ", c.sizes(), " (expected (B, 4H), (B, H))");
  TORCH_CHECK(gates.scalar_type() == c.scalar_type(), "seqvae::lstm_cell: gates and c differ in dtype");
  TORCH_CHECK(gates.device().is_cpu() && c.device().is_cpu(), "seqvae::lstm_cell: CPU tensors only");
}

// (h, c_new, act, tc)
std::tuple<Tensor, Tensor, Tensor, Tensor> lstm_cell_forward(const Tensor& gates_in, const Tensor& c_in) {
  check_inputs(gates_in, c_in);
  auto gates = gates_in.contiguous();
  auto c = c_in.contiguous();
  const int64_t batch = c.size(0), hidden = c.size(1);
  auto act = at::empty_like(gates);
  auto c_new = at::empty_like(c), tc = at::empty_like(c), h = at::empty_like(c);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "seqvae::lstm_cell", [&] {
    forward_kernel<scalar_t>(gates.const_data_ptr<scalar_t>(), c.const_data_ptr<scalar_t>(),
                             act.mutable_data_ptr<scalar_t>(), c_new.mutable_data_ptr<scalar_t>(),
                             tc.mutable_data_ptr<scalar_t>(), h.mutable_data_ptr<scalar_t>(), batch, hidden);
  });
  return {h, c_new, act, tc};
}

std::tuple<Tensor, Tensor> lstm_cell_backward(const Tensor& dh_in, const Tensor& dcn_in, const Tensor& act,
                                              const Tensor& c, const Tensor& tc) {
  const int64_t batch = c.size(0), hidden = c.size(1);
  auto dh = dh_in.contiguous();
  auto dcn = dcn_in.contiguous();
  auto dgates = at::empty_like(act);
  auto dc_prev = at::empty_like(c);
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "seqvae::lstm_cell_backward", [&] {
    backward_kernel<scalar_t>(dh.const_data_ptr<scalar_t>(), dcn.const_data_ptr<scalar_t>(), act.const_data_ptr<scalar_t>(),
                              c.const_data_ptr<scalar_t>(), tc.const_data_ptr<scalar_t>(),
                              dgates.mutable_data_ptr<scalar_t>(), dc_prev.mutable_data_ptr<scalar_t>(), batch, hidden);
  });
  return {dgates, dc_prev};
}

class LSTMCellFunction : public torch::autograd::Function<LSTMCellFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const Tensor& gates, const Tensor& c) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [h, c_new, act, tc] = lstm_cell_forward(gates, c);
    ctx->save_for_backward({act, c.contiguous(), tc});
    return {h, c_new};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    // the kernel's outputs carry no graph: refuse a double backward rather than return zeros
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "seqvae::lstm_cell is not twice differentiable (set SEQVAE_NATIVE=0 for the composed cell)");
    auto saved = ctx->get_saved_variables();
    auto [dgates, dc_prev] = lstm_cell_backward(grads[0], grads[1], saved[0], saved[1], saved[2]);
    return {dgates, dc_prev};
  }
};

std::tuple<Tensor, Tensor> lstm_cell_autograd(const Tensor& gates, const Tensor& c) {
  auto out = LSTMCellFunction::apply(gates, c);
  return {out[0], out[1]};
}

std::tuple<Tensor, Tensor> lstm_cell_inference(const Tensor& gates, const Tensor& c) {
  auto [h, c_new, act, tc] = lstm_cell_forward(gates, c);
  return {h, c_new};
}

}  // namespace

TORCH_LIBRARY(seqvae, m) { m.def("lstm_cell(Tensor gates, Tensor c) -> (Tensor, Tensor)"); }

TORCH_LIBRARY_IMPL(seqvae, CPU, m) { m.impl("lstm_cell", lstm_cell_inference); }

TORCH_LIBRARY_IMPL(seqvae, Autograd, m) { m.impl("lstm_cell", lstm_cell_autograd); }
