/* agentbusctl tail: watches a topic of the bus with nothing but this binary and the Kafka
 * settings the services use (KAFKA_BOOTSTRAP, the topic prefix, kafka.properties for
 * SASL/TLS, all through common/config and common/kafka). One line per event, human or
 * JSON, filtered by type, agent or conversation; what is not an envelope is shown as such.
 *
 * It reads every partition of the topic by assigning them itself instead of joining a
 * consumer group. The start positions are fixed before the "tailing" line on stderr (so
 * "from now" is the end of each partition at start, and an event produced after that line
 * is never missed), no rebalance delays the first event, and the broker keeps nothing
 * afterwards: no group, no member, no committed offset, so nothing shows up as lag.
 * librdkafka's consumer still wants a group.id; each run gets its own
 * (agentbusctl-tail-<host>-<pid>-<random>, or --group for clusters whose ACLs name the
 * groups a principal may use), never joined and never committed to.
 *
 * Single-threaded: librdkafka's callbacks (errors) are served by rd_kafka_consumer_poll on
 * this thread; the signal handlers only set a flag the poll loop reads. */
#include "tools/agentbusctl_tail.h"

#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/config.h"
#include "common/envelope.h"
#include "common/kafka.h"
#include "common/log.h"
#include "common/topics.h"
#include "common/util.h"

#define PROG                "agentbusctl"
#define CLIENT_ID           "agentbusctl-tail"
#define MAX_TYPES           32
#define MAX_TOPIC_NAME      249   /* Kafka's own limit */
#define METADATA_TIMEOUT_MS 10000 /* to find the topic and its partitions' offsets */
#define OFFSETS_RETRY_MS    15000 /* how long a passing offsets error (no leader yet) is retried */
#define POLL_MS             200   /* how soon a signal or --count is noticed */
#define SUMMARY_BYTES       100   /* of a content, text or the rest of data, on a human line */
#define MAX_RELATIVE_DAYS   3650

enum { EXIT_DONE = 0, EXIT_FAILED = 1, EXIT_USAGE = 2 };

static const char tail_details[] =
    "\n"
    "Watches a topic: one line per event on stdout, until --count events were printed or\n"
    "Ctrl-C (SIGINT) or SIGTERM. Status and errors go to stderr.\n"
    "\n"
    "TOPIC: agentbus.events unless given; a base name (events, agentbus.ingress, notify.dlq,\n"
    "  ...) gets the topic prefix, any other name is taken as it is.\n"
    "\n"
    "Options:\n"
    "  --from now|beginning|TIME  where each partition starts: now (default: its end when\n"
    "                     tail starts), beginning, an RFC 3339 time (2026-05-01T10:00:00Z)\n"
    "                     or a time ago (30s, 10m, 1h, 2d): the first message at or after it\n"
    "  --json             the event as one JSON object a line: {\"topic\", \"partition\",\n"
    "                     \"offset\", \"timestamp\", \"key\", \"event\": the envelope as sent}\n"
    "  --type T           only this type; T* for a prefix (agentbus.notify.*); repeatable\n"
    "  --agent A          only events about this agent: its id or name as the event carries\n"
    "                     it (sender, target, agent, agents; or the subject)\n"
    "  --conversation C   only this conversation: data.conversation_id, data.session_key or\n"
    "                     the Kafka key (agents:<id>:<id>)\n"
    "  --count N          exit after N events\n"
    "  --bootstrap H:P    Kafka; else AGENTBUS_KAFKA_BOOTSTRAP, KAFKA_BOOTSTRAP or the config\n"
    "  --prefix P         the topic prefix; else AGENTBUS_KAFKA_TOPIC_PREFIX or the config\n"
    "  --group G          the consumer group id (default agentbusctl-tail-<host>-<pid>-<rand>);\n"
    "                     tail assigns partitions itself: it never joins G nor commits to it\n"
    "\n"
    "Kafka's other settings (kafka.properties: security.protocol, sasl.*, ssl.*) come from\n"
    "AGENTBUS_KAFKA_PROPERTIES or the file in AGENTBUS_CONFIG, as for the services.\n"
    "A message that is not an event envelope is always printed, marked as such, whatever the\n"
    "filters, and does not count towards --count.\n"
    "\n"
    "Exit status: 0 done (--count reached, or stopped by a signal); 1 Kafka cannot be reached\n"
    "or refused, or the topic does not exist; 2 a usage or configuration error.\n";

/* ---- the command line -------------------------------------------------------------------- */

enum from_kind { FROM_NOW, FROM_BEGINNING, FROM_TIME };

struct tail_opts {
    const char *topic; /* borrowed from argv, like every string here */
    const char *from;
    enum from_kind from_kind;
    int64_t from_ms; /* FROM_TIME: ms since the epoch */
    bool json;
    const char *types[MAX_TYPES];
    int ntypes;
    const char *agent;
    const char *conversation;
    long long count; /* 0: no limit */
    const char *bootstrap;
    const char *prefix;
    const char *group;
};

