// WeightSource implementations: safetensors checkpoints and seeded random weights.
#include "worker/da3/weights.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <cstring>
#include <set>
#include <sstream>
#include <stdexcept>
#include <vector>

#include "worker/safetensors.h"

namespace da3 {

namespace {

std::string shape_str(at::IntArrayRef shape) {
    std::ostringstream s;
    s << '[';
    for (size_t i = 0; i < shape.size(); i++) s << (i ? ", " : "") << shape[i];
    s << ']';
    return s.str();
}

bool ends_with(const std::string& s, const char* suffix) {
    size_t n = std::strlen(suffix);
    return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

// Appends "a, b, c (and N more)" for the first few entries of a problem list.
void list_problems(std::ostringstream& msg, const char* kind, const std::vector<std::string>& items) {
    if (items.empty()) return;
    constexpr size_t kShown = 4;
    msg << "; " << items.size() << ' ' << kind << ": ";
    for (size_t i = 0; i < items.size() && i < kShown; i++) msg << (i ? ", " : "") << items[i];
    if (items.size() > kShown) msg << " (and " << items.size() - kShown << " more)";
}

class SafetensorsWeights final : public WeightSource {
public:
    SafetensorsWeights(const std::string& path, const std::string& what) : path_(path), what_(what) {
        char err[512] = "";
        file_ = st_open(path.c_str(), err, sizeof err);
        if (!file_) throw std::runtime_error(err);
        // Official checkpoints prefix every key with "model."; a bare network state_dict does not.
        bool any_prefixed = false;
        for (size_t i = 0; i < st_count(file_) && !any_prefixed; i++)
            any_prefixed = std::strncmp(st_at(file_, i)->name, "model.", 6) == 0;
        strip_model_prefix_ = !any_prefixed && st_count(file_) > 0;
    }
    ~SafetensorsWeights() override { st_close(file_); }
    SafetensorsWeights(const SafetensorsWeights&) = delete;
    SafetensorsWeights& operator=(const SafetensorsWeights&) = delete;

    at::Tensor take(const std::string& name, at::IntArrayRef shape) override {
        const st_tensor* t = lookup(name, shape);
        if (!t) return at::zeros(shape, at::kFloat);
        return to_float_tensor(*t, shape);
    }

    void expect_unused(const std::string& name, at::IntArrayRef shape) override { lookup(name, shape); }

    void ignore_prefix(const std::string& prefix) override { ignored_prefixes_.push_back(prefix); }

    void finish() override {
        std::vector<std::string> leftovers;
        for (size_t i = 0; i < st_count(file_); i++) {
            std::string name = st_at(file_, i)->name;
            if (!used_.count(name) && !ignored(name)) leftovers.push_back(name);
        }
        if (missing_.empty() && wrong_.empty() && leftovers.empty()) return;
        std::ostringstream msg;
        msg << path_ << " does not match the " << what_ << " network";
        list_problems(msg, "missing", missing_);
        list_problems(msg, "with a wrong shape or dtype", wrong_);
        list_problems(msg, "unexpected", leftovers);
        throw std::runtime_error(msg.str());
    }

    bool trained() const override { return true; }

private:
    // The tensor for network name `name` if present with `shape`, recording problems otherwise.
    const st_tensor* lookup(const std::string& name, at::IntArrayRef shape) {
        std::string key = strip_model_prefix_ && name.compare(0, 6, "model.") == 0 ? name.substr(6) : name;
        const st_tensor* t = st_find(file_, key.c_str());
        if (!t) {
            missing_.push_back(key + " " + shape_str(shape));
            return nullptr;
        }
        used_.insert(key);
        at::IntArrayRef have(t->shape, static_cast<size_t>(t->ndim));
        if (have != shape) {
            wrong_.push_back(key + " (file " + shape_str(have) + ", expected " + shape_str(shape) + ")");
            return nullptr;
        }
        if (std::strcmp(t->dtype, "F32") && std::strcmp(t->dtype, "F16") && std::strcmp(t->dtype, "BF16")) {
            wrong_.push_back(key + " (dtype " + t->dtype + "; F32, F16 or BF16 needed)");
            return nullptr;
        }
        return t;
    }

    static at::Tensor to_float_tensor(const st_tensor& t, at::IntArrayRef shape) {
        at::ScalarType src = !std::strcmp(t.dtype, "F32")   ? at::kFloat
                             : !std::strcmp(t.dtype, "F16") ? at::kHalf
                                                            : at::kBFloat16;
        // memcpy into an owned tensor: the mapping may be unaligned and must not outlive the file.
        at::Tensor out = at::empty(shape, at::TensorOptions().dtype(src));
        std::memcpy(out.data_ptr(), t.data, t.nbytes);
        return src == at::kFloat ? out : out.to(at::kFloat);
    }

    bool ignored(const std::string& name) const {
        for (const auto& p : ignored_prefixes_) {
            std::string full = strip_model_prefix_ && p.compare(0, 6, "model.") == 0 ? p.substr(6) : p;
            if (name.compare(0, full.size(), full) == 0) return true;
        }
        return false;
    }

    std::string path_, what_;
    st_file* file_ = nullptr;
    bool strip_model_prefix_ = false;
    std::set<std::string> used_;
    std::vector<std::string> missing_, wrong_, ignored_prefixes_;
};

class RandomWeights final : public WeightSource {
public:
    explicit RandomWeights(uint64_t seed) : gen_(at::detail::createCPUGenerator(seed)) {}

    at::Tensor take(const std::string& name, at::IntArrayRef shape) override {
        at::Tensor t = at::empty(shape, at::kFloat);
        if (ends_with(name, "cam_dec.fc_fov.0.weight") || ends_with(name, "cam_dec.fc_fov.0.bias")) {
            // Field of view ~1 rad: a random fc_fov would often hit the ReLU's zero, and a zero
            // fov means an "infinite" focal length that puts every point on the optical axis.
            if (shape.size() >= 2) t.normal_(0.0, 0.1 / std::sqrt(static_cast<double>(shape[1])), gen_);
            else t.fill_(1.0);
        } else if (ends_with(name, "pos_embed") || ends_with(name, "cls_token") || ends_with(name, "camera_token")) {
            t.normal_(0.0, 0.5, gen_);
        } else if (shape.size() >= 2) {
            const double fan_in = static_cast<double>(t.numel() / shape[0]);
            t.normal_(0.0, 1.0 / std::sqrt(fan_in), gen_);
        } else if (name.find(".ls1.") != std::string::npos || name.find(".ls2.") != std::string::npos ||
                   ends_with(name, "gamma")) {
            t.uniform_(0.05, 0.3, gen_);
        } else if (ends_with(name, "weight")) {
            t.uniform_(0.8, 1.2, gen_);
        } else {
            t.normal_(0.0, 0.05, gen_);
        }
        return t;
    }
    void expect_unused(const std::string&, at::IntArrayRef) override {}
    void ignore_prefix(const std::string&) override {}
    void finish() override {}
    bool trained() const override { return false; }

private:
    at::Generator gen_;
};

}  // namespace

std::unique_ptr<WeightSource> open_safetensors_weights(const std::string& path, const std::string& what) {
    return std::make_unique<SafetensorsWeights>(path, what);
}

std::unique_ptr<WeightSource> make_random_weights(uint64_t seed) {
    return std::make_unique<RandomWeights>(seed);
}

}  // namespace da3
