/* The Server-Sent Events parser (see sse.h for the rules it follows and why it passes bytes
 * through undecoded). It scans each chunk for line ends and copies runs of bytes, so a chunk
 * costs one pass whatever its size; the only state carried between chunks is the current
 * line, the current event, and three flags (a CR just seen, inside a comment, BOM progress). */
#include "services/llm-worker/sse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct llmw_sse_parser {
    llmw_sse_event_fn on_event;
    void *ud;
    size_t max_event_bytes;

    char *line; /* the line being read, without its end; not NUL-terminated */
    size_t line_len, line_cap;
    char *data; /* this event's data lines joined with "\n"; NUL-terminated at dispatch */
    size_t data_len, data_cap;
    bool has_data;  /* a data field was seen since the last dispatch (data may be "") */
    char *type;     /* this event's "event" field, or NULL */
    char *id;       /* the stream's last event id; never NULL */
    long long retry_ms;

    unsigned bom_seen; /* bytes of the BOM matched so far at the start of the stream */
    bool bom_done;     /* past the point where a BOM could be */
    bool after_cr;     /* the last byte was a CR: a LF now ends nothing more */
    bool in_comment;   /* inside a ':' line, whose bytes are dropped */
    bool stopped;      /* the callback said stop, or the stream ended */
    bool failed;
    char failure[128];
};

static const unsigned char bom[3] = { 0xEF, 0xBB, 0xBF };

/* Grows *buf to hold at least need bytes. Out of memory aborts, as util.h's allocators do:
 * need is bounded by max_event_bytes, so only a real shortage gets here. */
static void reserve(char **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n *= 2;
    char *grown = realloc(*buf, n);
    if (grown == NULL)
        abort();
    *buf = grown;
    *cap = n;
}

static char *dup_bytes(const char *s, size_t n)
{
    char *copy = malloc(n + 1);
    if (copy == NULL)
        abort();
    memcpy(copy, s, n);
    copy[n] = '\0';
    return copy;
}

static enum ab_err fail(struct llmw_sse_parser *p, const char *what)
{
    p->failed = true;
    snprintf(p->failure, sizeof(p->failure), "SSE: %s over the limit of %zu bytes", what,
             p->max_event_bytes);
    return AB_ERR_TOO_LARGE;
}

struct llmw_sse_parser *llmw_sse_new(size_t max_event_bytes, llmw_sse_event_fn on_event,
                                     void *ud)
{
    struct llmw_sse_parser *p = calloc(1, sizeof(*p));
    if (p == NULL)
        abort();
    p->on_event = on_event;
    p->ud = ud;
    p->max_event_bytes = max_event_bytes ? max_event_bytes : LLMW_SSE_DEFAULT_MAX_EVENT_BYTES;
    p->id = dup_bytes("", 0);
    p->retry_ms = -1;
    return p;
}

void llmw_sse_free(struct llmw_sse_parser *p)
{
    if (p == NULL)
        return;
    free(p->line);
    free(p->data);
    free(p->type);
    free(p->id);
    free(p);
}

/* The event's size is what the parser holds for it: the data so far plus the line being
 * read (a line becomes data, or a short field value, only once it has ended). */
static enum ab_err line_append(struct llmw_sse_parser *p, const unsigned char *b, size_t n)
{
    if (n > p->max_event_bytes - p->data_len - p->line_len)
        return fail(p, "an event");
    reserve(&p->line, &p->line_cap, p->line_len + n);
    memcpy(p->line + p->line_len, b, n);
    p->line_len += n;
    return AB_OK;
}

static enum ab_err dispatch(struct llmw_sse_parser *p)
{
    /* No data field: nothing to dispatch, and the type does not carry over (the spec). */
    if (!p->has_data) {
        free(p->type);
        p->type = NULL;
        return AB_OK;
    }
    reserve(&p->data, &p->data_cap, p->data_len + 1);
    p->data[p->data_len] = '\0';
    struct llmw_sse_event ev = {
        .type = p->type && p->type[0] ? p->type : "message", /* "" is "message" too */
        .data = p->data,
        .data_len = p->data_len,
        .id = p->id,
    };
    enum llmw_sse_next next = p->on_event(p->ud, &ev);
    p->data_len = 0;
    p->has_data = false;
    free(p->type);
    p->type = NULL;
    if (next == LLMW_SSE_STOP)
        p->stopped = true;
    return AB_OK;
}

static bool field_is(const char *name, size_t len, const char *want)
{
    return len == strlen(want) && memcmp(name, want, len) == 0;
}

