// What quantizing at load (--dtype q8 / q4) costs a trained model: the
// committed default model (models/slm-tiny, bf16) against itself quantized,
// on the logits of a prompt and on the perplexity of text it never saw.
// The bounds hold q8 to near-lossless and q4 to a modest loss; the measured
// figures are recorded as test properties (docs/models.md quotes them).
#include <slm/generate.h>
#include <slm/model.h>
#include <slm/tokenizer.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

namespace {

const std::filesystem::path kModel = std::filesystem::path(SLM_SOURCE_DIR) / "models" / "slm-tiny";

// Written for this test, in the style of the training text (KJV), never in it.
constexpr const char* kHeldOut =
    "And the king said unto his servants, Go ye into the city, and bring me word of all that is done there. "
    "The people of the land gathered at the gate, and the elders spake unto them, saying, Fear not, for the "
    "Lord hath heard the voice of your cry. Then the prophet arose and went down to the river, and he washed "
    "seven times, and his flesh came again like unto the flesh of a little child. And it came to pass in those "
    "days, that there was a famine in the land, and the men of the city went forth to seek bread.";

struct Measured {
  std::vector<float> logits;  // after the prompt
  double perplexity;
};

Measured measure(slm::DType dtype, const std::vector<int32_t>& ids) {
  slm::LoadOptions options;
  options.dtype = dtype;
  slm::Model model = slm::Model::load(kModel, options);
  slm::KVCache cache(model.config(), static_cast<int64_t>(ids.size()));
  const std::span<const float> last = model.forward_last_logits(std::span(ids).first(24), cache);
  Measured m{{last.begin(), last.end()}, 0};
  m.perplexity = slm::perplexity(model, ids, static_cast<int64_t>(ids.size())).perplexity;
  return m;
}

TEST(Quantized, LogitsAndPerplexityStayCloseToBf16) {
  const slm::Tokenizer tokenizer = slm::Tokenizer::from_dir(kModel);
  const std::vector<int32_t> ids = tokenizer.encode(kHeldOut);
  ASSERT_GT(ids.size(), 64u);
  const Measured bf16 = measure(slm::DType::BF16, ids);
  double scale = 0;
  for (float v : bf16.logits) scale = std::max(scale, std::fabs(static_cast<double>(v)));
  // Relative logit error bounds and perplexity ratio bounds, per dtype.
  for (const auto& [dtype, max_logit_error, max_ppl_ratio] :
       {std::tuple{slm::DType::Q8, 0.02, 1.01}, std::tuple{slm::DType::Q4, 0.10, 1.05}}) {
    const Measured q = measure(dtype, ids);
    double worst = 0;
    for (size_t i = 0; i < q.logits.size(); ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(q.logits[i]) - bf16.logits[i]));
    }
    const std::string name(slm::dtype_name(dtype));
    const double ratio = q.perplexity / bf16.perplexity;
    RecordProperty(name + "_logit_error", std::to_string(worst / scale));
    RecordProperty(name + "_perplexity", std::to_string(q.perplexity));
    RecordProperty("bf16_perplexity", std::to_string(bf16.perplexity));
    std::printf("%s: max logit error %.4f of max |logit|; perplexity %.3f against bf16 %.3f (x%.4f)\n", name.c_str(),
                worst / scale, q.perplexity, bf16.perplexity, ratio);
    EXPECT_LT(worst / scale, max_logit_error) << name;
    EXPECT_LT(ratio, max_ppl_ratio) << name;
    EXPECT_GT(ratio, 1.0 / max_ppl_ratio) << name;
  }
}

}  // namespace
