// A small C interface over the parts of libtorch's CUDA API that tch does not expose: CUDA
// graphs (at::cuda::CUDAGraph), side streams, the CUDA runtime's versions and device
// properties, and a count of the operators libtorch dispatches (for "kernels per step").
//
// Every function catches every C++ exception and returns it as a malloc'd string (null on
// success), freed by d2l_free_error: nothing is thrown across the FFI boundary.
//
// Deliberately avoided: ATen/cuda/CUDAContext.h and CUDAEvent.h, which pull in cuda_fp16.h and
// with it CCCL, which the torch wheel does not ship. CUDAGraph.h needs the CUDA crt/ headers
// (PyPI package nvidia-cuda-crt, installed by scripts/setup.sh).
#include <ATen/cuda/CUDAGraph.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/record_function.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <memory>
#include <string>

namespace {

char* copy_string(const std::string& s) {
  char* out = static_cast<char*>(std::malloc(s.size() + 1));
  if (out != nullptr) {
    std::memcpy(out, s.c_str(), s.size() + 1);
  }
  return out;
}

template <class F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return copy_string(e.what());
  } catch (...) {
    return copy_string("unknown C++ exception");
  }
}

char* cuda_error(const char* what, cudaError_t status) {
  return copy_string(std::string(what) + ": " + cudaGetErrorString(status));
}

// A device index that exists, or an exception saying why not.
void check_device(int device) {
  int count = 0;
  cudaError_t status = cudaGetDeviceCount(&count);
  if (status != cudaSuccess) {
    throw std::runtime_error(std::string("no usable CUDA GPU (") +
                             cudaGetErrorString(status) + ")");
  }
  if (device < 0 || device >= count) {
    throw std::runtime_error("no CUDA device " + std::to_string(device) + " (" +
                             std::to_string(count) + " visible)");
  }
}

}  // namespace

// A CUDA graph with the side stream it is captured on, the stream that was current before, and
// the device that was current before: capture and replay run with the graph's device current
// (`cuda:N`, N != 0, must not capture on device 0's stream).
struct D2lGraph {
  int device;
  at::cuda::CUDAGraph graph;
  c10::cuda::CUDAStream side;
  c10::cuda::CUDAStream previous;
  c10::DeviceIndex previous_device = 0;
  bool on_side = false;

  explicit D2lGraph(int d)
      : device(d),
        graph(),
        side(c10::cuda::getStreamFromPool(false, static_cast<c10::DeviceIndex>(d))),
        previous(c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(d))) {}
};

extern "C" {

void d2l_free_error(char* error) { std::free(error); }

// The CUDA runtime's version (e.g. 13000) and the driver's (0 when no driver is installed).
char* d2l_cuda_versions(int* runtime, int* driver) {
  *runtime = 0;
  *driver = 0;
  cudaError_t status = cudaRuntimeGetVersion(runtime);
  if (status != cudaSuccess) {
    return cuda_error("cudaRuntimeGetVersion", status);
  }
  status = cudaDriverGetVersion(driver);
  if (status != cudaSuccess) {
    return cuda_error("cudaDriverGetVersion", status);
  }
  return nullptr;
}

// The cuDNN version libtorch was built with (e.g. 91002), 0 when it has none.
char* d2l_cudnn_version(long* version) {
  *version = 0;
  return guarded([&] {
    const auto& hooks = at::detail::getCUDAHooks();
    if (hooks.hasCuDNN()) {
      *version = hooks.versionCuDNN();
    }
  });
}

// The number of devices the CUDA runtime sees; an error (with the runtime's reason) when none.
char* d2l_cuda_device_count(int* count) {
  *count = 0;
  cudaError_t status = cudaGetDeviceCount(count);
  if (status != cudaSuccess) {
    *count = 0;
    return cuda_error("cudaGetDeviceCount", status);
  }
  return nullptr;
}

// Name (into `name`, at most `name_len` bytes with the NUL), total memory in bytes and compute
// capability of a device.
char* d2l_cuda_device_properties(int device, char* name, size_t name_len, size_t* memory,
                                 int* major, int* minor) {
  return guarded([&] {
    check_device(device);
    cudaDeviceProp prop;
    cudaError_t status = cudaGetDeviceProperties(&prop, device);
    if (status != cudaSuccess) {
      throw std::runtime_error(std::string("cudaGetDeviceProperties: ") +
                               cudaGetErrorString(status));
    }
    std::strncpy(name, prop.name, name_len);
    if (name_len > 0) {
      name[name_len - 1] = '\0';
    }
    *memory = prop.totalGlobalMem;
    *major = prop.major;
    *minor = prop.minor;
  });
}

char* d2l_graph_new(int device, D2lGraph** out) {
  *out = nullptr;
  return guarded([&] {
    check_device(device);
    *out = new D2lGraph(device);
  });
}

// Makes the graph's side stream current (after the work queued so far has finished), so that
// the warm-up and the capture run there, as CUDA graphs require.
char* d2l_graph_enter_side_stream(D2lGraph* g) {
  return guarded([&] {
    auto dev = static_cast<c10::DeviceIndex>(g->device);
    // The graph's device becomes current until the side stream is left: capture_begin takes
    // the current device's current stream.
    g->previous_device = c10::cuda::current_device();
    c10::cuda::set_device(dev);
    g->previous = c10::cuda::getCurrentCUDAStream(dev);
    g->previous.synchronize();
    c10::cuda::setCurrentCUDAStream(g->side);
    g->on_side = true;
  });
}

// Waits for the side stream and makes the previous stream current again.
char* d2l_graph_leave_side_stream(D2lGraph* g) {
  return guarded([&] {
    if (!g->on_side) {
      return;
    }
    g->on_side = false;
    c10::cuda::setCurrentCUDAStream(g->previous);
    g->side.synchronize();
    c10::cuda::set_device(g->previous_device);
  });
}

char* d2l_graph_capture_begin(D2lGraph* g) {
  return guarded([&] {
    c10::cuda::CUDAGuard on(static_cast<c10::DeviceIndex>(g->device));
    g->graph.capture_begin();
  });
}

char* d2l_graph_capture_end(D2lGraph* g) {
  return guarded([&] {
    c10::cuda::CUDAGuard on(static_cast<c10::DeviceIndex>(g->device));
    g->graph.capture_end();
  });
}

// Launches the captured work on the graph's device's current stream.
char* d2l_graph_replay(D2lGraph* g) {
  return guarded([&] {
    c10::cuda::CUDAGuard on(static_cast<c10::DeviceIndex>(g->device));
    g->graph.replay();
  });
}

void d2l_graph_free(D2lGraph* g) {
  try {
    if (g != nullptr && g->on_side) {
      c10::cuda::setCurrentCUDAStream(g->previous);
      c10::cuda::set_device(g->previous_device);
    }
    delete g;
  } catch (...) {
    // A destructor that fails leaves nothing to do but to go on.
  }
}

}  // extern "C"

