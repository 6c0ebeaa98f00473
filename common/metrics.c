/* The metrics registry. Families sit in registration order; each has its own mutex and a
 * hash table of series keyed by label values, so observing two metrics never contends and
 * observing a known label combination is a hash, a lock and an add, with no allocation.
 * Rendering copies a family's numbers under its lock and formats them after releasing it. */
#include "common/metrics.h"

#include "common/log.h"

#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"

#define DROPPED_NAME "agentbus_metrics_series_dropped_total"
#define DROPPED_HELP                                                                       \
    "Observations dropped because their metric reached its series limit or a label value " \
    "was not UTF-8."

enum kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM, KIND_GAUGE_FN };

static const char *const kind_names[] = { "counter", "gauge", "histogram", "gauge" };

static const double default_buckets[] = { .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10 };

enum drop_reason { DROP_SERIES_LIMIT, DROP_INVALID_UTF8, DROP_NOMEM };

static const char *const drop_reason_names[] = { "series_limit", "invalid_utf8",
                                                 "out_of_memory" };

/* One label combination. Its label values never change after creation and it is freed
 * only with its registry, so render reads them without the family lock. */
struct series {
    struct series *next; /* hash chain */
    uint64_t hash;
    const char *values[AB_METRICS_MAX_LABELS + 1]; /* NULL-terminated; the text follows counts */
    double value;                                  /* counter or gauge value; histogram sum */
    bool removed;      /* ab_metric_remove: not rendered until observed again */
    uint64_t counts[]; /* histogram only: per bucket (not cumulative); [nbounds] is +Inf */
};

/* What a registration asks for, validated; two registrations of one name must match. */
struct shape {
    enum kind kind;
    size_t nlabels;
    const char *label_names[AB_METRICS_MAX_LABELS];
    size_t nbounds;
    double bounds[AB_METRICS_MAX_BUCKETS];
};

struct ab_metric {
    /* Set at registration, never changed: read without a lock. */
    struct ab_metrics *registry;
    enum kind kind;
    char *name;
    char *help; /* NULL: no # HELP line */
    size_t nlabels;
    char *label_names[AB_METRICS_MAX_LABELS];
    size_t nbounds;
    double bounds[AB_METRICS_MAX_BUCKETS];

    pthread_mutex_t lock; /* guards the fields below */
    struct series **table;
    size_t table_size; /* a power of two */
    size_t nseries;
    double (*fn)(void *ud); /* gauge_fn; NULL while unbound */
    void *ud;

    /* A bug at a hot call site would otherwise write one log line per observation. */
    atomic_bool misuse_logged;
    atomic_bool drop_logged;
};

struct ab_metrics {
    pthread_mutex_t lock; /* guards the family list; a family stays in it until free */
    struct ab_metric **families;
    size_t nfamilies;
    size_t cap;
    struct ab_metric *_Atomic dropped; /* DROPPED_NAME, registered at the first drop */
};

/* ---- names and values ---- */

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* [a-zA-Z_:][a-zA-Z0-9_:]* for metrics, [a-zA-Z_][a-zA-Z0-9_]* for labels. */
static bool valid_name(const char *s, bool colon_ok)
{
    if (s == NULL || !(is_alpha(*s) || (colon_ok && *s == ':')))
        return false;
    for (s++; *s != '\0'; s++) {
        if (!(is_alpha(*s) || is_digit(*s) || (colon_ok && *s == ':')))
            return false;
    }
    return true;
}

/* The exposition format is UTF-8: one bad byte in a label value makes Prometheus reject
 * the whole scrape, so such values never become series. Rejects overlong forms,
 * surrogates and code points above U+10FFFF. */