static void usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void usage_error(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG " tail: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\nusage:\n" CTL_TAIL_USAGE "\n`agentbusctl tail --help` explains the options.\n",
          stderr);
}

static void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static void fail(const char *fmt, ...)
{
    va_list ap;
    fputs(PROG " tail: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* "10m" ago, or an RFC 3339 time, as ms since the epoch. */
static bool from_parse_time(const char *text, int64_t now_ms, int64_t *ms)
{
    static const struct {
        char unit;
        int64_t ms;
    } units[] = {{'s', 1000}, {'m', 60000}, {'h', 3600000}, {'d', 86400000}};
    char *end;
    if (text[0] >= '0' && text[0] <= '9') {
        errno = 0;
        long long n = strtoll(text, &end, 10);
        for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
            if (errno == 0 && end[0] == units[i].unit && end[1] == '\0' &&
                n <= (long long)MAX_RELATIVE_DAYS * 86400000 / units[i].ms) {
                *ms = now_ms - n * units[i].ms;
                return true;
            }
        }
    }
    return ab_time_parse_rfc3339(text, ms);
}

static int from_parse(struct tail_opts *o)
{
    if (o->from == NULL || strcmp(o->from, "now") == 0) {
        o->from_kind = FROM_NOW;
    } else if (strcmp(o->from, "beginning") == 0) {
        o->from_kind = FROM_BEGINNING;
    } else {
        int64_t now = ab_wall_ms();
        if (!from_parse_time(o->from, now, &o->from_ms)) {
            usage_error("--from takes now, beginning, an RFC 3339 time (2026-05-01T10:00:00Z) "
                        "or a time ago (30s, 10m, 1h, 2d; at most %d days), not \"%.100s\"",
                        MAX_RELATIVE_DAYS, o->from);
            return EXIT_USAGE;
        }
        if (o->from_ms > now) {
            usage_error("--from %.100s is in the future", o->from);
            return EXIT_USAGE;
        }
        o->from_kind = FROM_TIME;
    }
    return EXIT_DONE;
}

/* Takes the value of one --name option into *slot; every option but --type once. */
static int opt_set(const char *arg, const char **slot, const char *value)
{
    if (*slot != NULL) {
        usage_error("%s is given twice", arg);
        return EXIT_USAGE;
    }
    *slot = value;
    return EXIT_DONE;
}

/* Options may come anywhere, as --name VALUE or --name=VALUE; "--" ends them.
 * @returns EXIT_DONE or EXIT_USAGE (printed). */
static int opts_parse(int argc, char **argv, struct tail_opts *o, bool *help)
{
    const char *count = NULL;
    bool only_positional = false;
    memset(o, 0, sizeof(*o));
    *help = false;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (only_positional || arg[0] != '-' || arg[1] == '\0') {
            if (o->topic != NULL) {
                usage_error("tail takes one TOPIC, not \"%.100s\" too", arg);
                return EXIT_USAGE;
            }
            o->topic = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            *help = true;
            continue;
        }
        if (strcmp(arg, "--json") == 0) {
            o->json = true;
            continue;
        }
        const char *eq = strchr(arg, '=');
        size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
        static const char *const valued[] = {"--from",  "--type",      "--agent",  "--conversation",
                                             "--count", "--bootstrap", "--prefix", "--group"};
        const char *name = NULL;
        for (size_t k = 0; k < sizeof(valued) / sizeof(valued[0]); k++)
            if (strlen(valued[k]) == len && strncmp(arg, valued[k], len) == 0)
                name = valued[k];
        if (name == NULL) {
            usage_error("tail does not take %.*s", (int)(len > 100 ? 100 : len), arg);
            return EXIT_USAGE;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (value == NULL && i + 1 < argc)
            value = argv[++i];
        if (value == NULL) {
            usage_error("%s needs a value", name);
            return EXIT_USAGE;
        }
        int rc = EXIT_DONE;
        if (strcmp(name, "--type") == 0) {
            if (o->ntypes == MAX_TYPES) {
                usage_error("at most %d --type options", MAX_TYPES);
                return EXIT_USAGE;
            }
            if (value[0] == '\0') {
                usage_error("--type needs a type (or a prefix ending in *)");
                return EXIT_USAGE;
            }
            o->types[o->ntypes++] = value;
        } else if (strcmp(name, "--from") == 0) {
            rc = opt_set(name, &o->from, value);
        } else if (strcmp(name, "--agent") == 0) {
            rc = opt_set(name, &o->agent, value);
        } else if (strcmp(name, "--conversation") == 0) {
            rc = opt_set(name, &o->conversation, value);
        } else if (strcmp(name, "--count") == 0) {
            rc = opt_set(name, &count, value);
        } else if (strcmp(name, "--bootstrap") == 0) {
            rc = opt_set(name, &o->bootstrap, value);
        } else if (strcmp(name, "--prefix") == 0) {
            rc = opt_set(name, &o->prefix, value);
        } else {
            rc = opt_set(name, &o->group, value);
        }
        if (rc != EXIT_DONE)
            return rc;
    }
    if (*help)
        return EXIT_DONE;
    if (count) {
        char *end;
        errno = 0;
        o->count = strtoll(count, &end, 10);
        if (errno != 0 || end == count || *end != '\0' || o->count < 1) {
            usage_error("--count takes a number of events, 1 or more, not \"%.100s\"", count);
            return EXIT_USAGE;
        }
    }
    if ((o->agent && o->agent[0] == '\0') || (o->conversation && o->conversation[0] == '\0') ||
        (o->bootstrap && o->bootstrap[0] == '\0') || (o->group && o->group[0] == '\0')) {
        usage_error("--agent, --conversation, --bootstrap and --group need a non-empty value");
        return EXIT_USAGE;
    }
    return from_parse(o);
}

/* ---- configuration and the topic --------------------------------------------------------- */

extern char **environ;

static char *env_entry(const char *name, const char *value)
{
    size_t size = strlen(name) + strlen(value) + 2;
    char *entry = ab_xmalloc(size);
    snprintf(entry, size, "%s=%s", name, value);
    return entry;
}

/* The configuration the services would read, with --bootstrap and --prefix over it: they
 * go in front of the environment, where the loader finds them first (and before the
 * KAFKA_BOOTSTRAP alias), so no other rule of the config changes. */
static enum ab_err config_load(const struct tail_opts *o, struct ab_config **cfg, char *errstr,
                               size_t size)
{
    size_t n = 0, k = 0;
    while (environ && environ[n])
        n++;
    char **envp = ab_xcalloc(n + 3, sizeof(*envp));
    char *owned[2] = {NULL, NULL};
    if (o->bootstrap)
        envp[k++] = owned[0] = env_entry("AGENTBUS_KAFKA_BOOTSTRAP", o->bootstrap);
    if (o->prefix)
        envp[k++] = owned[1] = env_entry("AGENTBUS_KAFKA_TOPIC_PREFIX", o->prefix);
    if (n > 0)
        memcpy(envp + k, environ, n * sizeof(*envp));
    enum ab_err err = ab_config_load(AB_SVC_TOOL, envp, cfg, errstr, size);
    free(owned[0]);
    free(owned[1]);
    free(envp);
    return err;
}

/* The topic to read: agentbus.events by default; one of our base names, with or without
 * "agentbus.", under the prefix; anything else as given. @returns EXIT_DONE or EXIT_USAGE. */
static int topic_resolve(const char *arg, const char *prefix, char *out, size_t size)
{
    const char *base = NULL;
    for (int t = 0; t < AB_TOPIC__COUNT && arg != NULL && base == NULL; t++) {
        const char *name = ab_topic_spec((enum ab_topic)t)->base;
        if (strcmp(arg, name) == 0 ||
            (strncmp(name, "agentbus.", 9) == 0 && strcmp(arg, name + 9) == 0))
            base = name;
    }
    if (arg == NULL)
        base = ab_topic_spec(AB_TOPIC_EVENTS)->base;
    int n = base ? snprintf(out, size, "%s%s", prefix, base) : snprintf(out, size, "%s", arg);
    if (n < 0 || (size_t)n >= size || n > MAX_TOPIC_NAME || n == 0) {
        usage_error("a topic name has 1 to %d characters", MAX_TOPIC_NAME);
        return EXIT_USAGE;
    }
    for (const char *p = out; *p != '\0'; p++) {
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '_' || *p == '-')) {
            usage_error("\"%.100s\" is not a topic name (letters, digits, '.', '_', '-')", out);
            return EXIT_USAGE;
        }
    }
    return EXIT_DONE;
}

