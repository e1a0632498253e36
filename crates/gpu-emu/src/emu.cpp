// Host emulation of attrib's CUDA kernels: the CUDA qualifiers become nothing, each
// kernel registers itself by name, and a launch runs its threads one after another
// (the kernels use no shared memory and no synchronisation, so this is exact).
#include <cstring>
#include <map>
#include <string>

#define __global__
#define __device__
#define __forceinline__ inline
#define __restrict__ __restrict

static thread_local long long emu_thread = 0;
#define THREAD emu_thread

struct Args;
typedef void (*Kernel)(const Args&);

static std::map<std::string, Kernel>& registry() {
  static std::map<std::string, Kernel> r;
  return r;
}

struct Registrar {
  Registrar(const char* name, Kernel k) { registry()[name] = k; }
};

#define KERNEL(name)                                  \
  static void name(const Args& a);                   \
  static const Registrar reg_##name(#name, name);    \
  static void name(const Args& a)

#include "kernels.cu"

// Runs kernel `name` for a->i[0] threads. Returns 0, or 1 for an unknown name.
extern "C" int attrib_emu_launch(const char* name, const Args* a) {
  auto it = registry().find(name);
  if (it == registry().end()) return 1;
  for (long long t = 0; t < a->i[0]; ++t) {
    emu_thread = t;
    it->second(*a);
  }
  return 0;
}

// The number of registered kernels (the tests compare it with the Rust list).
extern "C" int attrib_emu_kernels() { return (int)registry().size(); }