static bool valid_utf8(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;
    while (*s != '\0') {
        unsigned c = *s;
        size_t more;
        uint32_t cp, min;
        if (c < 0x80) {
            s++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            more = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            more = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            more = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        for (size_t i = 1; i <= more; i++) {
            if ((s[i] & 0xC0) != 0x80) /* also stops at the terminator */
                return false;
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        s += more + 1;
    }
    return true;
}

/* Integers print without an exponent or a fraction; other values print with the fewest
 * digits (15 to 17) that read back as the same double. Assumes the C locale for '.',
 * which services never change. */
static void format_number(char *buf, size_t size, double v)
{
    if (isnan(v)) {
        snprintf(buf, size, "NaN");
    } else if (isinf(v)) {
        snprintf(buf, size, v > 0 ? "+Inf" : "-Inf");
    } else if (v == floor(v) && fabs(v) < 1e15) {
        snprintf(buf, size, "%.0f", v + 0.0); /* + 0.0 turns -0 into 0 */
    } else {
        for (int precision = 15; precision <= 17; precision++) {
            snprintf(buf, size, "%.*g", precision, v);
            if (strtod(buf, NULL) == v)
                break;
        }
    }
}

/* FNV-1a over the values, each with its terminator so ("ab","c") and ("a","bc") differ. */
static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = AB_FNV1A_INIT;
    for (size_t i = 0; i < n; i++)
        h = ab_fnv1a(h, values[i], strlen(values[i]) + 1);
    return h;
}

/* ---- logging misuse and drops ---- */

static void misuse(struct ab_metric *f, const char *what)
{
    if (!atomic_exchange(&f->misuse_logged, true))
        ab_error("metric %s (%s): %s; ignored (logged once per metric)", f->name,
                 kind_names[f->kind], what);
}

static void count_drop(struct ab_metric *f, enum drop_reason why)
{
    struct ab_metrics *m = f->registry;
    struct ab_metric *dropped = atomic_load(&m->dropped);
    /* Its own series are bounded by the number of families; never count it in itself. */
    if (f == dropped)
        return;
    if (!atomic_exchange(&f->drop_logged, true))
        ab_warn("metric %s: dropping an observation (%s); counted in " DROPPED_NAME
                ", logged once per metric",
                f->name, drop_reason_names[why]);
    if (dropped == NULL) {
        dropped = ab_metrics_counter(m, DROPPED_NAME, DROPPED_HELP,
                                     (const char *const[]){ "metric", "reason", NULL });
        if (dropped == NULL)
            return;
        atomic_store(&m->dropped, dropped);
    }
    ab_metric_inc(dropped, (const char *const[]){ f->name, drop_reason_names[why], NULL }, 1);
}

/* ---- series ---- */

static struct series *series_find(const struct ab_metric *f, const char *const *values,
                                  uint64_t hash)
{
    for (struct series *s = f->table[hash & (f->table_size - 1)]; s != NULL; s = s->next) {
        if (s->hash != hash)
            continue;
        size_t i = 0;
        while (i < f->nlabels && strcmp(s->values[i], values[i]) == 0)
            i++;
        if (i == f->nlabels)
            return s;
    }
    return NULL;
}

/* One allocation: the struct, the histogram counts, then the label values' text. */
static struct series *series_new(const struct ab_metric *f, const char *const *values,
                                 uint64_t hash)
{
    size_t ncounts = f->kind == KIND_HISTOGRAM ? f->nbounds + 1 : 0;
    size_t head = sizeof(struct series) + ncounts * sizeof(uint64_t);
    size_t lens[AB_METRICS_MAX_LABELS];
    size_t text = 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        lens[i] = strlen(values[i]) + 1;
        text += lens[i];
    }
    struct series *s = calloc(1, head + text);
    if (s == NULL)
        return NULL;
    char *p = (char *)s + head;
    for (size_t i = 0; i < f->nlabels; i++) {
        memcpy(p, values[i], lens[i]);
        s->values[i] = p;
        p += lens[i];
    }
    s->hash = hash;
    return s;
}

/* Keeps chains short (load factor <= 1). On failure the chains just grow longer. */
static void table_grow(struct ab_metric *f)
{
    size_t size = f->table_size * 2;
    struct series **table = calloc(size, sizeof(*table));
    if (table == NULL)
        return;
    for (size_t b = 0; b < f->table_size; b++) {
        struct series *next;
        for (struct series *s = f->table[b]; s != NULL; s = next) {
            next = s->next;
            s->next = table[s->hash & (size - 1)];
            table[s->hash & (size - 1)] = s;
        }
    }
    free(f->table);
    f->table = table;
    f->table_size = size;
}

/* The series for values, created the first time they are seen; NULL (with *why) when it
 * may not be created. Called with f->lock held. */