/* "agentbusctl-tail-<host>-<pid>-<8 hex>": unique per run, and says whose it is. */
static void group_default(char *out, size_t size)
{
    char host[64] = "";
    unsigned char rnd[4];
    char hex[2 * sizeof(rnd) + 1];
    if (gethostname(host, sizeof(host) - 1) != 0)
        host[0] = '\0';
    for (char *p = host; *p != '\0'; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '.' || *p == '-'))
            *p = '_';
    ab_random_bytes(rnd, sizeof(rnd));
    ab_hex(rnd, sizeof(rnd), hex);
    snprintf(out, size, CLIENT_ID "-%s-%ld-%s", host[0] ? host : "host", (long)getpid(), hex);
}

/* ---- Kafka --------------------------------------------------------------------------------- */

struct tail {
    const struct tail_opts *o;
    const char *bootstrap; /* for messages; borrowed from the config */
    char topic[MAX_TOPIC_NAME + 1];
    char group[256];
    rd_kafka_t *rk;
    int partitions;
    long long printed;   /* events printed (not the lines of non-envelopes) */
    bool fatal;          /* librdkafka reported a fatal error */
    int64_t skip_before; /* messages stamped before this (ms) are skipped; 0: none */
    int last_err;        /* the last transient error shown, and when, to show it once */
    int64_t last_err_ms;
};

