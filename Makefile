# da3-server build. `make` builds the three programs and the unit tests; `make run` and
# `make test` first install missing system packages (scripts/install-deps.sh).
#   SAN=1          build with AddressSanitizer + UBSan into build/san
#   TSAN=1         build with ThreadSanitizer into build/tsan
#   TORCH_DIR=DIR  build against another libtorch (e.g. a CUDA libtorch 2.x: DIR/include, DIR/lib)

CC  ?= gcc
CXX ?= g++
SAN ?= 0
TSAN ?= 0
TORCH_DIR ?=

BUILD ?= build
ifeq ($(SAN)$(TSAN),11)
$(error SAN=1 and TSAN=1 cannot be combined: AddressSanitizer and ThreadSanitizer exclude each other)
endif
ifeq ($(SAN),1)
override BUILD := $(BUILD)/san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
ifeq ($(TSAN),1)
override BUILD := $(BUILD)/tsan
SANFLAGS := -fsanitize=thread -fno-omit-frame-pointer
endif

OPT ?= -O2
WARN := -Wall -Wextra -Werror
CPPFLAGS += -I. -D_GNU_SOURCE -MMD -MP
CFLAGS   += -std=c11 $(OPT) -g $(WARN) $(SANFLAGS) -fPIC
CXXFLAGS += -std=c++17 $(OPT) -g $(WARN) $(SANFLAGS) -fPIC

ifeq ($(TORCH_DIR),)
TORCH_INC := /usr/include
TORCH_LIBS := -ltorch -ltorch_cpu -lc10
else
TORCH_INC := $(TORCH_DIR)/include
# --no-as-needed: the CUDA libraries register their kernels when loaded, though nothing names them.
# --allow-shlib-undefined: a wheel's libtorch_cuda finds its NVIDIA libraries at run time through
# its own $ORIGIN paths; the link must not insist on resolving them first.
TORCH_LIBS := -L$(TORCH_DIR)/lib -Wl,-rpath,$(TORCH_DIR)/lib -Wl,--no-as-needed \
              $(patsubst $(TORCH_DIR)/lib/lib%.so,-l%,$(wildcard $(TORCH_DIR)/lib/libtorch_cuda.so $(TORCH_DIR)/lib/libc10_cuda.so)) \
              -ltorch -ltorch_cpu -lc10 -Wl,--as-needed -Wl,--allow-shlib-undefined
endif
# /usr/include is already a system directory: naming it again with -isystem breaks
# #include_next in libstdc++, so Debian's build only adds the C++ API folder.
TORCH_CXXFLAGS := $(if $(TORCH_DIR),-isystem $(TORCH_INC)) -isystem $(TORCH_INC)/torch/csrc/api/include

# The front never loads libtorch: it needs none of it, and libtorch's size (memory, static TLS,
# load time) would be paid by every connection thread. Workers and tools get the full set.
FRONT_LDLIBS := -lcivetweb -ljansson -lssl -lcrypto -lturbojpeg -lpng -lheif -lwebp -lpthread -lrt -lm
LDLIBS := -lcivetweb -ljansson -lssl -lcrypto -lturbojpeg -lpng -lheif -lwebp $(TORCH_LIBS) -lpthread -lrt -lm
LDFLAGS += $(SANFLAGS)