static struct series *series_get(struct ab_metric *f, const char *const *values,
                                 uint64_t hash, enum drop_reason *why)
{
    struct series *s = series_find(f, values, hash);
    if (s != NULL)
        return s;
    if (f->nseries >= AB_METRICS_MAX_SERIES) {
        *why = DROP_SERIES_LIMIT;
        return NULL;
    }
    for (size_t i = 0; i < f->nlabels; i++) {
        if (!valid_utf8(values[i])) {
            *why = DROP_INVALID_UTF8;
            return NULL;
        }
    }
    if (f->nseries >= f->table_size)
        table_grow(f);
    s = series_new(f, values, hash);
    if (s == NULL) {
        *why = DROP_NOMEM;
        return NULL;
    }
    size_t b = hash & (f->table_size - 1);
    s->next = f->table[b];
    f->table[b] = s;
    f->nseries++;
    return s;
}

/* ---- observations ---- */

enum op { OP_ADD, OP_SET, OP_OBSERVE };

/* Whether values holds exactly one non-NULL value per label name, then the terminator. */
static bool label_count_ok(const struct ab_metric *f, const char *const *values)
{
    if (values == NULL)
        return f->nlabels == 0;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (values[i] == NULL)
            return false;
    }
    return values[f->nlabels] == NULL;
}

/* The first bucket whose upper bound is >= v; nbounds (the +Inf bucket) when none is,
 * which includes NaN since every comparison with it is false. */
static size_t bucket_index(const struct ab_metric *f, double v)
{
    size_t lo = 0, hi = f->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

static void update(struct ab_metric *f, const char *const *values, enum op op, double v)
{
    if (!label_count_ok(f, values)) {
        misuse(f, "the label values do not match the label names");
        return;
    }
    uint64_t hash = hash_values(values, f->nlabels);
    enum drop_reason why = DROP_NOMEM;
    pthread_mutex_lock(&f->lock);
    struct series *s = series_get(f, values, hash, &why);
    if (s != NULL) {
        s->removed = false;
        switch (op) {
        case OP_ADD:
            s->value += v;
            break;
        case OP_SET:
            s->value = v;
            break;
        case OP_OBSERVE:
            s->counts[bucket_index(f, v)]++;
            s->value += v;
            break;
        }
    }
    pthread_mutex_unlock(&f->lock);
    if (s == NULL)
        count_drop(f, why);
}

void ab_metric_inc(struct ab_metric *counter, const char *const *label_values, double v)
{
    if (counter == NULL)
        return;
    if (counter->kind != KIND_COUNTER)
        misuse(counter, "ab_metric_inc applies to counters only");
    else if (!(v >= 0))
        misuse(counter, "a counter cannot be increased by a negative or NaN amount");
    else
        update(counter, label_values, OP_ADD, v);
}

void ab_metric_set(struct ab_metric *gauge, const char *const *label_values, double v)
{
    if (gauge == NULL)
        return;
    if (gauge->kind != KIND_GAUGE)
        misuse(gauge, "ab_metric_set applies to gauges only");
    else
        update(gauge, label_values, OP_SET, v);
}

void ab_metric_add(struct ab_metric *gauge, const char *const *label_values, double delta)
{
    if (gauge == NULL)
        return;
    if (gauge->kind != KIND_GAUGE)
        misuse(gauge, "ab_metric_add applies to gauges only");
    else
        update(gauge, label_values, OP_ADD, delta);
}

void ab_metric_observe(struct ab_metric *histogram, const char *const *label_values,
                       double value)
{
    if (histogram == NULL)
        return;
    if (histogram->kind != KIND_HISTOGRAM)
        misuse(histogram, "ab_metric_observe applies to histograms only");
    else
        update(histogram, label_values, OP_OBSERVE, value);
}

void ab_metric_remove(struct ab_metric *metric, const char *const *label_values)
{
    if (metric == NULL)
        return;
    if (metric->kind == KIND_GAUGE_FN) {
        misuse(metric, "ab_metric_remove does not apply to callback gauges");
        return;
    }
    if (!label_count_ok(metric, label_values)) {
        misuse(metric, "the label values do not match the label names");
        return;
    }
    /* The series is kept, only hidden: render reads label values without the lock. */
    uint64_t hash = hash_values(label_values, metric->nlabels);
    pthread_mutex_lock(&metric->lock);
    struct series *s = series_find(metric, label_values, hash);
    if (s != NULL) {
        s->removed = true;
        s->value = 0;
        if (metric->kind == KIND_HISTOGRAM)
            memset(s->counts, 0, (metric->nbounds + 1) * sizeof(*s->counts));
    }
    pthread_mutex_unlock(&metric->lock);
}

/* ---- families and the registry ---- */

static bool shape_from_args(struct shape *sh, enum kind kind, const char *name,
                            const char *const *label_names, const double *buckets,
                            size_t nbuckets)
{
    memset(sh, 0, sizeof(*sh));
    sh->kind = kind;
    if (!valid_name(name, true)) {
        ab_error("metrics: invalid metric name \"%s\"", name ? name : "(null)");
        return false;
    }
    for (size_t i = 0; label_names != NULL && label_names[i] != NULL; i++) {
        const char *label = label_names[i];
        if (i == AB_METRICS_MAX_LABELS) {
            ab_error("metrics: %s has more than %d labels", name, AB_METRICS_MAX_LABELS);
            return false;
        }
        if (!valid_name(label, false) || strncmp(label, "__", 2) == 0 ||
            (kind == KIND_HISTOGRAM && strcmp(label, "le") == 0)) {
            ab_error("metrics: %s: invalid or reserved label name \"%s\"", name, label);
            return false;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(label, sh->label_names[j]) == 0) {
                ab_error("metrics: %s: label \"%s\" given twice", name, label);
                return false;
            }
        }
        sh->label_names[i] = label;
        sh->nlabels = i + 1;
    }
    if (kind != KIND_HISTOGRAM)
        return true;

    if (nbuckets == 0) {
        buckets = default_buckets;
        nbuckets = sizeof(default_buckets) / sizeof(default_buckets[0]);
    } else if (buckets == NULL) {
        ab_error("metrics: %s: %zu buckets but no array", name, nbuckets);
        return false;
    }
    if (isinf(buckets[nbuckets - 1]) && buckets[nbuckets - 1] > 0)
        nbuckets--; /* +Inf is implicit */
    if (nbuckets > AB_METRICS_MAX_BUCKETS) {
        ab_error("metrics: %s has more than %d buckets", name, AB_METRICS_MAX_BUCKETS);
        return false;
    }
    for (size_t i = 0; i < nbuckets; i++) {
        if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
            ab_error("metrics: %s: bucket bounds must be finite and strictly increasing",
                     name);
            return false;
        }
        sh->bounds[i] = buckets[i];
    }
    sh->nbounds = nbuckets;
    return true;
}