static volatile sig_atomic_t stop_signal;

static void on_signal(int sig)
{
    stop_signal = sig;
}

/* Served by rd_kafka_consumer_poll, on this thread. Transient errors (a broker away) are
 * shown once per 10 s each: librdkafka retries them by itself. */
static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque)
{
    struct tail *t = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[512];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        fail("kafka: fatal error: %s", why);
        t->fatal = true;
        return;
    }
    int64_t now = ab_monotonic_ms();
    if (err == t->last_err && now - t->last_err_ms < 10000)
        return;
    t->last_err = err;
    t->last_err_ms = now;
    fail("kafka: %s", reason);
}

static int kafka_open(struct tail *t, const struct ab_config *cfg)
{
    char errstr[512], num[32];
    rd_kafka_conf_t *conf = ab_kafka_conf_new(cfg, CLIENT_ID, errstr, sizeof(errstr));
    snprintf(num, sizeof(num), "%lld", ab_config_int(cfg, AB_OPT_KAFKA_FETCH_WAIT_MAX_MS));
    if (conf == NULL || ab_kafka_conf_set(conf, "group.id", t->group, errstr, sizeof(errstr)) ||
        ab_kafka_conf_set(conf, "enable.auto.commit", "false", errstr, sizeof(errstr)) ||
        ab_kafka_conf_set(conf, "enable.auto.offset.store", "false", errstr, sizeof(errstr)) ||
        /* Only when a start offset is gone by the time it is fetched (retention). */
        ab_kafka_conf_set(conf, "auto.offset.reset", "earliest", errstr, sizeof(errstr)) ||
        ab_kafka_conf_set(conf, "fetch.wait.max.ms", num, errstr, sizeof(errstr))) {
        if (conf)
            rd_kafka_conf_destroy(conf);
        fail("%s", errstr);
        return EXIT_USAGE;
    }
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_conf_set_opaque(conf, t);
    t->rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, sizeof(errstr));
    if (t->rk == NULL) {
        rd_kafka_conf_destroy(conf);
        fail("%s", errstr);
        return EXIT_USAGE;
    }
    rd_kafka_poll_set_consumer(t->rk);
    return EXIT_DONE;
}

/* The topic's partition count. The metadata of every topic is asked for, not of this one:
 * asking for one topic by name lets a broker that auto-creates topics (the mock cluster of
 * agentbus-devbroker does, whatever the client says) create it, typo included. A topic being
 * created has no leader for a moment: asked again until the deadline. */
static int topic_partitions(struct tail *t)
{
    int64_t deadline = ab_monotonic_ms() + METADATA_TIMEOUT_MS;
    for (;;) {
        const struct rd_kafka_metadata *md = NULL;
        int64_t left = deadline - ab_monotonic_ms();
        rd_kafka_resp_err_t err =
            rd_kafka_metadata(t->rk, 1, NULL, &md, left > 100 ? (int)left : 100);
        if (err) {
            fail("cannot reach Kafka at %s: %s", t->bootstrap, rd_kafka_err2str(err));
            return EXIT_FAILED;
        }
        const struct rd_kafka_metadata_topic *mt = NULL;
        for (int i = 0; i < md->topic_cnt && mt == NULL; i++)
            if (strcmp(md->topics[i].topic, t->topic) == 0)
                mt = &md->topics[i];
        err = mt ? mt->err : RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
        int count = mt ? mt->partition_cnt : 0;
        rd_kafka_metadata_destroy(md);
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR && count > 0) {
            t->partitions = count;
            return EXIT_DONE;
        }
        if (err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
            fail("there is no topic \"%s\" on %s (or it is hidden from this client)\n"
                 "  (a base name such as events or agentbus.ingress gets the topic prefix, here "
                 "\"%s\", which --prefix, AGENTBUS_KAFKA_TOPIC_PREFIX or kafka.topic_prefix sets)",
                 t->topic, t->bootstrap, t->o->prefix);
            return EXIT_FAILED;
        }
        if (err == RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED) {
            fail("Kafka does not allow reading topic \"%s\"", t->topic);
            return EXIT_FAILED;
        }
        if (ab_monotonic_ms() >= deadline) {
            fail("topic \"%s\" has no partitions ready on %s: %s", t->topic, t->bootstrap,
                 rd_kafka_err2str(err));
            return EXIT_FAILED;
        }
        usleep(200 * 1000);
    }
}

/* What a broker answers for a while after a topic was made or its leader moved: tried again
 * (for up to OFFSETS_RETRY_MS) rather than reported. */
static bool offsets_error_passes(rd_kafka_resp_err_t err)
{
    switch (err) {
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TIMED_OUT:
    case RD_KAFKA_RESP_ERR__TRANSPORT:
        return true;
    default:
        return false;
    }
}