# Every .c/.cpp outside the program mains goes into one static library.
MAINS := frontend/main.c worker/worker_main.c worker/infer_main.c
LIB_C   := $(filter-out $(MAINS),$(wildcard common/*.c shm/*.c frontend/*.c worker/*.c))
LIB_CXX := $(wildcard worker/*.cpp worker/da3/*.cpp)
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/obj/%.o) $(LIB_CXX:%.cpp=$(BUILD)/obj/%.o)
LIB := $(BUILD)/libda3.a

PROGS := $(BUILD)/da3-server $(BUILD)/da3-worker $(BUILD)/da3-infer
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TOOL_SRC := $(wildcard tests/tools/*.c)
TOOL_BIN := $(TOOL_SRC:tests/tools/%.c=$(BUILD)/tools/%)
# da3-load (tests/load/): the load generator; of the project it links only common/b64 and common/util.
LOAD_SRC := $(wildcard tests/load/*.c)
LOAD_BIN := $(BUILD)/da3-load

.PHONY: all deps run test bench bench-load clean format
all: $(PROGS) $(UNIT_BIN) $(TOOL_BIN) $(LOAD_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.o: %.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CPPFLAGS) $(TORCH_CXXFLAGS) $(CXXFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/da3-server: $(BUILD)/obj/frontend/main.o $(LIB)
	$(CC) $(LDFLAGS) $^ $(FRONT_LDLIBS) -o $@
$(BUILD)/da3-worker: $(BUILD)/obj/worker/worker_main.o $(LIB)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/da3-infer: $(BUILD)/obj/worker/infer_main.o $(LIB)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@
$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/tools/%: $(BUILD)/obj/tests/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CXX) $(LDFLAGS) $^ $(LDLIBS) -o $@

$(LOAD_BIN): $(LOAD_SRC:%.c=$(BUILD)/obj/%.o) $(BUILD)/obj/common/b64.o $(BUILD)/obj/common/util.o
	$(CC) $(LDFLAGS) $^ -lcivetweb -ljansson -lcrypto -lpthread -lm -o $@

# ---- web-assets: the page's three.js. web/package.json pins the npm package; `npm ci` installs
# it into web/node_modules and the files the page imports are copied into web/vendor/three/ (both
# git-ignored), in the package's own layout so the add-ons' relative imports resolve. The server
# then serves them with the page: no CDN, which users' networks may block. `run` and `test`
# depend on it, after `deps` has installed Debian's nodejs and npm.
THREE_FILES := LICENSE build/three.module.js build/three.core.js examples/jsm/loaders/GLTFLoader.js \
               examples/jsm/controls/OrbitControls.js examples/jsm/utils/BufferGeometryUtils.js \
               examples/jsm/utils/SkeletonUtils.js
WEB_ASSETS := $(THREE_FILES:%=web/vendor/three/%)
.PHONY: web-assets
web-assets: $(WEB_ASSETS)
# npm rewrites node_modules/.package-lock.json at every install: it stamps the last `npm ci`.
web/node_modules/.package-lock.json: web/package.json web/package-lock.json
	npm ci --prefix web --no-audit --no-fund --loglevel=error
web/vendor/three/%: web/node_modules/.package-lock.json
	@mkdir -p $(dir $@)
	cp web/node_modules/three/$* $@
# ---- end of web-assets

deps:
	@scripts/install-deps.sh

run: deps web-assets
	@$(MAKE) --no-print-directory all
	$(BUILD)/da3-server --host 127.0.0.1 --port 8000 --workers 1 --device cpu --model demo $(ARGS)

test: deps web-assets
	@scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) SAN=$(SAN) TSAN=$(TSAN) scripts/run-tests.sh

bench:
	@scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) scripts/bench.sh

# Capacity figures (scripts/bench-load.sh; docs/load-testing.md): printed, not asserted.
bench-load:
	@scripts/install-deps.sh --test
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) scripts/bench-load.sh

# Soak (scripts/soak.sh, tests/soak/soak.py; docs/load-testing.md): SOAK_SECONDS (600) of mixed
# load on its own server, a row every SOAK_INTERVAL (10) s, exits 1 when a series grows. Not in CI.
.PHONY: soak
soak:
	@scripts/install-deps.sh
	@$(MAKE) --no-print-directory all
	BUILD=$(BUILD) scripts/soak.sh

# ---- fuzz: libFuzzer harnesses (tests/fuzz/fuzz_<name>.c; tests/fuzz/README.md says what each
# drives). Built with Debian's clang whatever CC is, always into build/fuzz (never BUILD: the
# sanitizer builds use other compilers' flags). The project's C files are compiled once into an
# archive, so each harness links only the objects its entry points need (never the C++/libtorch
# ones). `make fuzz` runs each harness for FUZZ_SECONDS (FUZZ_TARGETS="b64 ws_frame" for some)
# and prints executions and exec/s; `make fuzz-smoke` (part of scripts/run-tests.sh) runs each
# over its committed corpus plus FUZZ_RUNS fixed-seed mutations and fails on any report.
FUZZ_CC ?= clang
FUZZ_SECONDS ?= 120
FUZZ_RUNS ?= 20000
FUZZ_DIR := build/fuzz
FUZZ_SANFLAGS := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -g -O1 $(WARN) -I. -D_GNU_SOURCE -MMD -MP $(FUZZ_SANFLAGS)
# Only the front's parsers and what they call; common/*.c whole, so new image formats join in.
FUZZ_LIB_SRC := $(wildcard common/*.c) worker/safetensors.c \
                $(addprefix frontend/,client_limits.c image_message.c ws_frame.c http_head.c session_config.c session_store.c \
                  session_registry.c session_images.c session_json.c metrics.c)
FUZZ_LIB := $(FUZZ_DIR)/libda3fuzz.a
FUZZ_NAMES := $(patsubst tests/fuzz/fuzz_%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS ?= $(FUZZ_NAMES)
FUZZ_BIN := $(FUZZ_NAMES:%=$(FUZZ_DIR)/fuzz_%)
.PHONY: fuzz fuzz-build fuzz-smoke
fuzz-build: $(FUZZ_BIN)
$(FUZZ_DIR)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@
$(FUZZ_LIB): $(FUZZ_LIB_SRC:%.c=$(FUZZ_DIR)/obj/%.o)
	rm -f $@ && ar rcs $@ $^
$(FUZZ_DIR)/fuzz_%: $(FUZZ_DIR)/obj/tests/fuzz/fuzz_%.o $(FUZZ_LIB)
	$(FUZZ_CC) $(FUZZ_SANFLAGS) -fsanitize=fuzzer $^ $(FRONT_LDLIBS) -o $@
fuzz: fuzz-build
	tests/fuzz/run.sh fuzz $(FUZZ_SECONDS) $(FUZZ_TARGETS)
fuzz-smoke: fuzz-build
	@tests/fuzz/run.sh smoke $(FUZZ_RUNS) $(FUZZ_TARGETS)
# ---- end of fuzz

clean:
	rm -rf build web/vendor

-include $(shell find build -name '*.d' 2>/dev/null)
