// libtorch's default random generators' states, which tch does not expose: the CPU
// generator's (a Mersenne twister, about 5 kB) and a CUDA device's (Philox: seed and offset).
// The same bytes as PyTorch's torch.get_rng_state() / torch.cuda.get_rng_state(i).
#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <ATen/ops/empty.h>
#include <c10/core/Device.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

namespace {

char* error(const std::string& message) { return strdup(message.c_str()); }

at::Generator generator(int cuda, int index) {
  if (cuda) {
    return at::globalContext().defaultGenerator(
        c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(index)));
  }
  return at::globalContext().defaultGenerator(c10::Device(c10::DeviceType::CPU));
}

}  // namespace

extern "C" void d2l_generator_free_error(char* error) { std::free(error); }

// Copies the state into `out` (at most `capacity` bytes) and its length into `*length`; a
// message (free it with d2l_generator_free_error) when the generator cannot be read.
extern "C" char* d2l_generator_state(int cuda, int index, uint8_t* out, size_t capacity,
                                     size_t* length) {
  try {
    at::Generator gen = generator(cuda, index);
    at::Tensor state;
    {
      std::lock_guard<std::mutex> lock(gen.mutex());
      state = gen.get_state();
    }
    state = state.contiguous();
    size_t n = static_cast<size_t>(state.numel());
    *length = n;
    std::memcpy(out, state.data_ptr<uint8_t>(), n < capacity ? n : capacity);
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  } catch (...) {
    return error("unknown error");
  }
}

// Sets the generator's state from `length` bytes that d2l_generator_state gave.
extern "C" char* d2l_generator_set_state(int cuda, int index, const uint8_t* data, size_t length) {
  try {
    at::Generator gen = generator(cuda, index);
    at::Tensor state = at::empty({static_cast<int64_t>(length)}, at::kByte);
    std::memcpy(state.data_ptr<uint8_t>(), data, length);
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(state);
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  } catch (...) {
    return error("unknown error");
  }
}