/* Kafka's ListOffsets for every partition of the topic, with each element's offset taken as
 * the timestamp to look up: RD_KAFKA_OFFSET_END (-1) the end, a time the first message
 * stamped at or after it, answered -1 when there is none. @ownership *out is the caller's. */
static int offsets_at(struct tail *t, int64_t timestamp, rd_kafka_topic_partition_list_t **out)
{
    int64_t deadline = ab_monotonic_ms() + OFFSETS_RETRY_MS, backoff = 100;
    for (;;) {
        rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(t->partitions);
        for (int p = 0; p < t->partitions; p++)
            rd_kafka_topic_partition_list_add(list, t->topic, p)->offset = timestamp;
        rd_kafka_resp_err_t err = rd_kafka_offsets_for_times(t->rk, list, METADATA_TIMEOUT_MS);
        for (int i = 0; err == RD_KAFKA_RESP_ERR_NO_ERROR && i < list->cnt; i++)
            err = list->elems[i].err;
        if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            *out = list;
            return EXIT_DONE;
        }
        rd_kafka_topic_partition_list_destroy(list);
        if (!offsets_error_passes(err) || ab_monotonic_ms() + backoff > deadline) {
            fail("cannot read the offsets of topic \"%s\" on %s: %s", t->topic, t->bootstrap,
                 rd_kafka_err2str(err));
            *out = NULL;
            return EXIT_FAILED;
        }
        usleep((useconds_t)backoff * 1000);
        backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
}

/* Every partition with its start offset, fixed now: "now" the end of each partition, "from
 * TIME" the first message stamped at or after TIME, else the end.
 *
 * The mock cluster of agentbus-devbroker cannot look offsets up by time (it answers -1, "no
 * such message", to every time), and `make up` runs on it. It is recognised by its answer
 * for time 0, at or before every message: a broker that looks times up answers -1 there
 * only for an empty partition. Such a partition is read from its beginning instead, and the
 * messages stamped before TIME are skipped as they come (t->skip_before), which for an
 * empty partition is the same as its end.
 * @ownership *out is the caller's. */
static int start_offsets(struct tail *t, rd_kafka_topic_partition_list_t **out)
{
    rd_kafka_topic_partition_list_t *list = NULL, *at_time = NULL, *at_zero = NULL;
    int rc = EXIT_DONE;
    if (t->o->from_kind == FROM_BEGINNING) {
        list = rd_kafka_topic_partition_list_new(t->partitions);
        for (int p = 0; p < t->partitions; p++)
            rd_kafka_topic_partition_list_add(list, t->topic, p)->offset =
                RD_KAFKA_OFFSET_BEGINNING;
        *out = list;
        return EXIT_DONE;
    }
    rc = offsets_at(t, RD_KAFKA_OFFSET_END, &list);
    if (rc == EXIT_DONE && t->o->from_kind == FROM_TIME) {
        /* Also where Kafka found the start: a producer's clock may stamp a later message
         * earlier, and "from TIME" shows what is stamped TIME or later. */
        t->skip_before = t->o->from_ms;
        rc = offsets_at(t, t->o->from_ms, &at_time);
        if (rc == EXIT_DONE)
            rc = offsets_at(t, 0, &at_zero);
        for (int i = 0; rc == EXIT_DONE && i < list->cnt; i++) {
            if (at_time->elems[i].offset >= 0) {
                list->elems[i].offset = at_time->elems[i].offset;
            } else if (at_zero->elems[i].offset < 0) {
                list->elems[i].offset = RD_KAFKA_OFFSET_BEGINNING;
            }
        }
    }
    if (at_time)
        rd_kafka_topic_partition_list_destroy(at_time);
    if (at_zero)
        rd_kafka_topic_partition_list_destroy(at_zero);
    if (rc != EXIT_DONE && list) {
        rd_kafka_topic_partition_list_destroy(list);
        list = NULL;
    }
    *out = list;
    return rc;
}

/* ---- filters ------------------------------------------------------------------------------- */

static bool type_matches(const struct tail_opts *o, const char *type)
{
    if (o->ntypes == 0)
        return true;
    for (int i = 0; i < o->ntypes; i++) {
        size_t len = strlen(o->types[i]);
        if (o->types[i][len - 1] == '*' ? strncmp(type, o->types[i], len - 1) == 0
                                        : strcmp(type, o->types[i]) == 0)
            return true;
    }
    return false;
}

/* The types of docs/events.md whose objects are agents (a target may be a member, a sender
 * a webhook or agentbus itself, and those have no agent name to match). */
static bool is_agent_type(const char *type)
{
    static const char *const agent_types[] = {"agent", "openclaw_agent", "native_agent", "openclaw",
                                              "native"};
    for (size_t i = 0; type && i < sizeof(agent_types) / sizeof(agent_types[0]); i++)
        if (strcmp(type, agent_types[i]) == 0)
            return true;
    return false;
}