static bool shape_matches(const struct ab_metric *f, const struct shape *sh)
{
    if (f->kind != sh->kind || f->nlabels != sh->nlabels || f->nbounds != sh->nbounds)
        return false;
    for (size_t i = 0; i < f->nlabels; i++) {
        if (strcmp(f->label_names[i], sh->label_names[i]) != 0)
            return false;
    }
    for (size_t i = 0; i < f->nbounds; i++) {
        if (f->bounds[i] != sh->bounds[i])
            return false;
    }
    return true;
}

/* Whether name is one of the sample names histogram hist renders besides its own. */
static bool is_histogram_sample_name(const char *name, const char *hist)
{
    size_t n = strlen(hist);
    if (strncmp(name, hist, n) != 0)
        return false;
    return strcmp(name + n, "_bucket") == 0 || strcmp(name + n, "_sum") == 0 ||
           strcmp(name + n, "_count") == 0;
}

static void family_free(struct ab_metric *f)
{
    if (f == NULL)
        return;
    for (size_t b = 0; b < f->table_size; b++) {
        struct series *next;
        for (struct series *s = f->table[b]; s != NULL; s = next) {
            next = s->next;
            free(s);
        }
    }
    free(f->table);
    for (size_t i = 0; i < f->nlabels; i++)
        free(f->label_names[i]);
    free(f->name);
    free(f->help);
    pthread_mutex_destroy(&f->lock);
    free(f);
}

static struct ab_metric *family_new(struct ab_metrics *m, const struct shape *sh,
                                    const char *name, const char *help)
{
    struct ab_metric *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        return NULL;
    }
    f->registry = m;
    f->kind = sh->kind;
    f->nbounds = sh->nbounds;
    memcpy(f->bounds, sh->bounds, sizeof(f->bounds));
    atomic_init(&f->misuse_logged, false);
    atomic_init(&f->drop_logged, false);
    f->name = strdup(name);
    f->help = help != NULL ? strdup(help) : NULL;
    bool ok = f->name != NULL && (help == NULL || f->help != NULL);
    for (size_t i = 0; ok && i < sh->nlabels; i++) {
        f->label_names[i] = strdup(sh->label_names[i]);
        ok = f->label_names[i] != NULL;
        f->nlabels = i + 1; /* so family_free frees what was copied */
    }
    if (ok && sh->kind != KIND_GAUGE_FN) {
        f->table_size = sh->nlabels > 0 ? 8 : 1;
        f->table = calloc(f->table_size, sizeof(*f->table));
        ok = f->table != NULL;
        if (!ok)
            f->table_size = 0;
    }
    /* A family without labels has exactly one series: create it now so it renders (as 0)
     * before the first observation, which is what rate() and alerts expect. */
    if (ok && sh->kind != KIND_GAUGE_FN && sh->nlabels == 0) {
        enum drop_reason why;
        ok = series_get(f, NULL, hash_values(NULL, 0), &why) != NULL;
    }
    if (!ok) {
        family_free(f);
        return NULL;
    }
    return f;
}

