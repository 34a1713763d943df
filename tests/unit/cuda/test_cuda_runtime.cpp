// The CUDA runtime layer: what it says where no GPU is present (every CI
// machine), and device memory through the caching allocator where one is
// (scripts/gpu_check.sh). GPU-only tests skip, saying why.
#include "backend/cuda/cuda_runtime.h"

#include <slm/error.h>
#include <slm/tensor.h>

#include "model/device_map.h"

#include <gtest/gtest.h>

#include <vector>

using namespace slm;

namespace {

#define REQUIRE_GPU()                                                              \
  if (cuda::inventory().count == 0) {                                              \
    GTEST_SKIP() << "no GPU: " << cuda::inventory().reason << " (not run here)"; \
  }

TEST(CudaRuntime, ErrorsNameTheCallTheFileAndTheError) {
  try {
    cuda::check(cudaErrorInvalidValue, "cudaMemcpy(a, b, n)", "copy.cpp", 12);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "copy.cpp:12: cudaMemcpy(a, b, n) failed: invalid argument (cudaErrorInvalidValue)");
  }
  EXPECT_NO_THROW(SLM_CUDA_CHECK(cudaSuccess));
}

TEST(CudaRuntime, WithoutAGpuDeviceCudaSaysWhyAndAutoIsTheCpu) {
  const GpuInventory gpus = gpu_inventory();
  if (gpus.count > 0) GTEST_SKIP() << "a GPU is present: the no-GPU path is not run here";
  EXPECT_NE(gpus.reason.find("cudaGetDeviceCount"), std::string::npos) << gpus.reason;
  try {
    place_model({"cuda", -1, {}}, 2, gpus);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), "--device cuda: no GPU found (" + gpus.reason + ")");
  }
  EXPECT_FALSE(place_model({}, 2, gpus).uses(Device::CUDA));
}

TEST(CudaRuntime, AutoIsTheFirstGpuWhereThereIsOne) {
  REQUIRE_GPU();
  const DevicePlacement placement = place_model({}, 2, gpu_inventory());
  EXPECT_FALSE(placement.uses(Device::CPU));
  EXPECT_EQ(placement.embed.name(), "cuda:0");
}

TEST(CudaRuntime, UntilTheKernelsExistAModelLoadsOnTheCpuOrSaysWhyNot) {
  REQUIRE_GPU();
  LoadOptions options;
  EXPECT_FALSE(check_placement(options, 2).uses(Device::CUDA));
  options.device = "cuda";
  try {
    check_placement(options, 2);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cannot run a model on a GPU yet"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, TensorsOnTheGpuAreZeroedAndTheirBlocksReused) {
  REQUIRE_GPU();
  std::vector<float> back(1000, 1.0f);
  {
    const Tensor t = Tensor::zeros(DType::F32, {1000}, Device::CUDA);
    EXPECT_EQ(t.device(), Device::CUDA);
    SLM_CUDA_CHECK(cudaMemcpy(back.data(), t.data(), t.nbytes(), cudaMemcpyDeviceToHost));
  }
  for (float v : back) ASSERT_EQ(v, 0.0f);
  const size_t before = cuda::allocator(0).stats().driver_allocations;
  for (int step = 0; step < 100; ++step) {
    const Tensor a = Tensor::zeros(DType::BF16, {333, 7}, Device::CUDA);
    const Tensor b = Tensor::zeros(DType::F32, {1 << 20}, Device::CUDA);
  }
  EXPECT_LE(cuda::allocator(0).stats().driver_allocations, before + 2);
  EXPECT_EQ(cuda::allocator(0).stats().in_use, 0u);
}

}  // namespace