/* One party of an event: {"id", "name", "type"}, or a name or id as a string (the agent of a
 * webhook's run_agent). Ids match in any party; names (any case) in an agent only. */
static bool party_matches(const json_t *party, const char *agent, bool is_agent)
{
    if (json_is_string(party))
        return strcasecmp(json_string_value(party), agent) == 0;
    const char *id = json_string_value(json_object_get(party, "id"));
    const char *name = json_string_value(json_object_get(party, "name"));
    const char *type = json_string_value(json_object_get(party, "type"));
    if (id && strcasecmp(id, agent) == 0)
        return true;
    return name && (is_agent || is_agent_type(type)) && strcasecmp(name, agent) == 0;
}

static bool agent_matches(const struct ab_event *ev, const char *agent)
{
    const json_t *data = ev->data, *party;
    size_t i;
    if (ev->subject && strcasecmp(ev->subject, agent) == 0)
        return true;
    if (party_matches(json_object_get(data, "sender"), agent, false) ||
        party_matches(json_object_get(data, "target"), agent, false) ||
        party_matches(json_object_get(data, "agent"), agent, true))
        return true;
    json_array_foreach(json_object_get(data, "agents"), i, party)
    {
        if (party_matches(party, agent, false))
            return true;
    }
    return false;
}

static bool conversation_matches(const struct ab_event *ev, const rd_kafka_message_t *rkm,
                                 const char *conversation)
{
    const char *id = json_string_value(json_object_get(ev->data, "conversation_id"));
    const char *session = json_string_value(json_object_get(ev->data, "session_key"));
    size_t len = strlen(conversation);
    return (id && strcasecmp(id, conversation) == 0) ||
           (session && strcmp(session, conversation) == 0) ||
           (rkm->key && rkm->key_len == len && memcmp(rkm->key, conversation, len) == 0);
}

static bool event_matches(const struct tail_opts *o, const struct ab_event *ev,
                          const rd_kafka_message_t *rkm)
{
    return type_matches(o, ev->type) && (o->agent == NULL || agent_matches(ev, o->agent)) &&
           (o->conversation == NULL || conversation_matches(ev, rkm, o->conversation));
}

/* ---- output -------------------------------------------------------------------------------- */

/* Text from an event, safe for a terminal: C0 and C1 control characters (escape sequences,
 * newlines, 8-bit CSI) become ' ', bytes that are not UTF-8 become '?', and at most max
 * bytes are written, never cutting a UTF-8 sequence. */
static void put_text(const char *s, size_t len, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = len;
    if (n > max) {
        n = max;
        while (n > 0 && (u[n] & 0xC0) == 0x80)
            n--;
    }
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) {
            putchar(u[i] < 0x20 || u[i] == 0x7f ? ' ' : u[i]);
            i++;
            continue;
        }
        bool cut;
        size_t seq = ab_utf8_sequence(u + i, n - i, &cut);
        if (seq == 0)
            putchar('?');
        else if (seq == 2 && u[i] == 0xC2 && u[i + 1] <= 0x9F)
            putchar(' '); /* U+0080..U+009F: C1 controls */
        else
            fwrite(u + i, 1, seq, stdout);
        i += seq ? seq : 1;
    }
    if (n < len)
        fputs("...", stdout);
}

/* An id as its first 8 characters when it is a UUID, else as it is (up to 40). */
static void put_id(const char *id)
{
    put_text(id, ab_uuid_valid(id) ? 8 : strlen(id), 40);
}

/* A party: its name, else its id, else its type. */
static void put_party(const char *label, const json_t *party)
{
    const char *name = json_string_value(json_object_get(party, "name"));
    const char *id = json_string_value(json_object_get(party, "id"));
    const char *type = json_string_value(json_object_get(party, "type"));
    if (json_is_string(party))
        name = json_string_value(party);
    if (name == NULL && id == NULL && type == NULL)
        return;
    printf(" %s=", label);
    if (name)
        put_text(name, strlen(name), 40);
    else
        put_id(id ? id : type);
}

/* What an event says, short: its content or text, or its error, else the rest of its data
 * (what the line has not shown already) as compact JSON. */