static struct ab_metric *register_family(struct ab_metrics *m, enum kind kind,
                                         const char *name, const char *help,
                                         const char *const *label_names,
                                         const double *buckets, size_t nbuckets)
{
    struct shape sh;
    if (m == NULL) {
        ab_error("metrics: cannot register %s: no registry", name ? name : "(null)");
        return NULL;
    }
    if (!shape_from_args(&sh, kind, name, label_names, buckets, nbuckets))
        return NULL;

    struct ab_metric *result = NULL;
    pthread_mutex_lock(&m->lock);
    for (size_t i = 0; i < m->nfamilies; i++) {
        struct ab_metric *f = m->families[i];
        if (strcmp(f->name, name) == 0) {
            if (shape_matches(f, &sh))
                result = f;
            else
                ab_error("metrics: %s is already registered as a %s with other labels or "
                         "buckets",
                         name, kind_names[f->kind]);
            goto out;
        }
        if ((f->kind == KIND_HISTOGRAM && is_histogram_sample_name(name, f->name)) ||
            (kind == KIND_HISTOGRAM && is_histogram_sample_name(f->name, name))) {
            ab_error("metrics: %s collides with the samples of %s", name, f->name);
            goto out;
        }
    }
    if (m->nfamilies == m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 16;
        struct ab_metric **families = realloc(m->families, cap * sizeof(*families));
        if (families == NULL)
            goto nomem;
        m->families = families;
        m->cap = cap;
    }
    result = family_new(m, &sh, name, help);
    if (result == NULL)
        goto nomem;
    m->families[m->nfamilies++] = result;
    goto out;
nomem:
    ab_error("metrics: out of memory registering %s", name);
out:
    pthread_mutex_unlock(&m->lock);
    return result;
}

struct ab_metric *ab_metrics_counter(struct ab_metrics *m, const char *name, const char *help,
                                     const char *const *label_names)
{
    return register_family(m, KIND_COUNTER, name, help, label_names, NULL, 0);
}

struct ab_metric *ab_metrics_gauge(struct ab_metrics *m, const char *name, const char *help,
                                   const char *const *label_names)
{
    return register_family(m, KIND_GAUGE, name, help, label_names, NULL, 0);
}

struct ab_metric *ab_metrics_histogram(struct ab_metrics *m, const char *name, const char *help,
                                       const char *const *label_names, const double *buckets,
                                       size_t nbuckets)
{
    return register_family(m, KIND_HISTOGRAM, name, help, label_names, buckets, nbuckets);
}

struct ab_metric *ab_metrics_gauge_fn(struct ab_metrics *m, const char *name, const char *help,
                                      double (*fn)(void *ud), void *ud)
{
    if (fn == NULL) {
        ab_error("metrics: %s: gauge callback is NULL", name ? name : "(null)");
        return NULL;
    }
    struct ab_metric *f = register_family(m, KIND_GAUGE_FN, name, help, NULL, NULL, 0);
    if (f == NULL)
        return NULL;
    bool bound = false;
    pthread_mutex_lock(&f->lock);
    if (f->fn == NULL || (f->fn == fn && f->ud == ud)) {
        f->fn = fn;
        f->ud = ud;
        bound = true;
    }
    pthread_mutex_unlock(&f->lock);
    if (!bound) {
        ab_error("metrics: %s is already bound to another callback or object", name);
        return NULL;
    }
    return f;
}

