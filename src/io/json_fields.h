// Reading JSON files field by field, each failure naming the file, the field
// and what was expected: config.json, generation_config.json and the like.
#pragma once

#include <slm/error.h>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <vector>

namespace slm {

// The whole file as JSON; fails naming it when it cannot be read or parsed.
nlohmann::json read_json(const std::filesystem::path& path);

// Over nlohmann::json, or ordered_json where key order matters (a request
// whose tool schemas a chat template prints).
template <class Json>
class BasicJsonFields {
 public:
  using json = Json;
  BasicJsonFields(const json& object, std::string file) : object_(object), file_(std::move(file)) {
    if (!object_.is_object()) fail(file_, ": expected a JSON object");
  }

  bool has(const char* key) const { return object_.contains(key) && !object_[key].is_null(); }
  // Written as null (which some fields distinguish from leaving them out).
  bool is_null(const char* key) const { return object_.contains(key) && object_[key].is_null(); }

  int64_t integer(const char* key, int64_t low, int64_t high, std::optional<int64_t> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) return *fallback;
      fail(file_, ": missing field \"", key, "\" (expected an integer)");
    }
    const json& v = object_[key];
    if (!v.is_number_integer()) fail(file_, ": field \"", key, "\" must be an integer, got ", v.dump());
    const int64_t value = v.template get<int64_t>();
    if (value < low || value > high) {
      fail(file_, ": field \"", key, "\" = ", value, " is out of range (expected ", low, " to ", high, ")");
    }
    return value;
  }

  double number(const char* key, double low, double high, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = object_[key];
    if (!v.is_number()) fail(file_, ": field \"", key, "\" must be a number, got ", v.dump());
    const double value = v.template get<double>();
    if (!(value >= low && value <= high)) {
      fail(file_, ": field \"", key, "\" = ", value, " is out of range (expected ", low, " to ", high, ")");
    }
    return value;
  }

  bool boolean(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    if (!object_[key].is_boolean()) fail(file_, ": field \"", key, "\" must be true or false");
    return object_[key].template get<bool>();
  }

  std::string string(const char* key, std::optional<std::string> fallback = std::nullopt) const {
    if (!has(key)) {
      if (fallback) return *fallback;
      fail(file_, ": missing field \"", key, "\" (expected a string)");
    }
    if (!object_[key].is_string()) fail(file_, ": field \"", key, "\" must be a string");
    return object_[key].template get<std::string>();
  }

  // A token id or a list of them.
  std::vector<int32_t> ids(const char* key) const {
    std::vector<int32_t> out;
    if (!has(key)) return out;
    const json& v = object_[key];
    auto one = [&](const json& x) {
      if (!x.is_number_integer() || x.template get<int64_t>() < 0 || x.template get<int64_t>() > INT32_MAX) {
        fail(file_, ": field \"", key, "\" must be a token id or a list of token ids, got ", v.dump());
      }
      out.push_back(static_cast<int32_t>(x.template get<int64_t>()));
    };
    if (v.is_array()) {
      for (const json& x : v) one(x);
    } else {
      one(v);
    }
    return out;
  }

  const json& raw(const char* key) const { return object_[key]; }
  const std::string& file() const { return file_; }

 private:
  const json& object_;
  std::string file_;
};

using JsonFields = BasicJsonFields<nlohmann::json>;

}  // namespace slm