static void put_summary(const json_t *data)
{
    const char *content = json_string_value(json_object_get(data, "content"));
    const char *text = json_string_value(json_object_get(data, "text"));
    const char *code = json_string_value(json_object_get(data, "code"));
    const char *message = json_string_value(json_object_get(data, "message"));
    if (content || text) {
        const json_t *s = json_object_get(data, content ? "content" : "text");
        fputs(" \"", stdout);
        put_text(json_string_value(s), json_string_length(s), SUMMARY_BYTES);
        putchar('"');
        return;
    }
    if (code) {
        putchar(' ');
        put_text(code, strlen(code), 60);
        if (message) {
            fputs(": ", stdout);
            put_text(message, strlen(message), SUMMARY_BYTES);
        }
        return;
    }
    if (data == NULL || json_is_null(data))
        return;
    json_t *rest = json_is_object(data) ? json_copy((json_t *)data) : json_incref((json_t *)data);
    static const char *const shown[] = {"tenant_id", "sender", "target",
                                        "agent",     "agents", "conversation_id"};
    for (size_t i = 0; json_is_object(rest) && i < sizeof(shown) / sizeof(shown[0]); i++)
        json_object_del(rest, shown[i]);
    char *dump = json_dumps(rest, JSON_COMPACT | JSON_ENCODE_ANY);
    if (dump && strcmp(dump, "{}") != 0) {
        putchar(' ');
        put_text(dump, strlen(dump), SUMMARY_BYTES);
    }
    free(dump);
    json_decref(rest);
}

/* TIME TYPE ID [agent=A] [from=S] [to=T] [agents=A,B] [conv=C] [subject=S] SUMMARY */
static void print_event_line(const struct ab_event *ev)
{
    const json_t *data = ev->data;
    const json_t *sender = json_object_get(data, "sender"),
                 *target = json_object_get(data, "target");
    const json_t *agent = json_object_get(data, "agent"), *agents = json_object_get(data, "agents");
    const char *conv = json_string_value(json_object_get(data, "conversation_id"));
    fputs(ev->time ? ev->time : "-", stdout);
    putchar(' ');
    put_text(ev->type, strlen(ev->type), 80);
    for (size_t n = strlen(ev->type); n < 28; n++)
        putchar(' ');
    putchar(' ');
    put_id(ev->id);
    put_party("agent", agent);
    put_party("from", sender);
    put_party("to", target);
    if (sender == NULL && target == NULL && json_array_size(agents) > 0) {
        size_t i;
        const json_t *party;
        fputs(" agents=", stdout);
        json_array_foreach(agents, i, party)
        {
            const char *name = json_string_value(json_object_get(party, "name"));
            const char *id = json_string_value(json_object_get(party, "id"));
            if (i > 0)
                putchar(',');
            if (name)
                put_text(name, strlen(name), 40);
            else if (id)
                put_id(id);
        }
    }
    if (conv) {
        fputs(" conv=", stdout);
        put_id(conv);
    }
    if (ev->subject && agent == NULL && sender == NULL && target == NULL && agents == NULL) {
        fputs(" subject=", stdout);
        put_text(ev->subject, strlen(ev->subject), 60);
    }
    put_summary(data);
    putchar('\n');
}

/* {"topic", "partition", "offset", "timestamp", "key", then "event": the envelope as it was
 * sent, or for what is not one "error" and "value"}. */
static void print_json_line(const rd_kafka_message_t *rkm, const char *why)
{
    rd_kafka_timestamp_type_t ts_type;
    int64_t ts = rd_kafka_message_timestamp(rkm, &ts_type);
    json_t *line = json_pack("{s:s,s:i,s:I,s:o,s:o}", "topic", rd_kafka_topic_name(rkm->rkt),
                             "partition", (int)rkm->partition, "offset", (json_int_t)rkm->offset,
                             "timestamp", ts >= 0 ? json_integer(ts) : json_null(), "key",
                             ab_json_text_or_hex(rkm->key, rkm->key_len));
    json_t *event = why ? NULL : json_loadb(rkm->payload, rkm->len, 0, NULL);
    if (event) {
        json_object_set_new(line, "event", event);
    } else {
        json_object_set_new(line, "error", json_string(why ? why : "not JSON"));
        json_object_set_new(line, "value", ab_json_text_or_hex(rkm->payload, rkm->len));
    }
    char *text = json_dumps(line, JSON_COMPACT);
    if (text)
        puts(text);
    free(text);
    json_decref(line);
}

/* TIME (not an event) partition P offset O: WHY: "the start of the value" */
static void print_poison_line(const rd_kafka_message_t *rkm, const char *why)
{
    rd_kafka_timestamp_type_t ts_type;
    int64_t ts = rd_kafka_message_timestamp(rkm, &ts_type);
    char when[32] = "-";
    if (ts >= 0)
        ab_time_rfc3339(ts, when);
    printf("%s (not an event) partition %d offset %lld: ", when, (int)rkm->partition,
           (long long)rkm->offset);
    put_text(why, strlen(why), 200);
    fputs(": \"", stdout);
    put_text(rkm->payload ? rkm->payload : "", rkm->payload ? rkm->len : 0, SUMMARY_BYTES);
    fputs("\"\n", stdout);
}

