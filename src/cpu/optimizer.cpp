// A libtorch optimizer's state (SGD's momentum buffers, Adam's and AdamW's moments and step
// counts), which tch does not expose: written and read with libtorch's own serialisation
// (torch::optim::Optimizer::save / load through an archive), so every optimizer libtorch has
// is covered. The state is matched to the parameters by their order in the optimizer's
// groups, as libtorch does: the optimizer it is loaded into must have been built the same way.
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <string>

namespace {

char* error(const std::string& message) { return strdup(message.c_str()); }

}  // namespace

extern "C" void d2l_optimizer_free(void* pointer) { std::free(pointer); }

// The state of `optimizer` (a torch::optim::Optimizer*) as bytes in `*out` (malloc'ed: free
// them with d2l_optimizer_free), their length in `*length`; a message (free it the same way)
// when it cannot be written.
extern "C" char* d2l_optimizer_state(void* optimizer, uint8_t** out, size_t* length) {
  try {
    auto* opt = static_cast<torch::optim::Optimizer*>(optimizer);
    torch::serialize::OutputArchive archive;
    opt->save(archive);
    std::ostringstream stream;
    archive.save_to(stream);
    const std::string bytes = stream.str();
    *out = static_cast<uint8_t*>(std::malloc(bytes.size() ? bytes.size() : 1));
    if (*out == nullptr) return error("out of memory");
    std::memcpy(*out, bytes.data(), bytes.size());
    *length = bytes.size();
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  }
}

// Sets the state of `optimizer` from bytes written by d2l_optimizer_state; a message when they
// cannot be read or do not fit its parameters.
extern "C" char* d2l_optimizer_set_state(void* optimizer, const uint8_t* data, size_t length) {
  try {
    auto* opt = static_cast<torch::optim::Optimizer*>(optimizer);
    std::istringstream stream(std::string(reinterpret_cast<const char*>(data), length));
    torch::serialize::InputArchive archive;
    archive.load_from(stream);
    opt->load(archive);
    return nullptr;
  } catch (const std::exception& e) {
    return error(e.what());
  }
}
