// Which path the CPU runs: detection once, SLM_CPU_ISA to force a lower one,
// and the dispatch tables (the paths themselves are simd_portable.cpp and
// simd_<isa>.cpp).
#include "backend/cpu/simd.h"

#include <slm/error.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include <atomic>
#include <cstdlib>
#include <string>

#if defined(__aarch64__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

namespace slm::cpu {

namespace {

#if defined(__x86_64__)
// Clang 14's __builtin_cpu_supports does not know "f16c"; CPUID leaf 1 does.
bool has_f16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

// AMX-TILE, AMX-BF16 and AMX-INT8 (CPUID leaf 7), enabled by the OS (XCR0's
// tile state bits), and granted to this process: Linux (5.16 on) hands out
// the 8 KiB of tile state per process on request (arch_prctl
// ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); where it refuses (an older
// kernel, a sigaltstack too small for the larger signal frame), the path
// below serves.
bool amx_granted() {
  static const bool granted = [] {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return false;
    constexpr unsigned kAmxBf16 = 1u << 22, kAmxTile = 1u << 24, kAmxInt8 = 1u << 25;
    if ((edx & (kAmxBf16 | kAmxTile | kAmxInt8)) != (kAmxBf16 | kAmxTile | kAmxInt8)) return false;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx) || !(ecx & bit_OSXSAVE)) return false;
    unsigned xcr0_low = 0, xcr0_high = 0;
    __asm__("xgetbv" : "=a"(xcr0_low), "=d"(xcr0_high) : "c"(0));
    constexpr unsigned kTileState = (1u << 17) | (1u << 18);
    if ((xcr0_low & kTileState) != kTileState) return false;
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
}

// AVX-VNNI: the VEX-encoded vpdpbusd (CPUID leaf 7, subleaf 1, EAX bit 4).
bool has_avx_vnni() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) != 0 && (eax & (1u << 4)) != 0;
}
#endif

// Whether this CPU (and OS) can run the path.
bool supported(Isa isa) {
#if defined(__x86_64__)
  __builtin_cpu_init();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && has_f16c();
  const bool avx512 =
      avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
  const bool dot_products = avx512 && __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vnni");
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Avx2: return avx2;
    case Isa::Avx2Vnni: return avx2 && has_avx_vnni();
    case Isa::Avx512: return avx512;
    case Isa::Avx512Bf16: return dot_products;
    case Isa::Amx: return dot_products && amx_granted();
    default: return false;
  }
#elif defined(__aarch64__)
  const unsigned long hwcap = getauxval(AT_HWCAP), hwcap2 = getauxval(AT_HWCAP2);
  switch (isa) {
    case Isa::Scalar: return true;
    case Isa::Neon: return (hwcap & HWCAP_ASIMD) != 0;
    case Isa::NeonDot: return (hwcap & HWCAP_ASIMD) && (hwcap & HWCAP_ASIMDDP);
    case Isa::NeonBf16: return (hwcap & HWCAP_ASIMD) && (hwcap & HWCAP_ASIMDDP) && (hwcap2 & HWCAP2_BF16) && (hwcap2 & HWCAP2_I8MM);
    default: return false;
  }
#else
  return isa == Isa::Scalar;
#endif
}

// The best path this CPU runs, in order of preference.
Isa detect() {
  for (Isa isa : {Isa::Amx, Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2Vnni, Isa::Avx2, Isa::NeonBf16, Isa::NeonDot, Isa::Neon}) {
    if (supported(isa)) return isa;
  }
  return Isa::Scalar;
}

// `wanted` where the CPU runs it, else the best path.
Isa clamp(Isa wanted, Isa best) { return supported(wanted) ? wanted : best; }

Isa parse_isa(std::string_view name) {
  if (name == "scalar") return Isa::Scalar;
  if (name == "avx2") return Isa::Avx2;
  if (name == "avx2vnni") return Isa::Avx2Vnni;
  if (name == "avx512") return Isa::Avx512;
  if (name == "avx512bf16") return Isa::Avx512Bf16;
  if (name == "amx") return Isa::Amx;
  if (name == "neon") return Isa::Neon;
  if (name == "neondot") return Isa::NeonDot;
  if (name == "neonbf16") return Isa::NeonBf16;
  fail("SLM_CPU_ISA: unknown instruction set \"", name,
       "\" (expected scalar, avx2, avx2vnni, avx512, avx512bf16, amx, neon, neondot or neonbf16)");
}

std::atomic<Isa>& chosen() {
  static std::atomic<Isa> isa = [] {
    const Isa best = detect();
    const char* forced = std::getenv("SLM_CPU_ISA");
    if (!forced || !*forced) return best;
    return clamp(parse_isa(forced), best);
  }();
  return isa;
}

}  // namespace

