#include "interlace/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/random.h"

namespace interlace::model {
namespace {

using core::DType;
using core::Tensor;

class Safetensors : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("interlace_st_" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }
  std::string path(const std::string& name) { return (dir_ / name).string(); }
  // Writes a raw file: u64 header length, header, data bytes.
  std::string raw(const std::string& name, const std::string& header, size_t data_bytes,
                  int64_t declared_len = -1) {
    std::ofstream out(path(name), std::ios::binary);
    uint64_t len = declared_len >= 0 ? uint64_t(declared_len) : header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
    out << std::string(data_bytes, '\0');
    return path(name);
  }
  std::string error_of(const std::string& file) {
    auto f = SafetensorsFile::open(file);
    return f.ok() ? std::string("(opened)") : std::string(f.status().message());
  }
  std::filesystem::path dir_;
};

TEST_F(Safetensors, RoundTripsEveryDtypeAndMapsWithoutCopying) {
  std::mt19937_64 rng(testing::fresh_seed());
  auto v = testing::normal_vector(rng, 6 * 5);
  Tensor f32 = Tensor::from_vector(v, {6, 5});
  Tensor bf16 = f32.to_dtype(DType::kBF16);
  Tensor f16 = f32.to_dtype(DType::kF16);
  Tensor odd = Tensor::from_vector({1, 2, 3}, {3}).to_dtype(DType::kF16);  // leaves later data unaligned
  ASSERT_TRUE(write_safetensors(path("a.safetensors"),
                                {{"w.f32", f32}, {"w.bf16", bf16}, {"odd", odd}, {"w.f16", f16}},
                                {{"format", "pt"}})
                  .ok());
  auto file = SafetensorsFile::open(path("a.safetensors"));
  ASSERT_TRUE(file.ok()) << file.status();
  EXPECT_EQ((*file)->metadata().at("format"), "pt");
  auto a = (*file)->get("w.f32");
  ASSERT_TRUE(a.ok());
  EXPECT_TRUE(a->is_view());  // zero-copy: 8-byte aligned data section
  EXPECT_EQ(a->shape(), (core::Shape{6, 5}));
  EXPECT_EQ(0, std::memcmp(a->raw(), f32.raw(), f32.nbytes()));
  auto b = (*file)->get("w.bf16");
  EXPECT_EQ(b->dtype(), DType::kBF16);
  EXPECT_EQ(0, std::memcmp(b->raw(), bf16.raw(), bf16.nbytes()));
  auto c = (*file)->get("w.f16");
  EXPECT_EQ(c->to_f32().f32()[7], round_to(DType::kF16, v[7]));
  // The views outlive the file object.
  file->reset();
  EXPECT_EQ(a->f32()[3], v[3]);
}

TEST_F(Safetensors, RejectsEachKindOfCorruptHeaderWithAClearMessage) {
  {
    std::ofstream(path("short")) << "abc";
    EXPECT_NE(error_of(path("short")).find("too short"), std::string::npos) << error_of(path("short"));
  }
  EXPECT_NE(error_of(raw("len", "{}", 0, 1 << 20)).find("exceeds the file size"), std::string::npos);
  EXPECT_NE(error_of(raw("json", "{not json", 0)).find("not a JSON object"), std::string::npos);
  EXPECT_NE(error_of(raw("nodtype", R"({"a":{"shape":[1],"data_offsets":[0,4]}})", 4)).find("'dtype'"),
            std::string::npos);
  std::string e = error_of(raw("dtype", R"({"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}})", 8));
  EXPECT_NE(e.find("tensor 'a'"), std::string::npos) << e;
  EXPECT_NE(e.find("I64"), std::string::npos) << e;
  e = error_of(raw("span", R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})", 20));
  EXPECT_NE(e.find("needs 24 bytes but data_offsets span 20"), std::string::npos) << e;
  e = error_of(raw("range", R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
  EXPECT_NE(e.find("past the data section"), std::string::npos) << e;
  e = error_of(raw("overlap",
                   R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                   12));
  EXPECT_NE(e.find("overlap"), std::string::npos) << e;
  e = error_of(raw("reversed", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}})", 8));
  EXPECT_NE(e.find("reversed"), std::string::npos) << e;
  e = error_of(raw("shape", R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4));
  EXPECT_NE(e.find("shape entries"), std::string::npos) << e;
  e = error_of(raw("gap", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8));
  EXPECT_NE(e.find("unaccounted bytes"), std::string::npos) << e;
  e = error_of(raw("trailing", R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 8));
  EXPECT_NE(e.find("trailing bytes"), std::string::npos) << e;
  e = error_of(raw("huge", R"({"a":{"dtype":"BF16","shape":[9223372036854775807,9223372036854775807,4],"data_offsets":[0,0]}})", 0));
  EXPECT_NE(e.find("needs"), std::string::npos) << e;
  e = error_of(raw("meta", R"({"__metadata__":{"x":1}})", 0));
  EXPECT_NE(e.find("__metadata__"), std::string::npos) << e;
  // Each message names the file.
  EXPECT_NE(e.find(path("meta")), std::string::npos) << e;
  // Nesting is refused before parsing (brackets inside strings do not count):
  // 10 MB of '[' took seconds and gigabytes to refuse.
  e = error_of(raw("deep", "{\"a\":" + std::string(10u << 20, '[') + "}", 0));
  EXPECT_NE(e.find("nests deeper than 3 levels"), std::string::npos) << e.substr(0, 200);
  e = error_of(raw("quoted", R"({"a[[[{{{":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}})", 4));
  EXPECT_EQ(e, "(opened)");
}

TEST_F(Safetensors, ShardIndexMustMatchTheShards) {
  Tensor t = Tensor::from_vector({1, 2}, {2});
  ASSERT_TRUE(write_safetensors(path("model-00001-of-00001.safetensors"), {{"a", t}}).ok());
  std::ofstream(path("model.safetensors.index.json"))
      << R"({"weight_map":{"a":"model-00001-of-00001.safetensors","b":"model-00001-of-00001.safetensors"}})";
  auto c = Checkpoint::open(dir_.string());
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("'b'"), std::string::npos) << c.status();
  EXPECT_FALSE(Checkpoint::open(path("nothing-here")).ok());
}

}  // namespace
}  // namespace interlace::model
