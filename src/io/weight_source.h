// Where a model's weights come from, by their Hugging Face names: the
// safetensors files of a model folder (WeightFiles) or a GGUF file
// (model/gguf_model.h), so one loader checks shapes and converts dtypes for both.
#pragma once

#include <slm/tensor.h>

#include <string>
#include <vector>

namespace slm {

class WeightSource {
 public:
  virtual ~WeightSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  virtual Tensor tensor(const std::string& name) const = 0;
  virtual std::vector<std::string> names() const = 0;
  // What error messages call the source: "model.safetensors", "model.gguf".
  virtual std::string describe() const = 0;
  // Returns the pages of a tensor viewing the source to the page cache, for
  // tensors that were converted and are not read again.
  virtual void release(const Tensor& view) const = 0;
};

}  // namespace slm
