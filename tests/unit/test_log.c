/* Tests for common/log: every line is one JSON object with the fixed keys, the thread's
 * request and event ids, caller fields that cannot replace the fixed keys, the level
 * filter, bytes that are not UTF-8, and concurrent writers that never interleave. */
#include "test.h"

#include "common/log.h"
#include "common/util.h"

#include <pthread.h>
#include <unistd.h>

/* The output of one test: an in-memory stream the logger writes to. */
struct capture {
    FILE *out;
    char *text;
    size_t size;
};

static void capture_start(struct capture *c)
{
    memset(c, 0, sizeof(*c));
    c->out = open_memstream(&c->text, &c->size);
    REQUIRE(c->out != NULL);
    ab_log_set_output(c->out);
}

/* Everything written so far (borrowed; valid until the next log call). */
static const char *capture_text(struct capture *c)
{
    REQUIRE(fflush(c->out) == 0);
    return c->text ? c->text : "";
}

static void capture_stop(struct capture *c)
{
    ab_log_set_output(NULL);
    fclose(c->out);
    free(c->text);
}

static size_t count_lines(const char *text)
{
    size_t n = 0;
    for (const char *p = text; *p; p++)
        n += *p == '\n';
    return n;
}

/* Line `index` (from 0) parsed as JSON; fails the test unless it is exactly one object.
 * @ownership the caller decrefs. */
static json_t *line_json(const char *text, size_t index)
{
    const char *line = text;
    for (size_t i = 0; i < index; i++) {
        line = strchr(line, '\n');
        REQUIRE(line != NULL);
        line++;
    }
    const char *end = strchr(line, '\n');
    REQUIRE(end != NULL);
    json_error_t jerr;
    json_t *j = json_loadb(line, (size_t)(end - line), 0, &jerr);
    if (!json_is_object(j)) {
        ab_test_fail(__FILE__, __LINE__, "line %zu is not a JSON object (%s): %.*s", index,
                     jerr.text, (int)(end - line), line);
        exit(1);
    }
    return j;
}

static const char *str_of(json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

TEST(log_line_is_one_json_object_with_fixed_keys)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("test-svc", AB_LOG_DEBUG);
    int64_t before = ab_wall_ms();
    ab_info("hello %d from %s", 42, "unit");
    int64_t after = ab_wall_ms();
    const char *text = capture_text(&c);
    CHECK_INT_EQ(count_lines(text), 1);
    CHECK(text[strlen(text) - 1] == '\n');
    json_t *j = line_json(text, 0);
    CHECK_INT_EQ(json_object_size(j), 4);
    CHECK_STR_EQ(str_of(j, "level"), "info");
    CHECK_STR_EQ(str_of(j, "service"), "test-svc");
    CHECK_STR_EQ(str_of(j, "message"), "hello 42 from unit");
    const char *when = str_of(j, "time");
    REQUIRE(when != NULL);
    int64_t ms = 0;
    CHECK(ab_time_parse_rfc3339(when, &ms));
    CHECK(ms >= before - 1 && ms <= after + 1);
    CHECK_INT_EQ(strlen(when), 24); /* ...T08:58:45.123Z */
    /* The fixed keys come first, in this order, for people reading the raw line. */
    CHECK(strncmp(text, "{\"time\":", 8) == 0);
    CHECK(strstr(text, "\"level\"") < strstr(text, "\"service\""));
    CHECK(strstr(text, "\"service\"") < strstr(text, "\"message\""));
    json_decref(j);

    /* Every level names itself; the service name has a default and a length cap. */
    ab_log(AB_LOG_DEBUG, "d");
    ab_warn("w");
    ab_error("e");
    ab_log_init(NULL, AB_LOG_DEBUG);
    ab_info("default service");
    char long_name[200];
    memset(long_name, 's', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    ab_log_init(long_name, AB_LOG_DEBUG);
    ab_info("long service");
    text = capture_text(&c);
    CHECK_INT_EQ(count_lines(text), 6);
    static const char *const levels[] = { "info", "debug", "warn", "error" };
    for (size_t i = 1; i < 4; i++) {
        j = line_json(text, i);
        CHECK_STR_EQ(str_of(j, "level"), levels[i]);
        json_decref(j);
    }
    j = line_json(text, 4);
    CHECK_STR_EQ(str_of(j, "service"), "agentbus");
    json_decref(j);
    j = line_json(text, 5);
    CHECK(str_of(j, "service") != NULL && strlen(str_of(j, "service")) == 63);
    json_decref(j);
    capture_stop(&c);
}

TEST(log_message_escapes_stay_on_one_line)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("esc", AB_LOG_INFO);
    const char *nasty = "quote \" backslash \\ newline \n cr \r tab \t bell \a del \x7f "
                        "{\"fake\":\"json\"} héllo ✓ 😀";
    ab_info("%s", nasty);
    const char *text = capture_text(&c);
    CHECK_INT_EQ(count_lines(text), 1);
    json_t *j = line_json(text, 0);
    CHECK_STR_EQ(str_of(j, "message"), nasty);
    CHECK(json_object_get(j, "fake") == NULL);
    json_decref(j);
    capture_stop(&c);
}

