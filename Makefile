# agentbus: one Makefile for the common library, the four services, the tools and the tests.
#
#   make              build everything (build/release)
#   make asan         the same with AddressSanitizer + UndefinedBehaviorSanitizer (build/asan)
#   make run          install what is missing, build, run the whole stack in the foreground
#   make up / down    the same stack in the background (state and logs under .run/)
#   make test         unit tests (release and sanitizer builds) and the end-to-end suite
#   make kafka        start a real single-node Apache Kafka (KRaft) on loopback; kafka-stop
#   make test-kafka   the end-to-end suite against that real Kafka
#   make bench        the foundation benchmark (ingress publish path, journal rate)
#   make bench-gateway / bench-llm / bench-notify   the gateway, LLM worker and notifier benchmarks
#   make bench-webhooks   the incoming-webhooks benchmark (accepted webhooks/s beside a bare route)
#   make bench-trace      what W3C tracing adds per request
#   make lint         checks the compiler does not make

BUILD   ?= build/release
SANITIZE ?= 0
CC      ?= gcc

PKGS    := rdkafka libpq libulfius jansson libcurl libcrypto libmicrohttpd
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

WARN    := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wno-missing-field-initializers
CFLAGS  ?= -O2 -g
CFLAGS  += -std=gnu11 $(WARN) -D_GNU_SOURCE -I. $(PKG_CFLAGS) -MMD -MP
LDLIBS  += $(PKG_LIBS) -lpthread -lm
ifeq ($(SANITIZE),1)
CFLAGS  += -O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
LDFLAGS += -fsanitize=address,undefined
endif

COMMON_SRC := $(sort $(wildcard common/*.c))
COMMON_OBJ := $(COMMON_SRC:%.c=$(BUILD)/obj/%.o)
LIB        := $(BUILD)/lib/libagentbus.a

SERVICES   := ingress dispatcher llm-worker notifier
SERVICE_BINS := $(SERVICES:%=$(BUILD)/bin/agentbus-%)
TOOLS      := devbroker topics kafka
TOOL_BINS  := $(TOOLS:%=$(BUILD)/bin/agentbus-%) $(BUILD)/bin/agentbusctl

UNIT_SRC   := $(sort $(wildcard tests/unit/*.c))
# Service files of pure logic (no database, Kafka or request) that unit tests link as they are.
UNIT_SERVICE_SRC := services/ingress/gateway_guide.c services/llm-worker/sse.c \
                    services/llm-worker/openai_stream.c services/llm-worker/provider.c \
                    services/llm-worker/prompt.c services/notifier/feishu.c \
                    services/notifier/job.c services/llm-worker/llm_request.c
UNIT_OBJ   := $(UNIT_SRC:%.c=$(BUILD)/obj/%.o) $(UNIT_SERVICE_SRC:%.c=$(BUILD)/obj/%.o)
UNIT_BIN   := $(BUILD)/bin/unit-tests

.PHONY: all asan deps run up down status test test-unit test-e2e test-kafka kafka kafka-stop bench \
        bench-gateway bench-llm bench-notify bench-webhooks bench-trace \
        lint format clean
all: $(SERVICE_BINS) $(TOOL_BINS) $(UNIT_BIN)

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(LIB): $(COMMON_OBJ)
	@mkdir -p $(dir $@)
	$(AR) rcs $@ $^

# Each service is every .c file in its directory, linked against the common library.
define service_rule
$(BUILD)/bin/agentbus-$(1): $(patsubst %.c,$(BUILD)/obj/%.o,$(sort $(wildcard services/$(1)/*.c))) $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$^ $$(LDLIBS)
endef
$(foreach s,$(SERVICES),$(eval $(call service_rule,$(s))))

$(BUILD)/bin/agentbus-%: $(BUILD)/obj/tools/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The admin command-line client keeps the short name people type.
$(BUILD)/bin/agentbusctl: $(BUILD)/obj/tools/agentbusctl.o $(BUILD)/obj/tools/agentbusctl_tail.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(UNIT_BIN): $(UNIT_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

asan:
	$(MAKE) BUILD=build/asan SANITIZE=1 all

deps:
	@scripts/install-deps.sh

run: deps all
	@scripts/stack.sh run

up: deps all
	@scripts/stack.sh up

down:
	@scripts/stack.sh down

status:
	@scripts/stack.sh status

# The unit tests run twice (plain and sanitized); the end-to-end suite runs the sanitized
# binaries against real PostgreSQL and the embedded broker (or KAFKA_BOOTSTRAP when set).
test: deps
	@scripts/install-deps.sh --test
	$(MAKE) all
	$(MAKE) asan
	@tests/run.sh build/release build/asan

test-unit: all
	$(UNIT_BIN)

test-e2e: deps asan
	@scripts/install-deps.sh --test
	@tests/run.sh --e2e-only build/release build/asan

kafka: deps all
	@scripts/kafka.sh start >/dev/null
	@KAFKA_BOOTSTRAP=$$(cat .run/kafka/bootstrap) $(BUILD)/bin/agentbus-topics

kafka-stop:
	@scripts/kafka.sh stop

# The broker is restarted mid-stream by one test through AGENTBUS_KAFKA_CONTROL.
test-kafka: kafka
	KAFKA_BOOTSTRAP=$$(cat .run/kafka/bootstrap) AGENTBUS_KAFKA_CONTROL=$(CURDIR)/scripts/kafka.sh \
	    $(MAKE) test-e2e

bench: deps all
	@bench/foundation.sh

# The gateway benchmark; on real Kafka: make kafka && KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) make bench-gateway
bench-gateway: deps all
	@bench/gateway.sh

# The LLM worker benchmark (added latency over the model, concurrent streams and memory); on
# real Kafka: make kafka && KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) make bench-llm
bench-llm: deps all
	@bench/llm.sh

# The notifier benchmark (event-to-delivery latency, deliveries a second to a keep-alive
# receiver); real Kafka: make kafka && KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) make bench-notify
bench-notify: deps all
	@bench/notify.sh

# The incoming-webhooks benchmark (accepted webhooks/s, p50/p99, with and without an
# Idempotency-Key, beside the ops listener's bare /livez; every 202 checked on Kafka); real
# Kafka: make kafka && KAFKA_BOOTSTRAP=$(cat .run/kafka/bootstrap) make bench-webhooks
bench-webhooks: deps all
	@bench/webhooks.sh

# What W3C tracing adds per request (a span, its traceparent, one outgoing child).
bench-trace: deps all $(BUILD)/bin/bench-trace
	@BUILD=$(BUILD) bench/trace.sh

$(BUILD)/bin/bench-trace: $(BUILD)/obj/bench/trace.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

lint:
	@scripts/lint.sh

format:
	clang-format -i common/*.[ch] services/*/*.[ch] tools/*.c tests/unit/*.[ch]

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