/* Parses "retry" as the spec does: only ASCII digits count. Absurdly long values are
 * ignored rather than overflowed. */
static void set_retry(struct llmw_sse_parser *p, const char *v, size_t n)
{
    if (n == 0 || n > 15)
        return;
    long long ms = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] < '0' || v[i] > '9')
            return;
        ms = ms * 10 + (v[i] - '0');
    }
    p->retry_ms = ms;
}

/* Handles one complete line (p->line, p->line_len); comments never get here. */
static enum ab_err process_line(struct llmw_sse_parser *p)
{
    if (p->line_len == 0)
        return dispatch(p);

    const char *name = p->line, *value = "";
    size_t name_len = p->line_len, value_len = 0;
    const char *colon = memchr(p->line, ':', p->line_len);
    if (colon != NULL) {
        name_len = (size_t)(colon - p->line);
        value = colon + 1;
        value_len = p->line_len - name_len - 1;
        if (value_len > 0 && value[0] == ' ') {
            value++;
            value_len--;
        }
    }
    p->line_len = 0; /* value still points into p->line, which is not touched below */

    if (field_is(name, name_len, "data")) {
        size_t need = p->data_len + (p->has_data ? 1 : 0) + value_len;
        if (need > p->max_event_bytes)
            return fail(p, "an event");
        reserve(&p->data, &p->data_cap, need + 1);
        if (p->has_data)
            p->data[p->data_len++] = '\n';
        memcpy(p->data + p->data_len, value, value_len);
        p->data_len += value_len;
        p->has_data = true;
    } else if (field_is(name, name_len, "event")) {
        free(p->type);
        p->type = dup_bytes(value, value_len);
    } else if (field_is(name, name_len, "id")) {
        if (memchr(value, '\0', value_len) == NULL) {
            free(p->id);
            p->id = dup_bytes(value, value_len);
        }
    } else if (field_is(name, name_len, "retry")) {
        set_retry(p, value, value_len);
    }
    return AB_OK;
}

static enum ab_err feed_bytes(struct llmw_sse_parser *p, const unsigned char *b, size_t len)
{
    size_t i = 0;
    while (i < len && !p->stopped) {
        if (p->after_cr) {
            p->after_cr = false;
            if (b[i] == '\n') { /* the LF of a CRLF whose CR ended the line already */
                i++;
                continue;
            }
        }
        size_t j = i;
        while (j < len && b[j] != '\r' && b[j] != '\n')
            j++;
        if (j > i) {
            if (p->line_len == 0 && !p->in_comment && b[i] == ':')
                p->in_comment = true;
            if (!p->in_comment) {
                enum ab_err err = line_append(p, b + i, j - i);
                if (err != AB_OK)
                    return err;
            }
        }
        if (j == len)
            break;
        p->after_cr = b[j] == '\r';
        i = j + 1;
        if (p->in_comment) {
            p->in_comment = false;
            continue;
        }
        enum ab_err err = process_line(p);
        if (err != AB_OK)
            return err;
    }
    return AB_OK;
}

enum ab_err llmw_sse_feed(struct llmw_sse_parser *p, const void *data, size_t len, char *errstr,
                          size_t errstr_size)
{
    const unsigned char *b = data;
    enum ab_err err = AB_OK;
    if (p->failed) {
        err = AB_ERR_TOO_LARGE;
        goto out;
    }
    /* The BOM may itself arrive split; bytes that turn out not to be one are replayed. */
    while (!p->bom_done && len > 0 && !p->stopped) {
        if (b[0] == bom[p->bom_seen]) {
            p->bom_seen++;
            b++;
            len--;
            p->bom_done = p->bom_seen == sizeof(bom);
            continue;
        }
        p->bom_done = true;
        err = feed_bytes(p, bom, p->bom_seen);
        if (err != AB_OK)
            goto out;
    }
    if (len > 0)
        err = feed_bytes(p, b, len);
out:
    if (err != AB_OK && errstr != NULL && errstr_size > 0)
        snprintf(errstr, errstr_size, "%s", p->failure);
    return err;
}

bool llmw_sse_end(struct llmw_sse_parser *p)
{
    bool cut = !p->failed && !p->stopped &&
               (p->line_len > 0 || p->has_data || (!p->bom_done && p->bom_seen > 0));
    p->line_len = 0;
    p->data_len = 0;
    p->has_data = false;
    p->stopped = true;
    return cut;
}

long long llmw_sse_retry_ms(const struct llmw_sse_parser *p)
{
    return p->retry_ms;
}