TEST(log_request_and_event_ids_per_thread)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("ids", AB_LOG_INFO);
    CHECK_STR_EQ(ab_log_request_id(), "");
    ab_log_set_request_id("req-1");
    ab_log_set_event_id("evt-1");
    CHECK_STR_EQ(ab_log_request_id(), "req-1");
    ab_info("with both");
    ab_log_set_event_id(NULL);
    ab_info("request only");
    ab_log_set_request_id(NULL);
    CHECK_STR_EQ(ab_log_request_id(), "");
    ab_info("neither");
    ab_log_set_event_id("evt-2");
    ab_info("event only");
    ab_log_set_event_id(NULL);

    const char *text = capture_text(&c);
    REQUIRE(count_lines(text) == 4);
    json_t *j = line_json(text, 0);
    CHECK_STR_EQ(str_of(j, "request_id"), "req-1");
    CHECK_STR_EQ(str_of(j, "event_id"), "evt-1");
    json_decref(j);
    j = line_json(text, 1);
    CHECK_STR_EQ(str_of(j, "request_id"), "req-1");
    CHECK(json_object_get(j, "event_id") == NULL);
    json_decref(j);
    j = line_json(text, 2);
    CHECK(json_object_get(j, "request_id") == NULL);
    CHECK(json_object_get(j, "event_id") == NULL);
    CHECK_INT_EQ(json_object_size(j), 4);
    json_decref(j);
    j = line_json(text, 3);
    CHECK(json_object_get(j, "request_id") == NULL);
    CHECK_STR_EQ(str_of(j, "event_id"), "evt-2");
    json_decref(j);
    capture_stop(&c);
}

static void *log_from_other_thread(void *arg)
{
    (void)arg;
    /* The main thread's id is not this thread's. */
    bool clean = ab_log_request_id()[0] == '\0';
    ab_log_set_request_id("req-other");
    ab_info("from the other thread");
    return clean ? (void *)1 : NULL;
}

TEST(log_ids_are_thread_local)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("ids", AB_LOG_INFO);
    ab_log_set_request_id("req-main");
    pthread_t t;
    void *clean = NULL;
    REQUIRE(pthread_create(&t, NULL, log_from_other_thread, NULL) == 0);
    REQUIRE(pthread_join(t, &clean) == 0);
    CHECK(clean == (void *)1);
    CHECK_STR_EQ(ab_log_request_id(), "req-main"); /* not replaced by the other thread */
    ab_info("from main");
    const char *text = capture_text(&c);
    REQUIRE(count_lines(text) == 2);
    json_t *j = line_json(text, 0);
    CHECK_STR_EQ(str_of(j, "request_id"), "req-other");
    json_decref(j);
    j = line_json(text, 1);
    CHECK_STR_EQ(str_of(j, "request_id"), "req-main");
    json_decref(j);
    ab_log_set_request_id(NULL);
    capture_stop(&c);
}

TEST(log_long_ids_are_truncated)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("ids", AB_LOG_INFO);
    char id[300];
    memset(id, 'r', sizeof(id) - 1);
    id[sizeof(id) - 1] = '\0';
    ab_log_set_request_id(id);
    CHECK_INT_EQ(strlen(ab_log_request_id()), 127);
    /* Two-byte characters: the 127-byte cut falls in the middle of the 64th. */
    char utf8_id[201];
    for (int i = 0; i < 100; i++)
        memcpy(utf8_id + 2 * i, "é", 2);
    utf8_id[200] = '\0';
    ab_log_set_event_id(utf8_id);
    ab_info("long ids");
    const char *text = capture_text(&c);
    json_t *j = line_json(text, 0);
    CHECK_INT_EQ(strlen(str_of(j, "request_id") ? str_of(j, "request_id") : ""), 127);
    const char *event_id = str_of(j, "event_id");
    CHECK(event_id != NULL && strlen(event_id) == 126 && strncmp(event_id, utf8_id, 126) == 0);
    json_decref(j);
    ab_log_set_request_id(NULL);
    ab_log_set_event_id(NULL);
    capture_stop(&c);
}

