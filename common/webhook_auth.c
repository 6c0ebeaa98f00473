/* Authentication of incoming webhooks: signature schemes, shared secrets, the address
 * allowlist and the failed-attempt limiter. The HMACs and base64 are common/crypto's, the
 * CIDR parsing is common/netguard's. */
#include "common/webhook_auth.h"

#include <limits.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/netguard.h"
#include "common/util.h"

/* ---- GitHub ---------------------------------------------------------------------------- */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool ab_github_signature_valid(const char *secret, const void *body, size_t len, const char *header)
{
    static const char prefix[] = "sha256=";
    if (secret == NULL || secret[0] == '\0' || header == NULL || (body == NULL && len > 0))
        return false;
    if (strncmp(header, prefix, sizeof(prefix) - 1) != 0)
        return false;
    const char *hex = header + sizeof(prefix) - 1;
    unsigned char given[32];
    for (size_t i = 0; i < sizeof(given); i++) {
        int hi = hex_value(hex[2 * i]);
        if (hi < 0) /* a NUL stops here, before the next character is read */
            return false;
        int lo = hex_value(hex[2 * i + 1]);
        if (lo < 0)
            return false;
        given[i] = (unsigned char)(hi << 4 | lo);
    }
    if (hex[2 * sizeof(given)] != '\0')
        return false;
    unsigned char mac[32];
    ab_hmac_sha256(secret, strlen(secret), body, len, mac);
    return CRYPTO_memcmp(mac, given, sizeof(mac)) == 0;
}

/* ---- Standard Webhooks ------------------------------------------------------------------ */