void ab_metric_unbind_fn(struct ab_metric *gauge, const void *ud)
{
    if (gauge == NULL)
        return;
    if (gauge->kind != KIND_GAUGE_FN) {
        misuse(gauge, "ab_metric_unbind_fn applies to callback gauges only");
        return;
    }
    /* Render calls fn under this lock, so once we hold it fn is not running. */
    pthread_mutex_lock(&gauge->lock);
    if (gauge->fn != NULL && gauge->ud == ud) {
        gauge->fn = NULL;
        gauge->ud = NULL;
    }
    pthread_mutex_unlock(&gauge->lock);
}

struct ab_metrics *ab_metrics_new(void)
{
    struct ab_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        free(m);
        return NULL;
    }
    atomic_init(&m->dropped, NULL);
    return m;
}

void ab_metrics_free(struct ab_metrics *m)
{
    if (m == NULL)
        return;
    for (size_t i = 0; i < m->nfamilies; i++)
        family_free(m->families[i]);
    free(m->families);
    pthread_mutex_destroy(&m->lock);
    free(m);
}

static pthread_once_t default_once = PTHREAD_ONCE_INIT;
static struct ab_metrics *default_registry;

static void default_init(void)
{
    default_registry = ab_metrics_new();
}

struct ab_metrics *ab_metrics_default(void)
{
    pthread_once(&default_once, default_init);
    return default_registry;
}

/* ---- rendering ---- */

struct strbuf {
    char *data;
    size_t len;
    size_t cap;
    bool failed; /* an allocation failed: the output is incomplete and is thrown away */
};

