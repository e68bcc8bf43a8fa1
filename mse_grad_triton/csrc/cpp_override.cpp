// The C++ override of aten::mse_loss_backward that mse_grad_triton.enable() installs where it
// can be built (cpp_override.py builds it at first use with PyTorch's extension builder).
//
// Why C++: below a device's tuned crossover the override only calls PyTorch's own kernel, and
// a Python override pays for the Python call and for a boxed call into that kernel, which on a
// small training step is more than 10% of the step. Here the fast path is a few comparisons, a
// cached crossover and an unboxed call. Everything else (broadcasts, the Triton kernel, dtypes
// the kernel does not read) goes to the Python override, registered as the op
// mse_grad_triton::enabled_mse_loss_backward for the same dispatch key.
//
// Ops (namespace mse_grad_triton_cpp), called from cpp_override.py:
//   install(str dispatch_key) -> bool   override aten::mse_loss_backward for the key; false if
//                                       PyTorch has no out= kernel there to fall back on
//   remove(str dispatch_key) -> ()      give the key back to PyTorch's kernel
//   forget_crossovers() -> ()           the tables or backends in force changed
//   crossover_epoch() -> int            how many times they have (tests: the tag's wrap)

#include <ATen/core/Reduction.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>

namespace {

// PyTorch hands out a kernel it has registered only as a SafeKernelFunction, which can only be
// called boxed (arguments packed into a stack of IValues: the cost this file exists to avoid).
// PyTorch >= 2.14 gives its KernelFunction, which calls the kernel unboxed, through the public
// kernelFunction(); cpp_override.py defines MSE_GRAD_TRITON_PUBLIC_KERNEL_FUNCTION where the
// headers being compiled against declare it. Older PyTorch keeps it in a private member: an
// explicit template instantiation may name private members ([temp.spec.general]/6), and this
// one defines unboxed_kernel() to read it. If a PyTorch version without the accessor renames
// the member, this file does not compile and enable() falls back to the Python override.
#ifdef MSE_GRAD_TRITON_PUBLIC_KERNEL_FUNCTION
c10::KernelFunction unboxed_kernel(const c10::SafeKernelFunction& kernel) {
  return kernel.kernelFunction();
}
#else
template <c10::KernelFunction c10::SafeKernelFunction::*Member>
struct UnboxedKernelOf {
  friend c10::KernelFunction unboxed_kernel(const c10::SafeKernelFunction& kernel) {
    return kernel.*Member;
  }
};
c10::KernelFunction unboxed_kernel(const c10::SafeKernelFunction& kernel);
template struct UnboxedKernelOf<&c10::SafeKernelFunction::kernel_>;
#endif

// Crossovers cached per (device index, dtype). An entry holds the crossover + 1 (0: never read)
// under the epoch it was read in, tagged with the epoch's low kEpochBits: an entry from before
// the last forget_crossovers() is a miss, with no lock on the way. The tag wraps every
// 2^kEpochBits epochs, so forget_crossovers() empties every entry when it does: an entry tagged
// before a wrap can never match an epoch after it.
constexpr int kValueBits = 44;  // crossovers up to 2^44 elements; the epoch's tag takes the rest
constexpr uint64_t kValueMask = (uint64_t{1} << kValueBits) - 1;
constexpr uint64_t kEpochTags = uint64_t{1} << (64 - kValueBits);
constexpr size_t kDevices = 64;
constexpr size_t kDtypes = 64;
std::atomic<uint64_t> epoch{0};

// One per overridable dispatch key. Never freed: a call in flight on another thread may still
// read it while the override is being removed.
struct Slot {
  std::atomic<bool> captured{false};  // stock_out is set (once, before this turns true)
  c10::KernelFunction stock_out;      // PyTorch's own aten::mse_loss_backward.grad_input
  std::array<std::atomic<uint64_t>, kDevices * kDtypes> crossovers{};  // 0: never read
  std::unique_ptr<torch::Library> library;  // the installed override; under registry_lock
};

struct SilentWarnings : c10::WarningHandler {
  void process(const c10::Warning&) override {}
};

std::mutex registry_lock;
std::array<Slot, 3> slots;

Slot* slot_for(c10::DispatchKey key) {
  switch (key) {
    case c10::DispatchKey::CPU: return &slots[0];
    case c10::DispatchKey::CUDA: return &slots[1];
    case c10::DispatchKey::PrivateUse1: return &slots[2];
    default: return nullptr;
  }
}

const c10::OperatorHandle& out_op() {
  static const auto op = c10::Dispatcher::singleton().findSchemaOrThrow(
      "aten::mse_loss_backward", "grad_input");
  return op;
}

// The Python side: the whole override (mse_grad_triton.torch_ops) and the crossover.
int64_t python_native_below(const at::Tensor& self) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("mse_grad_triton::native_below", "")
                             .typed<int64_t(const at::Tensor&)>();
  return op.call(self);
}

at::Tensor python_override(const at::Tensor& grad_output, const at::Tensor& self,
                           const at::Tensor& target, int64_t reduction) {
  static const auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("mse_grad_triton::enabled_mse_loss_backward", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t)>();
  return op.call(grad_output, self, target, reduction);
}

