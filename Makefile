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
FRONT_LDLIBS := -lcivetweb -ljansson -lcrypto -lturbojpeg -lpng -lheif -lwebp -lpthread -lrt -lm
LDLIBS := -lcivetweb -ljansson -lcrypto -lturbojpeg -lpng -lheif -lwebp $(TORCH_LIBS) -lpthread -lrt -lm
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

deps:
	@scripts/install-deps.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/da3-server --host 127.0.0.1 --port 8000 --workers 1 --device cpu --model demo $(ARGS)

test:
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

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
