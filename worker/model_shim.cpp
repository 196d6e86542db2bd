// extern "C" border of the DA3 network (worker/model.h, worker/da3/introspect.h). Every C++
// exception stops here and becomes -1 / NULL plus a message; nothing throws across.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <dlfcn.h>
#include <torch/cuda.h>

#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <string>

#include "worker/da3/introspect.h"
#include "worker/da3/network.hpp"
#include "worker/model.h"

struct da3_model {
    std::unique_ptr<da3::Network> net;
    std::string name;
};

namespace {

void set_err(char* err, size_t errlen, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void set_err(char* err, size_t errlen, const char* fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

// Runs body(); converts any exception into -1 with "<what>: <reason>" in err.
template <class Body>
int guarded(char* err, size_t errlen, const char* what, Body&& body) {
    try {
        body();
        return 0;
    } catch (const c10::Error& e) {
        // what_without_backtrace: the message without libtorch's C++ stack dump. Allocation
        // failures (CPU: "can't allocate memory", CUDA: "out of memory") are named as such first,
        // so a client can tell "too much at once" from a bug.
        const std::string msg = e.what_without_backtrace();
        if (msg.find("allocate memory") != std::string::npos || msg.find("out of memory") != std::string::npos)
            set_err(err, errlen, "%s: out of memory (send fewer or smaller images, or a lower process_res): %s", what,
                    msg.c_str());
        else
            set_err(err, errlen, "%s: %s", what, msg.c_str());
    } catch (const std::bad_alloc&) {
        set_err(err, errlen, "%s: out of memory (send fewer or smaller images, or a lower process_res)", what);
    } catch (const std::exception& e) {
        set_err(err, errlen, "%s: %s", what, e.what());
    } catch (...) {
        set_err(err, errlen, "%s: unknown error", what);
    }
    return -1;
}

at::Device parse_device(const char* spec) {
    const std::string s = spec && *spec ? spec : "cpu";
    if (s == "cpu") return at::Device(at::kCPU);
    if (s.compare(0, 4, "cuda") != 0)
        throw std::invalid_argument("unknown device '" + s + "' (use cpu, cuda or cuda:N)");
    if (!torch::cuda::is_available())
        throw std::invalid_argument("device '" + s +
                                    "' requested, but this libtorch build has no CUDA support or no GPU "
                                    "is visible (use --device cpu, or build with TORCH_DIR=<CUDA libtorch>)");
    at::Device dev(s);  // accepts "cuda" and "cuda:N"
    if (dev.has_index() && dev.index() >= static_cast<int>(torch::cuda::device_count()))
        throw std::invalid_argument("device '" + s + "' does not exist (" +
                                    std::to_string(torch::cuda::device_count()) + " GPU(s) visible)");
    return dev;
}

// Set once da3_set_num_threads has chosen the thread count explicitly.
std::atomic<bool> g_threads_chosen{false};

// The network splits its BLAS work across libtorch's thread pool itself (da3::parallel_tasks).
// OpenBLAS (Debian's BLAS behind libtorch) would otherwise run a second pool, whose threads
// fight libtorch's spin-waiting OpenMP threads for the same cores (2-3x slower on 2 cores).
// With a one-thread libtorch pool (its default on some machines) OpenBLAS keeps its own
// threading unless the caller explicitly asked for one thread.
void configure_blas_threads() {
    using SetThreads = void (*)(int);
    auto set_blas_threads = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
    if (set_blas_threads && (g_threads_chosen || at::get_num_threads() > 1)) set_blas_threads(1);
}

da3::RefView to_ref_view(ref_view_strategy s) {
    switch (s) {
        case REF_VIEW_SADDLE_BALANCED: return da3::RefView::SaddleBalanced;
        case REF_VIEW_FIRST: return da3::RefView::First;
        case REF_VIEW_MIDDLE: return da3::RefView::Middle;
    }
    throw std::invalid_argument("unknown reference-view strategy " + std::to_string(static_cast<int>(s)));
}

// A malloc'd float32 copy of t (on any device), as C callers free() it.
float* to_c_array(const at::Tensor& t) {
    at::Tensor cpu = t.to(at::kCPU, at::kFloat).contiguous();
    const size_t bytes = static_cast<size_t>(cpu.numel()) * sizeof(float);
    float* p = static_cast<float*>(std::malloc(bytes ? bytes : 1));
    if (!p) throw std::bad_alloc();
    std::memcpy(p, cpu.data_ptr<float>(), bytes);
    return p;
}

void check_input(const da3_model* m, const float* input, int n, int height, int width,
                 const da3_known_cameras* cams, const da3_prediction* out) {
    if (!m || !m->net) throw std::invalid_argument("no model");
    if (!input || !out) throw std::invalid_argument("input and output must not be NULL");
    const int patch = m->net->config().patch_size;
    if (n < 1 || height < patch || width < patch || height % patch || width % patch)
        throw std::invalid_argument("bad input shape: " + std::to_string(n) + " view(s) of " +
                                    std::to_string(height) + "x" + std::to_string(width) +
                                    " (need >= 1 view, H and W positive multiples of " +
                                    std::to_string(patch) + ")");
    const double elems = 3.0 * n * static_cast<double>(height) * width;
    if (elems > static_cast<double>(std::numeric_limits<int64_t>::max() / 8))
        throw std::invalid_argument("input too large");
    if (cams && (!cams->extrinsics != !cams->intrinsics))
        throw std::invalid_argument("known cameras need both extrinsics and intrinsics");
}

// The shared body of da3_model_forward and da3_model_forward_debug.
void run_forward(da3_model* m, const float* input, int n, int height, int width, const da3_known_cameras* cams,
                 ref_view_strategy strategy, da3_prediction* out, da3_backbone_features* feats) {
    check_input(m, input, n, height, width, cams, out);
    c10::InferenceMode no_autograd;
    // Borrowed, never written: the network copies to its device / reads only.
    at::Tensor images = at::from_blob(const_cast<float*>(input), {n, 3, height, width}, at::kFloat);
    at::Tensor w2c, intrinsics;
    if (cams && cams->extrinsics) {
        w2c = at::from_blob(const_cast<float*>(cams->extrinsics), {n, 4, 4}, at::kFloat);
        intrinsics = at::from_blob(const_cast<float*>(cams->intrinsics), {n, 3, 3}, at::kFloat);
    }
    da3::BackboneOutput backbone;
    da3::NetworkOutput o = m->net->forward(images, w2c, intrinsics, to_ref_view(strategy), feats ? &backbone : nullptr);

    da3_prediction p{};
    p.n = n;
    p.height = height;
    p.width = width;
    try {
        p.depth = to_c_array(o.depth);
        p.conf = to_c_array(o.conf);
        p.extrinsics = to_c_array(o.extrinsics);
        p.intrinsics = to_c_array(o.intrinsics);
        if (feats) {
            feats->n = n;
            feats->patches = static_cast<int>(backbone.tokens[0].size(1));
            feats->dim = static_cast<int>(backbone.tokens[0].size(2));
            feats->reference_view = backbone.reference_view;
            for (int i = 0; i < 4; i++) {
                feats->tokens[i] = to_c_array(backbone.tokens[static_cast<size_t>(i)]);
                feats->cam[i] = to_c_array(backbone.cam[static_cast<size_t>(i)]);
            }
        }
    } catch (...) {
        da3_prediction_free(&p);
        if (feats) da3_backbone_features_free(feats);
        throw;
    }
    *out = p;
}

}  // namespace

extern "C" {

da3_model* da3_model_open(const char* path, const char* device, char* err, size_t errlen) {
    std::unique_ptr<da3_model> m;
    int rc = guarded(err, errlen, "cannot open model", [&] {
        if (!path || !*path) throw std::invalid_argument("no model path given (a folder or \"demo\")");
        const at::Device dev = parse_device(device);
        configure_blas_threads();
        c10::InferenceMode no_autograd;
        m = std::make_unique<da3_model>();
        // "demo" is DA3-Small; "demo-base", "demo-large", "demo-giant" give the bigger topologies
        // (random weights too: for benchmarks and memory checks without a checkpoint).
        static const char* const demos[][3] = {{"demo", "da3-small", "DA3-Small"},
                                               {"demo-small", "da3-small", "DA3-Small"},
                                               {"demo-base", "da3-base", "DA3-Base"},
                                               {"demo-large", "da3-large", "DA3-Large"},
                                               {"demo-giant", "da3-giant", "DA3-Giant"}};
        const char* const* demo = nullptr;
        for (const auto& d : demos)
            if (std::strcmp(path, d[0]) == 0) demo = d;
        if (demo) {
            m->net = da3::Network::demo(dev, demo[1]);
            m->name = std::string(demo[0]) + " (" + demo[2] + " topology, untrained random weights)";
        } else {
            m->net = da3::Network::from_folder(path, dev);
            m->name = std::string(path) + " (" + m->net->config().model_name + ")";
        }
    });
    return rc == 0 ? m.release() : nullptr;
}

double da3_model_backbone_flops(const da3_model* m, int n, int height, int width) {
    return m && m->net ? m->net->config().backbone_matmul_flops(n, height, width) : 0.0;
}

const char* da3_model_name(const da3_model* m) { return m ? m->name.c_str() : "(no model)"; }

int da3_model_is_trained(const da3_model* m) { return m && m->net && m->net->trained() ? 1 : 0; }

int da3_model_forward(da3_model* m, const float* input, int n, int height, int width, const da3_known_cameras* cams,
                      ref_view_strategy strategy, da3_prediction* out, char* err, size_t errlen) {
    if (out) *out = da3_prediction{};
    return guarded(err, errlen, "forward failed",
                   [&] { run_forward(m, input, n, height, width, cams, strategy, out, nullptr); });
}

int da3_model_forward_debug(da3_model* m, const float* input, int n, int height, int width,
                            const da3_known_cameras* cams, ref_view_strategy strategy, da3_prediction* out,
                            da3_backbone_features* feats, char* err, size_t errlen) {
    if (out) *out = da3_prediction{};
    if (feats) *feats = da3_backbone_features{};
    return guarded(err, errlen, "forward failed",
                   [&] { run_forward(m, input, n, height, width, cams, strategy, out, feats); });
}

void da3_prediction_free(da3_prediction* p) {
    if (!p) return;
    std::free(p->depth);
    std::free(p->conf);
    std::free(p->extrinsics);
    std::free(p->intrinsics);
    *p = da3_prediction{};
}

void da3_backbone_features_free(da3_backbone_features* f) {
    if (!f) return;
    for (int i = 0; i < 4; i++) {
        std::free(f->tokens[i]);
        std::free(f->cam[i]);
    }
    *f = da3_backbone_features{};
}

void da3_model_close(da3_model* m) {
    try {
        delete m;
    } catch (...) {  // a destructor that throws must not cross into C
    }
}

void da3_set_cpu_bf16(int on) { da3::set_cpu_bf16(on != 0); }

void da3_set_num_threads(int n) {
    if (n <= 0) return;
    try {
        at::set_num_threads(n);
        g_threads_chosen = true;
        configure_blas_threads();
    } catch (...) {
    }
}

}  // extern "C"