Isa active_isa() { return chosen().load(std::memory_order_relaxed); }

std::string_view isa_name(Isa isa) {
  switch (isa) {
    case Isa::Scalar: return "scalar";
    case Isa::Avx2: return "avx2";
    case Isa::Avx2Vnni: return "avx2vnni";
    case Isa::Avx512: return "avx512";
    case Isa::Avx512Bf16: return "avx512bf16";
    case Isa::Amx: return "amx";
    case Isa::Neon: return "neon";
    case Isa::NeonDot: return "neondot";
    case Isa::NeonBf16: return "neonbf16";
  }
  return "?";
}

void force_isa(Isa isa) { chosen().store(clamp(isa, detect()), std::memory_order_relaxed); }

// Each table is built on first use of its path only: the function that
// builds it is compiled for that path's instructions, which a CPU without
// them cannot even run to fill a table (an AVX2-only CPU died here).
const VectorKernels& vector_kernels() {
  static const VectorKernels portable = portable_kernels();
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Amx:
    case Isa::Avx512Bf16: {
      static const VectorKernels avx512bf16 = avx512bf16_vector_kernels();
      return avx512bf16;
    }
    case Isa::Avx512: {
      static const VectorKernels avx512 = avx512_kernels();
      return avx512;
    }
    case Isa::Avx2Vnni:
    case Isa::Avx2: {
      static const VectorKernels avx2 = avx2_kernels();
      return avx2;
    }
    default: break;
  }
#endif
#if defined(__aarch64__)
  switch (active_isa()) {
    case Isa::NeonBf16: {
      static const VectorKernels neonbf16 = neonbf16_vector_kernels();
      return neonbf16;
    }
    case Isa::NeonDot:
    case Isa::Neon: {
      static const VectorKernels neon = neon_kernels();
      return neon;
    }
    default: break;
  }
#endif
  return portable;
}

const Bf16GemmKernels* bf16_gemm_kernels() {
#if defined(__x86_64__)
  if (active_isa() == Isa::Amx) {
    static const Bf16GemmKernels kernels = amx_bf16_kernels();
    return &kernels;
  }
  if (active_isa() == Isa::Avx512Bf16) {
    static const Bf16GemmKernels kernels = avx512bf16_kernels();
    return &kernels;
  }
#endif
#if defined(__aarch64__)
  if (active_isa() == Isa::NeonBf16) {
    static const Bf16GemmKernels kernels = neonbf16_gemm_kernels();
    return &kernels;
  }
#endif
  return nullptr;
}

const QuantGemmKernels* quant_gemm_kernels() {
#if defined(__x86_64__)
  if (active_isa() == Isa::Amx) {
    static const QuantGemmKernels kernels = amx_quant_kernels();
    return &kernels;
  }
  if (active_isa() == Isa::Avx512Bf16) {
    static const QuantGemmKernels kernels = avx512vnni_gemm_kernels();
    return &kernels;
  }
  if (active_isa() == Isa::Avx2Vnni) {
    static const QuantGemmKernels kernels = avx2vnni_gemm_kernels();
    return &kernels;
  }
  // Not on the avx512 path (AVX-512 without VNNI): its own f32 GEMM is twice
  // as wide, and the integer one has not been measured against it there.
  if (active_isa() == Isa::Avx2) {
    static const QuantGemmKernels kernels = avx2_gemm_kernels();
    return &kernels;
  }
#endif
#if defined(__aarch64__)
  if (active_isa() == Isa::NeonBf16) {
    static const QuantGemmKernels kernels = neon_i8mm_gemm_kernels();
    return &kernels;
  }
#endif
  return nullptr;
}

const QuantDotKernels& quant_dot_kernels() {
  static const QuantDotKernels portable = portable_quant_kernels();
#if defined(__x86_64__)
  switch (active_isa()) {
    case Isa::Amx:
    case Isa::Avx512Bf16: {
      static const QuantDotKernels vnni = avx512vnni_kernels();
      return vnni;
    }
    case Isa::Avx2Vnni: {
      static const QuantDotKernels avx2vnni = avx2vnni_quant_kernels();
      return avx2vnni;
    }
    case Isa::Avx512:
    case Isa::Avx2: {
      static const QuantDotKernels avx2 = avx2_quant_kernels();
      return avx2;
    }
    default: break;
  }
#endif
#if defined(__aarch64__)
  switch (active_isa()) {
    case Isa::NeonBf16:
    case Isa::NeonDot: {
      static const QuantDotKernels sdot = neon_dotprod_kernels();
      return sdot;
    }
    case Isa::Neon: {
      static const QuantDotKernels neon = neon_quant_kernels();
      return neon;
    }
    default: break;
  }
#endif
  return portable;
}

}  // namespace slm::cpu