/* Prints one message if it passes the filters. @returns true when it was an event printed. */
static bool handle_message(struct tail *t, const rd_kafka_message_t *rkm)
{
    struct ab_event *ev = NULL;
    char why[256];
    bool printed = false;
    rd_kafka_timestamp_type_t ts_type;
    int64_t ts = rd_kafka_message_timestamp(rkm, &ts_type);
    if (t->skip_before > 0 && ts >= 0 && ts < t->skip_before)
        return false;
    if (ab_event_parse(rkm->payload, rkm->len, &ev, why, sizeof(why)) != AB_OK) {
        if (t->o->json)
            print_json_line(rkm, why);
        else
            print_poison_line(rkm, why);
    } else if (event_matches(t->o, ev, rkm)) {
        if (t->o->json)
            print_json_line(rkm, NULL);
        else
            print_event_line(ev);
        printed = true;
    }
    ab_event_free(ev);
    return printed;
}

/* ---- the loop ------------------------------------------------------------------------------ */

static void signals_catch(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    /* SA_RESTART: a write blocked on a full pipe when the signal comes must not fail with
     * EINTR (that would end in exit 1); the poll loop sees the flag within its timeout. */
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    /* A reader that went away (| head) is an EPIPE on the next write, handled below. */
    signal(SIGPIPE, SIG_IGN);
}

static const char *from_text(const struct tail_opts *o)
{
    return o->from_kind == FROM_NOW         ? "now"
           : o->from_kind == FROM_BEGINNING ? "the beginning"
                                            : o->from;
}

static int consume(struct tail *t)
{
    int rc = EXIT_DONE;
    while (!stop_signal && !t->fatal && (t->o->count == 0 || t->printed < t->o->count)) {
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(t->rk, POLL_MS);
        if (rkm == NULL)
            continue;
        if (rkm->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
            t->printed += handle_message(t, rkm);
        } else if (rkm->err == RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART ||
                   rkm->err == RD_KAFKA_RESP_ERR__UNKNOWN_TOPIC ||
                   rkm->err == RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION) {
            fail("topic \"%s\" is gone: %s", t->topic, rd_kafka_message_errstr(rkm));
            rc = EXIT_FAILED;
        } else if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF) {
            fail("kafka: %s", rd_kafka_message_errstr(rkm));
        }
        rd_kafka_message_destroy(rkm);
        if (fflush(stdout) != 0 || ferror(stdout)) {
            if (errno != EPIPE) {
                fail("cannot write the output: %s", strerror(errno));
                rc = EXIT_FAILED;
            }
            break;
        }
        if (rc != EXIT_DONE)
            break;
    }
    if (t->fatal)
        rc = EXIT_FAILED;
    return rc;
}

int ctl_tail(int argc, char **argv)
{
    struct tail_opts o;
    struct tail t = {.o = &o};
    struct ab_config *cfg = NULL;
    rd_kafka_topic_partition_list_t *start = NULL;
    char errstr[512];
    bool help;
    int rc = opts_parse(argc, argv, &o, &help);
    if (rc != EXIT_DONE)
        return rc;
    if (help) {
        fputs("usage:\n" CTL_TAIL_USAGE, stdout);
        fputs(tail_details, stdout);
        return EXIT_DONE;
    }
    ab_log_init(PROG, AB_LOG_WARN);
    ab_log_set_output(stderr);
    if (config_load(&o, &cfg, errstr, sizeof(errstr)) != AB_OK) {
        fail("%s", errstr);
        return EXIT_USAGE;
    }
    const char *prefix = ab_config_str(cfg, AB_OPT_KAFKA_TOPIC_PREFIX);
    o.prefix = prefix; /* from here on: the prefix in effect, for messages */
    t.bootstrap = ab_config_str(cfg, AB_OPT_KAFKA_BOOTSTRAP);
    rc = topic_resolve(o.topic, prefix, t.topic, sizeof(t.topic));
    if (rc != EXIT_DONE)
        goto out;
    if (o.group)
        snprintf(t.group, sizeof(t.group), "%s", o.group);
    else
        group_default(t.group, sizeof(t.group));
    rc = kafka_open(&t, cfg);
    if (rc == EXIT_DONE)
        rc = topic_partitions(&t);
    if (rc == EXIT_DONE)
        rc = start_offsets(&t, &start);
    if (rc != EXIT_DONE)
        goto out;
    signals_catch();
    setvbuf(stdout, NULL, _IOLBF, 0); /* a pipe sees each event as it comes */
    rd_kafka_resp_err_t err = rd_kafka_assign(t.rk, start);
    if (err) {
        fail("cannot read topic \"%s\": %s", t.topic, rd_kafka_err2str(err));
        rc = EXIT_FAILED;
        goto out;
    }
    fprintf(stderr, PROG ": tailing %s (%d partition%s) from %s as %s; Ctrl-C stops\n", t.topic,
            t.partitions, t.partitions == 1 ? "" : "s", from_text(&o), t.group);
    rc = consume(&t);
out:
    if (start)
        rd_kafka_topic_partition_list_destroy(start);
    if (t.rk) {
        /* Assigned, never subscribed and never committing: close only lets go. */
        rd_kafka_consumer_close(t.rk);
        rd_kafka_destroy(t.rk);
    }
    ab_config_free(cfg);
    return rc;
}
