/* W3C traceparent: parsing by the specification's rules, ids from the process's random
 * source, and the thread's current span. */
#include "common/trace.h"

#include <stdio.h>
#include <string.h>

#include "common/util.h"

static __thread struct ab_trace current;
static __thread bool has_current;

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static bool all_zero(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != '0')
            return false;
    return true;
}

static int hex_value(char c)
{
    return c <= '9' ? c - '0' : c - 'a' + 10;
}

bool ab_trace_parse(const char *h, struct ab_trace *out)
{
    if (h == NULL)
        return false;
    size_t len = strnlen(h, AB_TRACEPARENT_LEN + 1);
    if (len < AB_TRACEPARENT_LEN || !lower_hex(h, 2) || h[2] != '-' || h[35] != '-' || h[52] != '-')
        return false;
    if (memcmp(h, "ff", 2) == 0)
        return false; /* version ff is invalid */
    if (memcmp(h, "00", 2) == 0 ? len != AB_TRACEPARENT_LEN
                                : len > AB_TRACEPARENT_LEN && h[AB_TRACEPARENT_LEN] != '-')
        return false;
    const char *trace = h + 3, *span = h + 36, *flags = h + 53;
    if (!lower_hex(trace, 32) || !lower_hex(span, 16) || !lower_hex(flags, 2) ||
        all_zero(trace, 32) || all_zero(span, 16))
        return false;
    memcpy(out->trace_id, trace, 32);
    out->trace_id[32] = '\0';
    memcpy(out->span_id, span, 16);
    out->span_id[16] = '\0';
    out->flags = (uint8_t)(hex_value(flags[0]) << 4 | hex_value(flags[1]));
    return true;
}

static void random_hex(char *out, size_t digits)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char bytes[16];
    do {
        ab_random_bytes(bytes, digits / 2);
        for (size_t i = 0; i < digits / 2; i++) {
            out[2 * i] = hex[bytes[i] >> 4];
            out[2 * i + 1] = hex[bytes[i] & 15];
        }
        out[digits] = '\0';
    } while (all_zero(out, digits));
}

void ab_trace_start(struct ab_trace *out)
{
    random_hex(out->trace_id, 32);
    random_hex(out->span_id, 16);
    out->flags = 0x01;
}

void ab_trace_child(const struct ab_trace *parent, struct ab_trace *out)
{
    if (parent == NULL) {
        ab_trace_start(out);
        return;
    }
    if (out != parent)
        memcpy(out->trace_id, parent->trace_id, sizeof(out->trace_id));
    /* We send version 00, which defines only "sampled": the other bits must be zero. */
    out->flags = parent->flags & 0x01;
    random_hex(out->span_id, 16);
}

void ab_trace_format(const struct ab_trace *t, char out[AB_TRACEPARENT_LEN + 1])
{
    snprintf(out, AB_TRACEPARENT_LEN + 1, "00-%s-%s-%02x", t->trace_id, t->span_id,
             (unsigned)t->flags);
}

void ab_trace_child_header(const char *parent, char out[AB_TRACEPARENT_LEN + 1])
{
    struct ab_trace t;
    bool ok = ab_trace_parse(parent, &t);
    ab_trace_child(ok ? &t : NULL, &t);
    ab_trace_format(&t, out);
}

void ab_trace_enter(const char *traceparent)
{
    struct ab_trace parent;
    ab_trace_child(ab_trace_parse(traceparent, &parent) ? &parent : NULL, &current);
    has_current = true;
}

void ab_trace_set_current(const struct ab_trace *t)
{
    has_current = t != NULL;
    if (t != NULL && t != &current)
        current = *t;
}

bool ab_trace_resume(const char *traceparent)
{
    has_current = ab_trace_parse(traceparent, &current);
    return has_current;
}

void ab_trace_leave(void)
{
    has_current = false;
}

const struct ab_trace *ab_trace_current(void)
{
    return has_current ? &current : NULL;
}

bool ab_trace_current_header(char out[AB_TRACEPARENT_LEN + 1])
{
    if (!has_current) {
        out[0] = '\0';
        return false;
    }
    ab_trace_format(&current, out);
    return true;
}
