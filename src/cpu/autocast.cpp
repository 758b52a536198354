// libtorch's autocast (what `torch.autocast(device_type, dtype=torch.bfloat16)` sets), which tch
// turns on for CUDA only: enabled per device type, with its lower-precision dtype, in the
// calling thread. The weight cache is left off: it is cleared only when the outermost autocast
// region ends, and the weights change in place between forwards.
#include <ATen/autocast_mode.h>

extern "C" {

// Turns autocast on (bf16) or off for the CPU (cuda == 0) or CUDA, the cache off, and writes
// what was set before into before[0..3] (enabled, cache, dtype); 0, or -1 if libtorch refused.
int d2l_autocast_set(int cuda, int enabled, int* before) {
  try {
    auto device = cuda ? at::kCUDA : at::kCPU;
    before[0] = at::autocast::is_autocast_enabled(device);
    before[1] = at::autocast::is_autocast_cache_enabled();
    before[2] = static_cast<int>(at::autocast::get_autocast_dtype(device));
    at::autocast::set_autocast_dtype(device, at::kBFloat16);
    at::autocast::set_autocast_cache_enabled(false);
    at::autocast::set_autocast_enabled(device, enabled != 0);
    return 0;
  } catch (...) {
    return -1;
  }
}

// Sets back what d2l_autocast_set found.
int d2l_autocast_restore(int cuda, const int* before) {
  try {
    auto device = cuda ? at::kCUDA : at::kCPU;
    at::autocast::set_autocast_enabled(device, before[0] != 0);
    at::autocast::set_autocast_cache_enabled(before[1] != 0);
    at::autocast::set_autocast_dtype(device, static_cast<at::ScalarType>(before[2]));
    return 0;
  } catch (...) {
    return -1;
  }
}
}