// Below this many elements PyTorch's kernel runs for self's device and dtype (0: never).
int64_t native_below(Slot& slot, const at::Tensor& self) {
  const auto index = self.device().index();
  const auto device = static_cast<size_t>(index < 0 ? 0 : index);
  const auto dtype = static_cast<size_t>(self.scalar_type());
  if (device >= kDevices || dtype >= kDtypes) {
    return python_native_below(self);
  }
  auto& cached = slot.crossovers[device * kDtypes + dtype];
  const uint64_t read_in = epoch.load(std::memory_order_acquire);
  const uint64_t tag = read_in << kValueBits;
  const uint64_t entry = cached.load(std::memory_order_relaxed);
  if (entry != 0 && (entry & ~kValueMask) == tag) {
    return static_cast<int64_t>((entry & kValueMask) - 1);
  }
  const int64_t value = std::min<int64_t>(python_native_below(self), kValueMask - 1);
  // Kept only if no forget_crossovers() came in between (it may have emptied the entries).
  if (epoch.load(std::memory_order_acquire) == read_in) {
    cached.store(tag | static_cast<uint64_t>(value + 1), std::memory_order_relaxed);
  }
  return value;
}

// aten::mse_loss_backward for an overridden key. The fast path is the one a training step
// takes (gradient of self's shape, below the crossover); its conditions are the Python
// override's (torch_ops._overrides), which handles every other call.
at::Tensor mse_loss_backward(c10::DispatchKeySet keys, const at::Tensor& grad_output,
                             const at::Tensor& self, const at::Tensor& target,
                             int64_t reduction) {
  Slot* slot = slot_for(c10::highestPriorityBackendTypeId(keys));
  // Any other reduction code goes to the Python override, which refuses it (ATen would take
  // it as sum), at every size alike.
  const bool known_reduction = reduction >= at::Reduction::None && reduction < at::Reduction::END;
  if (known_reduction && slot != nullptr && slot->captured.load(std::memory_order_acquire) &&
      self.sizes().equals(target.sizes()) &&
      (grad_output.dim() == 0 || grad_output.sizes().equals(self.sizes())) &&
      self.numel() < native_below(*slot, self)) {
    at::Tensor grad_input = at::empty_like(self, at::MemoryFormat::Contiguous);
    slot->stock_out.call<at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                         int64_t, at::Tensor&>(out_op(), keys, grad_output, self, target,
                                               reduction, grad_input);
    return grad_input;
  }
  return python_override(grad_output, self, target, reduction);
}

bool install_override(const std::string& key_name) {
  const auto key = c10::parseDispatchKey(key_name);
  Slot* slot = slot_for(key);
  TORCH_CHECK(slot != nullptr, "mse_grad_triton_cpp: no override for dispatch key ", key_name);
  std::lock_guard<std::mutex> guard(registry_lock);
  if (slot->library) {
    return true;
  }
  if (!slot->captured.load(std::memory_order_acquire)) {
    // PyTorch's kernel, read before anything overrides it (the Python override of the out
    // variant is registered after this call).
    if (!out_op().hasComputedKernelForDispatchKey(key)) {
      return false;
    }
    slot->stock_out = unboxed_kernel(out_op().getComputedKernelForDispatchKey(key));
    slot->captured.store(true, std::memory_order_release);
  }
  // Overriding PyTorch's kernel is the point: no "Overriding a previously registered kernel".
  SilentWarnings silent;
  c10::WarningUtils::WarningHandlerGuard quiet(&silent);
  slot->library = std::make_unique<torch::Library>(torch::Library::IMPL, "aten", key,
                                                   __FILE__, __LINE__);
  slot->library->impl("mse_loss_backward", TORCH_FN(mse_loss_backward));
  return true;
}

void remove_override(const std::string& key_name) {
  Slot* slot = slot_for(c10::parseDispatchKey(key_name));
  TORCH_CHECK(slot != nullptr, "mse_grad_triton_cpp: no override for dispatch key ", key_name);
  std::lock_guard<std::mutex> guard(registry_lock);
  slot->library.reset();  // deregisters: PyTorch's kernel is in force again
}

void forget_crossovers() {
  const uint64_t now = epoch.fetch_add(1, std::memory_order_acq_rel) + 1;
  if (now % kEpochTags == 0) {  // the tag wrapped: entries from 2^20 epochs ago would match
    for (auto& slot : slots) {
      for (auto& entry : slot.crossovers) {
        entry.store(0, std::memory_order_relaxed);
      }
    }
  }
}

int64_t crossover_epoch() {
  return static_cast<int64_t>(epoch.load(std::memory_order_acquire));
}

}  // namespace

TORCH_LIBRARY(mse_grad_triton_cpp, m) {
  m.def("install(str dispatch_key) -> bool", &install_override);
  m.def("remove(str dispatch_key) -> ()", &remove_override);
  m.def("forget_crossovers() -> ()", &forget_crossovers);
  m.def("crossover_epoch() -> int", &crossover_epoch);
}