static void sb_add(struct strbuf *sb, const char *s, size_t n)
{
    if (sb->failed)
        return;
    if (sb->cap - sb->len <= n) { /* room for n bytes and the terminator */
        size_t cap = sb->cap ? sb->cap : 4096;
        while (cap - sb->len <= n)
            cap *= 2;
        char *data = realloc(sb->data, cap);
        if (data == NULL) {
            sb->failed = true;
            return;
        }
        sb->data = data;
        sb->cap = cap;
    }
    memcpy(sb->data + sb->len, s, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

static void sb_puts(struct strbuf *sb, const char *s)
{
    sb_add(sb, s, strlen(s));
}

/* Label values escape backslash, double quote and newline; HELP text the first and last. */
static void sb_escaped(struct strbuf *sb, const char *s, bool is_label_value)
{
    const char *run = s;
    for (; *s != '\0'; s++) {
        const char *esc = NULL;
        if (*s == '\\')
            esc = "\\\\";
        else if (*s == '\n')
            esc = "\\n";
        else if (*s == '"' && is_label_value)
            esc = "\\\"";
        if (esc != NULL) {
            sb_add(sb, run, (size_t)(s - run));
            sb_puts(sb, esc);
            run = s + 1;
        }
    }
    sb_add(sb, run, (size_t)(s - run));
}

/* One line: name[suffix]{label="value",...[,le="le"]} value */
static void sb_sample(struct strbuf *sb, const struct ab_metric *f, const char *suffix,
                      const char *const *values, const char *le, const char *value)
{
    sb_puts(sb, f->name);
    if (suffix != NULL)
        sb_puts(sb, suffix);
    if (f->nlabels > 0 || le != NULL) {
        sb_add(sb, "{", 1);
        for (size_t i = 0; i < f->nlabels; i++) {
            if (i > 0)
                sb_add(sb, ",", 1);
            sb_puts(sb, f->label_names[i]);
            sb_add(sb, "=\"", 2);
            sb_escaped(sb, values[i], true);
            sb_add(sb, "\"", 1);
        }
        if (le != NULL) {
            sb_puts(sb, f->nlabels > 0 ? ",le=\"" : "le=\"");
            sb_puts(sb, le);
            sb_add(sb, "\"", 1);
        }
        sb_add(sb, "}", 1);
    }
    sb_add(sb, " ", 1);
    sb_puts(sb, value);
    sb_add(sb, "\n", 1);
}

/* A series' numbers copied under the family lock, so one series renders consistently
 * (its +Inf bucket always equals its _count). */
struct row {
    const char *const *values;
    double value;
    const uint64_t *counts;
};

static int row_cmp(const void *a, const void *b)
{
    const char *const *va = ((const struct row *)a)->values;
    const char *const *vb = ((const struct row *)b)->values;
    for (; *va != NULL; va++, vb++) {
        int c = strcmp(*va, *vb);
        if (c != 0)
            return c;
    }
    return 0;
}

static void render_histogram_row(struct strbuf *sb, const struct ab_metric *f,
                                 const struct row *r)
{
    char num[40], le[40];
    uint64_t cumulative = 0;
    for (size_t j = 0; j <= f->nbounds; j++) {
        cumulative += r->counts[j];
        if (j < f->nbounds)
            format_number(le, sizeof(le), f->bounds[j]);
        else
            snprintf(le, sizeof(le), "+Inf");
        snprintf(num, sizeof(num), "%" PRIu64, cumulative);
        sb_sample(sb, f, "_bucket", r->values, le, num);
    }
    format_number(num, sizeof(num), r->value);
    sb_sample(sb, f, "_sum", r->values, NULL, num);
    snprintf(num, sizeof(num), "%" PRIu64, cumulative);
    sb_sample(sb, f, "_count", r->values, NULL, num);
}

static void render_family(struct strbuf *sb, struct ab_metric *f)
{
    char num[40];
    if (f->help != NULL) {
        sb_puts(sb, "# HELP ");
        sb_puts(sb, f->name);
        sb_add(sb, " ", 1);
        sb_escaped(sb, f->help, false);
        sb_add(sb, "\n", 1);
    }
    sb_puts(sb, "# TYPE ");
    sb_puts(sb, f->name);
    sb_add(sb, " ", 1);
    sb_puts(sb, kind_names[f->kind]);
    sb_add(sb, "\n", 1);

    if (f->kind == KIND_GAUGE_FN) {
        pthread_mutex_lock(&f->lock);
        bool bound = f->fn != NULL;
        double v = bound ? f->fn(f->ud) : 0;
        pthread_mutex_unlock(&f->lock);
        if (bound) {
            format_number(num, sizeof(num), v);
            sb_sample(sb, f, NULL, NULL, NULL, num);
        }
        return;
    }

    size_t ncounts = f->kind == KIND_HISTOGRAM ? f->nbounds + 1 : 0;
    struct row *rows = NULL;
    uint64_t *counts = NULL;
    pthread_mutex_lock(&f->lock);
    size_t n = f->nseries;
    if (n > 0) {
        rows = calloc(n, sizeof(*rows));
        counts = ncounts > 0 ? calloc(n * ncounts, sizeof(*counts)) : NULL;
    }
    if (n > 0 && (rows == NULL || (ncounts > 0 && counts == NULL))) {
        pthread_mutex_unlock(&f->lock);
        sb->failed = true;
        goto out;
    }
    size_t k = 0;
    for (size_t b = 0; b < f->table_size; b++) {
        for (const struct series *s = f->table[b]; s != NULL; s = s->next) {
            if (s->removed)
                continue;
            rows[k].values = s->values;
            rows[k].value = s->value;
            if (ncounts > 0) {
                memcpy(counts + k * ncounts, s->counts, ncounts * sizeof(*counts));
                rows[k].counts = counts + k * ncounts;
            }
            k++;
        }
    }
    pthread_mutex_unlock(&f->lock);
    n = k;

    if (n > 1)
        qsort(rows, n, sizeof(*rows), row_cmp);
    for (size_t i = 0; i < n; i++) {
        if (f->kind == KIND_HISTOGRAM) {
            render_histogram_row(sb, f, &rows[i]);
        } else {
            format_number(num, sizeof(num), rows[i].value);
            sb_sample(sb, f, NULL, rows[i].values, NULL, num);
        }
    }
out:
    free(rows);
    free(counts);
}

char *ab_metrics_render(struct ab_metrics *m, size_t *len)
{
    if (len != NULL)
        *len = 0;
    if (m == NULL)
        return NULL;

    /* Copy the list so registration (possibly from a gauge callback) is not blocked while
     * we format; the families themselves outlive this call. */
    pthread_mutex_lock(&m->lock);
    size_t n = m->nfamilies;
    struct ab_metric **families = malloc((n > 0 ? n : 1) * sizeof(*families));
    if (families != NULL && n > 0)
        memcpy(families, m->families, n * sizeof(*families));
    pthread_mutex_unlock(&m->lock);
    if (families == NULL)
        return NULL;

    struct strbuf sb = { 0 };
    sb_add(&sb, "", 0); /* an empty registry still renders as "" */
    for (size_t i = 0; i < n; i++)
        render_family(&sb, families[i]);
    free(families);
    if (sb.failed) {
        free(sb.data);
        return NULL;
    }
    if (len != NULL)
        *len = sb.len;
    return sb.data;
}