TEST(log_fields_are_added_but_cannot_replace_fixed_keys)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("fields", AB_LOG_INFO);
    ab_log_set_request_id("req-real");
    json_t *fields = json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:i,s:{s:[i,b]},s:n}", "time", "forged",
                               "level", "debug", "service", "evil", "message", "forged",
                               "request_id", "req-forged", "agent", "a1", "attempt", 3, "nested",
                               "a", 1, true, "nothing");
    REQUIRE(fields != NULL);
    json_incref(fields); /* keep one reference to see that the logger drops its own */
    ab_log_fields(AB_LOG_WARN, fields, "real message");
    CHECK_INT_EQ(fields->refcount, 1);
    json_decref(fields);

    /* A caller may add event_id when the thread has none. */
    ab_log_fields(AB_LOG_INFO, json_pack("{s:s}", "event_id", "evt-field"), "second");
    /* Fields that are not an object are ignored; NULL is fine. */
    ab_log_fields(AB_LOG_INFO, json_pack("[s]", "ignored"), "third");
    ab_log_fields(AB_LOG_INFO, NULL, "fourth");
    ab_log_set_request_id(NULL);

    const char *text = capture_text(&c);
    REQUIRE(count_lines(text) == 4);
    json_t *j = line_json(text, 0);
    CHECK_STR_EQ(str_of(j, "level"), "warn");
    CHECK_STR_EQ(str_of(j, "service"), "fields");
    CHECK_STR_EQ(str_of(j, "message"), "real message");
    CHECK(str_of(j, "time") != NULL && strcmp(str_of(j, "time"), "forged") != 0);
    CHECK_STR_EQ(str_of(j, "request_id"), "req-real");
    CHECK_STR_EQ(str_of(j, "agent"), "a1");
    CHECK_INT_EQ(json_integer_value(json_object_get(j, "attempt")), 3);
    CHECK(json_is_true(json_array_get(json_object_get(json_object_get(j, "nested"), "a"), 1)));
    CHECK(json_is_null(json_object_get(j, "nothing")));
    CHECK_INT_EQ(json_object_size(j), 9);
    CHECK(strstr(text, "forged") == NULL && strstr(text, "evil") == NULL);
    json_decref(j);
    j = line_json(text, 1);
    CHECK_STR_EQ(str_of(j, "event_id"), "evt-field");
    json_decref(j);
    j = line_json(text, 2);
    CHECK_INT_EQ(json_object_size(j), 5); /* four fixed keys and the request id */
    CHECK(strstr(text, "ignored") == NULL);
    json_decref(j);
    capture_stop(&c);
}

TEST(log_levels_below_minimum_are_not_written)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("levels", AB_LOG_WARN);
    CHECK(!ab_log_enabled(AB_LOG_DEBUG));
    CHECK(!ab_log_enabled(AB_LOG_INFO));
    CHECK(ab_log_enabled(AB_LOG_WARN));
    CHECK(ab_log_enabled(AB_LOG_ERROR));
    int evaluated = 0;
    ab_debug("debug %d", ++evaluated); /* not even formatted */
    CHECK_INT_EQ(evaluated, 0);
    ab_info("info");
    json_t *fields = json_pack("{s:s}", "k", "v");
    json_incref(fields);
    ab_log_fields(AB_LOG_INFO, fields, "info with fields");
    CHECK_INT_EQ(fields->refcount, 1); /* the dropped line still released its reference */
    json_decref(fields);
    ab_warn("warn");
    ab_error("error");
    const char *text = capture_text(&c);
    REQUIRE(count_lines(text) == 2);
    json_t *j = line_json(text, 0);
    CHECK_STR_EQ(str_of(j, "message"), "warn");
    json_decref(j);
    j = line_json(text, 1);
    CHECK_STR_EQ(str_of(j, "message"), "error");
    json_decref(j);

    ab_log_init("levels", AB_LOG_ERROR);
    ab_warn("dropped");
    ab_log_init("levels", AB_LOG_DEBUG);
    ab_debug("kept");
    text = capture_text(&c);
    CHECK_INT_EQ(count_lines(text), 3);
    CHECK(strstr(text, "dropped") == NULL);
    CHECK_STR_CONTAINS(text, "\"kept\"");
    capture_stop(&c);
}