/* 1-19 decimal digits that fit a long long into *out. */
static bool parse_timestamp(const char *text, long long *out)
{
    size_t n = strlen(text);
    if (n == 0 || n > 19 || strspn(text, "0123456789") != n)
        return false;
    long long v = 0;
    for (const char *p = text; *p != '\0'; p++) {
        int d = *p - '0';
        if (v > (LLONG_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static bool is_empty(const char *s)
{
    return s == NULL || s[0] == '\0';
}

/* Whether one signature list entry (not NUL-terminated) is "v1," + the base64 of mac. */
static bool entry_matches(const char *entry, size_t len, const unsigned char mac[32])
{
    /* 44 digits with padding, 43 without: anything longer is not 32 bytes anyway. */
    char b64[48];
    if (len < 3 || memcmp(entry, "v1,", 3) != 0 || len - 3 >= sizeof(b64))
        return false;
    memcpy(b64, entry + 3, len - 3);
    b64[len - 3] = '\0';
    size_t sig_len = 0;
    unsigned char *sig = ab_base64_decode(b64, &sig_len);
    bool match = sig != NULL && sig_len == 32 && CRYPTO_memcmp(sig, mac, 32) == 0;
    free(sig);
    return match;
}

enum ab_sig_result ab_standard_webhook_verify(const char *secret, const char *msg_id,
                                              const char *timestamp, const char *signature_header,
                                              const void *body, size_t len, long long now_s,
                                              long long tolerance_s)
{
    if (is_empty(msg_id) || is_empty(timestamp) || is_empty(signature_header))
        return AB_SIG_MISSING;
    long long ts = 0;
    if (!parse_timestamp(timestamp, &ts) || strchr(msg_id, '.') != NULL)
        return AB_SIG_MALFORMED;

    /* |now - ts| in unsigned arithmetic: ts >= 0, so the true difference always fits. */
    unsigned long long skew = now_s >= ts ? (unsigned long long)now_s - (unsigned long long)ts
                                          : (unsigned long long)ts - (unsigned long long)now_s;
    if (skew > (unsigned long long)(tolerance_s > 0 ? tolerance_s : 0))
        return AB_SIG_STALE;

    /* The expected signature, signed as the reference libraries sign it: over the timestamp
     * as a number ("0123" is signed as "123"), so their verification and ours agree. */
    char expected[AB_WEBHOOK_SIGNATURE_MAX];
    if (ab_webhook_sign(secret, msg_id, ts, body, len, expected, sizeof(expected)) != AB_OK)
        return AB_SIG_MISMATCH; /* unusable secret, or body NULL with len > 0 */
    size_t mac_len = 0;
    unsigned char *mac = ab_base64_decode(expected + 3, &mac_len);
    if (mac == NULL || mac_len != 32) { /* cannot happen: we encoded it */
        free(mac);
        return AB_SIG_MISMATCH;
    }

    bool match = false;
    for (const char *p = signature_header; *p != '\0' && !match;) {
        while (*p == ' ')
            p++;
        const char *entry = p;
        while (*p != '\0' && *p != ' ')
            p++;
        if (p > entry)
            match = entry_matches(entry, (size_t)(p - entry), mac);
    }
    free(mac);
    return match ? AB_SIG_OK : AB_SIG_MISMATCH;
}

const char *ab_sig_result_message(enum ab_sig_result r)
{
    switch (r) {
    case AB_SIG_OK:
        return "webhook signature is valid";
    case AB_SIG_MISSING:
        return "missing webhook-id, webhook-timestamp or webhook-signature header";
    case AB_SIG_MALFORMED:
        return "malformed webhook-timestamp or webhook-id header";
    case AB_SIG_STALE:
        return "webhook-timestamp is too far from the current time";
    case AB_SIG_MISMATCH:
        return "webhook signature does not match";
    }
    return "webhook signature check failed";
}

bool ab_shared_secret_valid(const char *expected, const char *given)
{
    /* Emptiness is not secret; everything after it is hashed, so neither length leaks. */
    if (is_empty(expected) || is_empty(given))
        return false;
    return ab_secret_equal(expected, given);
}

/* ---- Address allowlist ------------------------------------------------------------------ */

struct ab_cidr_list {
    size_t count;
    struct ab_net nets[];
};

static void set_error(char *errstr, size_t errstr_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *errstr, size_t errstr_size, const char *fmt, ...)
{
    if (errstr == NULL || errstr_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errstr, errstr_size, fmt, ap);
    va_end(ap);
    ab_utf8_sanitize(errstr); /* an entry cut inside a character would break a JSON body */
}

enum ab_err ab_cidr_list_new(const json_t *array, struct ab_cidr_list **out, char *errstr,
                             size_t errstr_size)
{
    if (out == NULL) {
        set_error(errstr, errstr_size, "allowlist: no place for the list (out is NULL)");
        return AB_ERR_CONFIG;
    }
    *out = NULL;
    if (array == NULL || json_is_null(array))
        return AB_OK;
    if (!json_is_array(array)) {
        set_error(errstr, errstr_size, "allowlist: not an array of addresses or CIDRs");
        return AB_ERR_CONFIG;
    }
    size_t count = json_array_size(array);
    if (count == 0)
        return AB_OK;

    struct ab_cidr_list *l = ab_xcalloc(1, sizeof(*l) + count * sizeof(l->nets[0]));
    for (size_t i = 0; i < count; i++) {
        const json_t *entry = json_array_get(array, i);
        if (!json_is_string(entry)) {
            set_error(errstr, errstr_size, "allowlist[%zu]: not a string", i);
            ab_cidr_list_free(l);
            return AB_ERR_CONFIG;
        }
        const char *text = json_string_value(entry);
        size_t len = json_string_length(entry);
        /* A NUL inside would cut the text short: "10.0.0.1\u0000junk" is not 10.0.0.1. */
        const char *why =
            strlen(text) != len ? "contains a NUL character" : ab_net_parse(text, &l->nets[i]);
        if (why != NULL) {
            /* An entry can be any length; 64 bytes of it are enough to find it. */
            set_error(errstr, errstr_size, "allowlist[%zu] \"%.64s%s\": %s", i, text,
                      strlen(text) > 64 ? "..." : "", why);
            ab_cidr_list_free(l);
            return AB_ERR_CONFIG;
        }
        l->count++;
    }
    *out = l;
    return AB_OK;
}

void ab_cidr_list_free(struct ab_cidr_list *l)
{
    free(l);
}

static bool list_has(const struct ab_cidr_list *l, int family, const unsigned char *addr)
{
    for (size_t i = 0; i < l->count; i++)
        if (ab_net_contains(&l->nets[i], family, addr))
            return true;
    return false;
}

/* family is 0 for an address that could not be read. */
static bool contains_address(const struct ab_cidr_list *l, int family, const unsigned char *addr)
{
    static const unsigned char mapped_prefix[12] = {[10] = 0xff, [11] = 0xff};
    if (l == NULL)
        return true;
    if (family == 0)
        return false;
    if (list_has(l, family, addr))
        return true;
    return family == AF_INET6 && memcmp(addr, mapped_prefix, sizeof(mapped_prefix)) == 0 &&
           list_has(l, AF_INET, addr + sizeof(mapped_prefix));
}

bool ab_cidr_list_contains(const struct ab_cidr_list *l, const struct sockaddr *addr, socklen_t len)
{
    unsigned char bytes[16];
    int family = l != NULL ? ab_sockaddr_address(addr, len, bytes) : 0;
    return contains_address(l, family, bytes);
}

bool ab_cidr_list_contains_text(const struct ab_cidr_list *l, const char *address)
{
    unsigned char bytes[16];
    int family = l != NULL ? ab_address_parse(address, bytes) : 0;
    return contains_address(l, family, bytes);
}

/* ---- Failed-attempt limiter ------------------------------------------------------------- */

#define KEY_MAX     64 /* a key's first 63 bytes and a NUL */
#define NO_SOURCE   UINT32_MAX
#define MAX_SOURCES ((size_t)1 << 20)

/* One tracked source. Sources are handed out in order until max_sources are in use; after
 * that a new one takes the place of the oldest (see ab_auth_limiter_fail). */
struct source {
    char key[KEY_MAX];
    uint64_t hash;
    int64_t start_ms;      /* the first failure of the current window */
    int failures;          /* in the current window, at most max_failures */
    uint32_t older, newer; /* the list of sources by start_ms, or NO_SOURCE at its ends */
};

/* Everything below the lock is guarded by it. The index is open addressing with linear
 * probing over at least twice as many slots as sources (so probes stay short and an empty
 * slot always exists); a slot holds a source's number + 1, or 0 when empty. */
struct ab_auth_limiter {
    pthread_mutex_t lock;
    int max_failures;
    int64_t window_ms;
    uint64_t seed; /* random per limiter: precomputed FNV collisions do not carry over */
    uint32_t capacity, used;
    uint32_t oldest, newest;
    uint32_t mask; /* the number of slots - 1 */
    uint32_t *slots;
    struct source *sources;
};

struct ab_auth_limiter *ab_auth_limiter_new(int max_failures, int64_t window_ms, size_t max_sources)
{
    if (max_failures < 1 || window_ms < 1 || max_sources < 1 || max_sources > MAX_SOURCES)
        return NULL;
    struct ab_auth_limiter *l = ab_xcalloc(1, sizeof(*l));
    size_t slots = 2;
    while (slots < 2 * max_sources)
        slots *= 2;
    pthread_mutex_init(&l->lock, NULL);
    l->max_failures = max_failures;
    l->window_ms = window_ms;
    ab_random_bytes(&l->seed, sizeof(l->seed));
    l->capacity = (uint32_t)max_sources;
    l->oldest = l->newest = NO_SOURCE;
    l->mask = (uint32_t)(slots - 1);
    l->slots = ab_xcalloc(slots, sizeof(l->slots[0]));
    l->sources = ab_xcalloc(max_sources, sizeof(l->sources[0]));
    return l;
}

void ab_auth_limiter_free(struct ab_auth_limiter *l)
{
    if (l == NULL)
        return;
    pthread_mutex_destroy(&l->lock);
    free(l->slots);
    free(l->sources);
    free(l);
}

/* A key as stored (its first KEY_MAX - 1 bytes) and its hash; computed before locking. */
struct limiter_key {
    char text[KEY_MAX];
    uint64_t hash;
};

static void make_key(const struct ab_auth_limiter *l, const char *key, struct limiter_key *k)
{
    size_t len = strnlen(key, KEY_MAX - 1);
    memcpy(k->text, key, len);
    k->text[len] = '\0';
    uint64_t h = ab_fnv1a(AB_FNV1A_INIT ^ l->seed, k->text, len);
    k->hash = h ^ (h >> 32); /* the low bits pick the slot: give them the high bits too */
}

/* The slot holding k, or the empty slot where it would go. */
static uint32_t find_slot(const struct ab_auth_limiter *l, const struct limiter_key *k)
{
    uint32_t i = (uint32_t)k->hash & l->mask;
    while (l->slots[i] != 0) {
        const struct source *s = &l->sources[l->slots[i] - 1];
        if (s->hash == k->hash && strcmp(s->key, k->text) == 0)
            return i;
        i = (i + 1) & l->mask;
    }
    return i;
}

/* Removes source n from the index, shifting back the entries after it that probed past
 * it, so no tombstones are needed and every lookup still finds its key. */
static void unindex(struct ab_auth_limiter *l, uint32_t n)
{
    uint32_t i = (uint32_t)l->sources[n].hash & l->mask;
    while (l->slots[i] != n + 1)
        i = (i + 1) & l->mask;
    for (uint32_t j = i;;) {
        j = (j + 1) & l->mask;
        if (l->slots[j] == 0)
            break;
        uint32_t home = (uint32_t)l->sources[l->slots[j] - 1].hash & l->mask;
        /* The entry at j stays if its home is cyclically in (i, j]: moving it to i would put
         * it before its home, where lookups do not look. */
        bool stays = i <= j ? (i < home && home <= j) : (i < home || home <= j);
        if (stays)
            continue;
        l->slots[i] = l->slots[j];
        i = j;
    }
    l->slots[i] = 0;
}

static void unlink_source(struct ab_auth_limiter *l, uint32_t n)
{
    struct source *s = &l->sources[n];
    if (s->older != NO_SOURCE)
        l->sources[s->older].newer = s->newer;
    else
        l->oldest = s->newer;
    if (s->newer != NO_SOURCE)
        l->sources[s->newer].older = s->older;
    else
        l->newest = s->older;
    s->older = s->newer = NO_SOURCE;
}

static void append_newest(struct ab_auth_limiter *l, uint32_t n)
{
    struct source *s = &l->sources[n];
    s->older = l->newest;
    s->newer = NO_SOURCE;
    if (l->newest != NO_SOURCE)
        l->sources[l->newest].newer = n;
    else
        l->oldest = n;
    l->newest = n;
}

/* How long the window of s still runs at now_ms; 0 when it has ended. A clock that went
 * back (now before the window's start) counts as the start. */
static int64_t window_left(const struct ab_auth_limiter *l, const struct source *s, int64_t now_ms)
{
    if (now_ms <= s->start_ms)
        return l->window_ms;
    uint64_t elapsed = (uint64_t)now_ms - (uint64_t)s->start_ms; /* exact: now > start */
    return elapsed >= (uint64_t)l->window_ms ? 0 : l->window_ms - (int64_t)elapsed;
}

bool ab_auth_limiter_blocked(struct ab_auth_limiter *l, const char *key, int64_t now_ms,
                             int64_t *retry_after_ms)
{
    if (retry_after_ms != NULL)
        *retry_after_ms = 0;
    if (l == NULL || key == NULL)
        return false;
    struct limiter_key k;
    make_key(l, key, &k);
    bool blocked = false;
    pthread_mutex_lock(&l->lock);
    uint32_t slot = find_slot(l, &k);
    if (l->slots[slot] != 0) {
        const struct source *s = &l->sources[l->slots[slot] - 1];
        int64_t left = window_left(l, s, now_ms);
        blocked = left > 0 && s->failures >= l->max_failures;
        if (blocked && retry_after_ms != NULL)
            *retry_after_ms = left;
    }
    pthread_mutex_unlock(&l->lock);
    return blocked;
}

void ab_auth_limiter_fail(struct ab_auth_limiter *l, const char *key, int64_t now_ms)
{
    if (l == NULL || key == NULL)
        return;
    struct limiter_key k;
    make_key(l, key, &k);
    pthread_mutex_lock(&l->lock);
    uint32_t slot = find_slot(l, &k);
    if (l->slots[slot] != 0) {
        uint32_t n = l->slots[slot] - 1;
        struct source *s = &l->sources[n];
        if (window_left(l, s, now_ms) == 0) { /* a new window, and the newest start */
            s->start_ms = now_ms;
            s->failures = 1;
            unlink_source(l, n);
            append_newest(l, n);
        } else if (s->failures < l->max_failures) {
            s->failures++;
        }
    } else {
        uint32_t n;
        if (l->used < l->capacity) {
            n = l->used++;
        } else {
            /* Full: the oldest window goes, expired if any is. Removing it may shift the
             * slots after it, so the free slot is looked up again. */
            n = l->oldest;
            unlink_source(l, n);
            unindex(l, n);
            slot = find_slot(l, &k);
        }
        struct source *s = &l->sources[n];
        memcpy(s->key, k.text, sizeof(s->key));
        s->hash = k.hash;
        s->start_ms = now_ms;
        s->failures = 1;
        l->slots[slot] = n + 1;
        append_newest(l, n);
    }
    pthread_mutex_unlock(&l->lock);
}
