// ATen's CPU capability (the vector width of its element-wise and reduction kernels:
// DEFAULT, AVX2 or AVX512), which libtorch decides once, from the CPU and the environment
// variable ATEN_CPU_CAPABILITY, and exposes only as a C++ std::string.
#include <ATen/Version.h>

#include <cstddef>
#include <cstring>
#include <string>

extern "C" size_t d2l_aten_cpu_capability(char* out, size_t capacity) {
  try {
    std::string name = at::get_cpu_capability();
    if (capacity > 0) {
      size_t n = name.size() < capacity - 1 ? name.size() : capacity - 1;
      std::memcpy(out, name.data(), n);
      out[n] = '\0';
    }
    return name.size();
  } catch (...) {
    return 0;
  }
}