TEST(log_level_names)
{
    static const struct {
        const char *name;
        enum ab_log_level level;
    } names[] = { { "debug", AB_LOG_DEBUG }, { "info", AB_LOG_INFO },   { "warn", AB_LOG_WARN },
                  { "warning", AB_LOG_WARN }, { "error", AB_LOG_ERROR } };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        enum ab_log_level level = (enum ab_log_level)99;
        CHECK(ab_log_level_parse(names[i].name, &level));
        CHECK_INT_EQ(level, names[i].level);
    }
    static const char *const bad[] = { "verbose", "INFO", "", "err", "debug ", "fatal" };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        enum ab_log_level level = AB_LOG_ERROR;
        CHECK(!ab_log_level_parse(bad[i], &level));
        CHECK_INT_EQ(level, AB_LOG_ERROR);
    }
    enum ab_log_level level = AB_LOG_ERROR;
    CHECK(!ab_log_level_parse(NULL, &level));
    CHECK_STR_EQ(ab_log_level_name(AB_LOG_DEBUG), "debug");
    CHECK_STR_EQ(ab_log_level_name(AB_LOG_INFO), "info");
    CHECK_STR_EQ(ab_log_level_name(AB_LOG_WARN), "warn");
    CHECK_STR_EQ(ab_log_level_name(AB_LOG_ERROR), "error");
    CHECK_STR_EQ(ab_log_level_name((enum ab_log_level)42), "info");
}

TEST(log_invalid_utf8_still_gives_valid_json)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("utf8", AB_LOG_INFO);
    static const char *const bad[] = {
        "dead-lettered orders[3]@17: bad byte \xff here",
        "lone continuation \x80 byte",
        "overlong slash \xc0\xaf",
        "surrogate \xed\xa0\x80",
        "beyond U+10FFFF \xf4\x90\x80\x80",
        "cut short \xe2\x9c",
        "\xe2\x9c",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ab_info("%s", bad[i]);
    ab_log_set_request_id("req-\xff");
    ab_info("bad request id");
    ab_log_set_request_id(NULL);
    const char *text = capture_text(&c);
    REQUIRE(count_lines(text) == sizeof(bad) / sizeof(bad[0]) + 1);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        json_t *j = line_json(text, i);
        const char *msg = str_of(j, "message");
        CHECK(msg != NULL && msg[0] != '\0');
        json_decref(j);
    }
    /* The readable part of a message survives: it says which message was dead-lettered. */
    json_t *j = line_json(text, 0);
    CHECK_STR_EQ(str_of(j, "message"), "dead-lettered orders[3]@17: bad byte ? here");
    json_decref(j);
    j = line_json(text, 2);
    CHECK_STR_EQ(str_of(j, "message"), "overlong slash ??");
    json_decref(j);
    j = line_json(text, 5);
    CHECK_STR_EQ(str_of(j, "message"), "cut short ??");
    json_decref(j);
    j = line_json(text, sizeof(bad) / sizeof(bad[0]));
    CHECK_STR_EQ(str_of(j, "message"), "bad request id");
    CHECK_STR_EQ(str_of(j, "request_id"), "req-?");
    json_decref(j);
    capture_stop(&c);
}

TEST(log_long_message_is_cut_on_a_character_boundary)
{
    struct capture c;
    capture_start(&c);
    ab_log_init("long", AB_LOG_INFO);
    /* 2000 three-byte characters: 6000 bytes, over the 4096-byte message buffer. */
    size_t count = 2000;
    char *msg = malloc(count * 3 + 1);
    REQUIRE(msg != NULL);
    for (size_t i = 0; i < count; i++)
        memcpy(msg + 3 * i, "中", 3);
    msg[count * 3] = '\0';
    for (int shift = 0; shift < 3; shift++) /* each of the three places the cut can fall */
        ab_info("%.*s%s", shift, "ab", msg);
    const char *text = capture_text(&c);
    REQUIRE(count_lines(text) == 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *j = line_json(text, i);
        const char *logged = str_of(j, "message");
        REQUIRE(logged != NULL);
        size_t len = strlen(logged);
        CHECK(len > 4000 && len < 4096);
        CHECK(strncmp(logged, "ab", i) == 0);
        CHECK(strncmp(logged + i, msg, len - i) == 0); /* a prefix, cut between characters */
        CHECK_INT_EQ((len - i) % 3, 0);
        json_decref(j);
    }
    free(msg);
    capture_stop(&c);
}

