/* JSON-lines logger. Each line is formatted in full, then written with one fwrite under a
 * mutex, so concurrent threads never interleave; the thread's request and event ids live
 * in thread-local storage so deep callees need not pass them around. */
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>

#include "common/trace.h"

static char log_service[64] = "agentbus";
static enum ab_log_level log_min_level = AB_LOG_INFO;
static FILE *log_out;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static __thread char log_request_id[128];
static __thread char log_event_id[128];

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void ab_log_init(const char *service, enum ab_log_level min_level)
{
    snprintf(log_service, sizeof(log_service), "%s", service ? service : "agentbus");
    log_min_level = min_level;
}

void ab_log_set_output(FILE *out)
{
    pthread_mutex_lock(&log_lock);
    log_out = out;
    pthread_mutex_unlock(&log_lock);
}

bool ab_log_level_parse(const char *name, enum ab_log_level *level)
{
    if (name == NULL)
        return false;
    for (int i = 0; i < 4; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *level = (enum ab_log_level)i;
            return true;
        }
    }
    if (strcmp(name, "warning") == 0) {
        *level = AB_LOG_WARN;
        return true;
    }
    return false;
}

const char *ab_log_level_name(enum ab_log_level level)
{
    return level <= AB_LOG_ERROR ? level_names[level] : "info";
}

bool ab_log_enabled(enum ab_log_level level)
{
    return level >= log_min_level;
}

/* Length of the valid UTF-8 character at s, or 0 when none starts there (overlong forms,
 * surrogates and code points past U+10FFFF are invalid, as jansson sees them). */
static size_t utf8_char(const unsigned char *s)
{
    unsigned c = s[0], cp;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        n = 2;
        cp = c & 0x1f;
    } else if (c >= 0xe0 && c <= 0xef) {
        n = 3;
        cp = c & 0x0f;
    } else if (c >= 0xf0 && c <= 0xf4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    for (size_t i = 1; i < n; i++) { /* stops at the NUL, which is no continuation byte */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return n;
}

/* Makes text valid UTF-8 in place, so json_string accepts it and a line keeps what it
 * says: each invalid byte becomes '?', and when the text was cut to fit a buffer, a
 * character cut in half at the end is dropped. */
static void utf8_repair(char *text, bool truncated)
{
    unsigned char *p = (unsigned char *)text;
    while (*p != '\0') {
        size_t n = utf8_char(p);
        if (n > 0) {
            p += n;
            continue;
        }
        size_t need = *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2;
        if (truncated && *p >= 0xc2 && *p <= 0xf4 && strlen((const char *)p) < need) {
            *p = '\0';
            break;
        }
        *p++ = '?';
    }
}

static void set_id(char *dst, size_t size, const char *id)
{
    if (id == NULL) {
        dst[0] = '\0';
        return;
    }
    int n = snprintf(dst, size, "%s", id);
    utf8_repair(dst, n >= (int)size);
}

void ab_log_set_request_id(const char *request_id)
{
    set_id(log_request_id, sizeof(log_request_id), request_id);
}

void ab_log_set_event_id(const char *event_id)
{
    set_id(log_event_id, sizeof(log_event_id), event_id);
}

const char *ab_log_request_id(void)
{
    return log_request_id;
}

static void format_time(char *buf, size_t size)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03ldZ", ts.tv_nsec / 1000000L);
}

void ab_log_fields(enum ab_log_level level, json_t *fields, const char *fmt, ...)
{
    if (!ab_log_enabled(level)) {
        json_decref(fields);
        return;
    }
    char when[40], msg[4096];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n < 0)
        msg[0] = '\0';
    utf8_repair(msg, n >= (int)sizeof(msg));
    format_time(when, sizeof(when));

    /* Fixed keys first so a human can read the line; caller fields may not replace them. */
    json_t *line = json_object();
    json_object_set_new(line, "time", json_string(when));
    json_object_set_new(line, "level", json_string(ab_log_level_name(level)));
    json_object_set_new(line, "service", json_string(log_service));
    json_object_set_new(line, "message", json_string(msg));
    if (log_request_id[0] != '\0')
        json_object_set_new(line, "request_id", json_string(log_request_id));
    if (log_event_id[0] != '\0')
        json_object_set_new(line, "event_id", json_string(log_event_id));
    const struct ab_trace *trace = ab_trace_current();
    if (trace != NULL) {
        json_object_set_new(line, "trace_id", json_string(trace->trace_id));
        json_object_set_new(line, "span_id", json_string(trace->span_id));
    }
    if (json_is_object(fields)) {
        const char *key;
        json_t *value;
        json_object_foreach(fields, key, value)
        {
            if (json_object_get(line, key) == NULL)
                json_object_set(line, key, value);
        }
    }
    json_decref(fields);

    char *text = json_dumps(line, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(line);
    if (text == NULL)
        return;
    pthread_mutex_lock(&log_lock);
    FILE *out = log_out ? log_out : stdout;
    fputs(text, out);
    fputc('\n', out);
    fflush(out);
    pthread_mutex_unlock(&log_lock);
    free(text);
}