// ---------------------------------------------------------------- operator counting

namespace {
std::atomic<long long> launching_ops{0};
std::atomic<long long> all_ops{0};
std::atomic<long long> host_reads{0};
thread_local int depth = 0;
bool counter_installed = false;
at::CallbackHandle counter_handle = 0;

// Operators that only make a view or read metadata: no kernel runs for them.
bool is_view(const char* name) {
  static const char* views[] = {
      "aten::t",           "aten::transpose",  "aten::narrow",  "aten::slice",
      "aten::view",        "aten::unsqueeze",  "aten::squeeze", "aten::expand",
      "aten::as_strided",  "aten::select",     "aten::detach",  "aten::alias",
      "aten::permute",     "aten::_reshape_alias", "aten::reshape", "aten::numpy_T",
      "aten::lift_fresh",  "aten::empty",      "aten::empty_strided", "aten::resize_",
      "aten::result_type", "aten::is_nonzero", "aten::item",    "aten::_local_scalar_dense",
  };
  for (const char* v : views) {
    if (std::strcmp(name, v) == 0) {
      return true;
    }
  }
  return false;
}

// Operators that read a tensor's values on the host (at any depth), and, called at top level,
// copies to another device or type: each a synchronisation on a GPU, and none may run inside a
// captured graph. (Nested `to` calls are libtorch wrapping Rust scalars: no copy back.)
bool is_host_read(const char* name, bool top_level) {
  static const char* reads[] = {
      "aten::_local_scalar_dense", "aten::nonzero", "aten::is_nonzero", "aten::equal",
      "aten::allclose",
  };
  static const char* copies[] = {"aten::item", "aten::to", "aten::_to_copy"};
  for (const char* r : reads) {
    if (std::strcmp(name, r) == 0) {
      return true;
    }
  }
  if (top_level) {
    for (const char* c : copies) {
      if (std::strcmp(name, c) == 0) {
        return true;
      }
    }
  }
  return false;
}

std::unique_ptr<at::ObserverContext> on_enter(const at::RecordFunction& fn) {
  if (is_host_read(fn.name(), depth == 0)) {
    host_reads.fetch_add(1, std::memory_order_relaxed);
  }
  if (depth++ == 0) {
    all_ops.fetch_add(1, std::memory_order_relaxed);
    if (!is_view(fn.name())) {
      launching_ops.fetch_add(1, std::memory_order_relaxed);
    }
  }
  return nullptr;
}

void on_exit(const at::RecordFunction&, at::ObserverContext*) { --depth; }
}  // namespace

extern "C" {

// Starts counting the operators libtorch dispatches at top level, on every thread (an operator
// that calls others counts once; the operators autograd's backward runs count too).
char* d2l_op_counter_start() {
  return guarded([&] {
    launching_ops = 0;
    all_ops = 0;
    host_reads = 0;
    if (!counter_installed) {
      counter_handle = at::addGlobalCallback(
          at::RecordFunctionCallback(on_enter, on_exit).scopes({at::RecordScope::FUNCTION}));
      counter_installed = true;
    }
  });
}

// Stops counting: the operators since the start that do work (on a GPU about one kernel
// launch each; views and metadata excluded), all of them, and those (at any depth) that read
// values back to the host.
char* d2l_op_counter_stop(long long* launching, long long* all, long long* reads) {
  return guarded([&] {
    if (counter_installed) {
      at::removeCallback(counter_handle);
      counter_installed = false;
    }
    *launching = launching_ops.load();
    *all = all_ops.load();
    *reads = host_reads.load();
  });
}

}  // extern "C"