TEST(log_set_output_null_restores_stdout)
{
    char path[] = "/tmp/agentbus-test-log-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    fflush(stdout);
    int saved = dup(STDOUT_FILENO);
    REQUIRE(saved >= 0 && dup2(fd, STDOUT_FILENO) >= 0);
    struct capture c;
    capture_start(&c);
    ab_log_init("stdout", AB_LOG_INFO);
    ab_info("to the capture");
    ab_log_set_output(NULL);
    ab_info("to stdout");
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    CHECK_STR_CONTAINS(capture_text(&c), "to the capture");
    CHECK(strstr(capture_text(&c), "to stdout") == NULL);
    char buf[1024] = "";
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    REQUIRE(n > 0);
    buf[n] = '\0';
    CHECK_STR_CONTAINS(buf, "\"message\":\"to stdout\"");
    CHECK(strstr(buf, "to the capture") == NULL);
    close(fd);
    unlink(path);
    capture_stop(&c);
}

#define LOG_THREADS 4
#define LOG_LINES 2000

struct writer {
    int index;
};

static void *write_lines(void *arg)
{
    const struct writer *w = arg;
    char rid[32], pad[600];
    snprintf(rid, sizeof(rid), "req-thread-%d", w->index);
    ab_log_set_request_id(rid);
    /* Long enough that one line is more than a small stdio buffer. */
    memset(pad, 'a' + w->index, sizeof(pad) - 1);
    pad[sizeof(pad) - 1] = '\0';
    for (int i = 0; i < LOG_LINES; i++)
        ab_log_fields(AB_LOG_INFO, json_pack("{s:i,s:i}", "thread", w->index, "seq", i),
                      "thread %d line %d %s", w->index, i, pad);
    return NULL;
}

TEST(log_concurrent_lines_never_interleave)
{
    char path[] = "/tmp/agentbus-test-log-XXXXXX";
    int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    FILE *out = fdopen(fd, "w+");
    REQUIRE(out != NULL);
    ab_log_set_output(out);
    ab_log_init("threads", AB_LOG_INFO);
    pthread_t threads[LOG_THREADS];
    struct writer writers[LOG_THREADS];
    for (int i = 0; i < LOG_THREADS; i++) {
        writers[i].index = i;
        REQUIRE(pthread_create(&threads[i], NULL, write_lines, &writers[i]) == 0);
    }
    for (int i = 0; i < LOG_THREADS; i++)
        pthread_join(threads[i], NULL);
    ab_log_set_output(NULL);
    rewind(out);

    int next_seq[LOG_THREADS] = { 0 };
    size_t lines = 0, bad = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while ((len = getline(&line, &cap, out)) > 0) {
        lines++;
        json_error_t jerr;
        json_t *j = json_loadb(line, (size_t)len, 0, &jerr);
        json_int_t t = json_integer_value(json_object_get(j, "thread"));
        json_int_t seq = json_integer_value(json_object_get(j, "seq"));
        char rid[32], want[700];
        snprintf(rid, sizeof(rid), "req-thread-%d", (int)t);
        if (!json_is_object(j) || t < 0 || t >= LOG_THREADS ||
            strcmp(str_of(j, "request_id") ? str_of(j, "request_id") : "", rid) != 0 ||
            seq != next_seq[t]) {
            if (bad++ < 3)
                ab_test_fail(__FILE__, __LINE__, "line %zu: %.120s", lines, line);
            json_decref(j);
            continue;
        }
        char pad[600];
        memset(pad, 'a' + (int)t, sizeof(pad) - 1);
        pad[sizeof(pad) - 1] = '\0';
        snprintf(want, sizeof(want), "thread %d line %d %s", (int)t, (int)seq, pad);
        CHECK_STR_EQ(str_of(j, "message"), want);
        next_seq[t]++;
        json_decref(j);
    }
    free(line);
    CHECK_INT_EQ(bad, 0);
    CHECK_INT_EQ(lines, LOG_THREADS * LOG_LINES);
    for (int i = 0; i < LOG_THREADS; i++)
        CHECK_INT_EQ(next_seq[i], LOG_LINES);
    fclose(out);
    unlink(path);
}
