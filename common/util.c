/* Random ids, clocks and timestamps shared by every module. */
#include "common/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

void ab_random_bytes(void *buf, size_t n)
{
    unsigned char *p = buf;
    while (n > 0) {
        ssize_t got = getrandom(p, n, 0);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            perror("getrandom");
            abort();
        }
        p += got;
        n -= (size_t)got;
    }
}

void ab_uuid_v4(char out[AB_UUID_LEN + 1])
{
    unsigned char b[16];
    ab_random_bytes(b, sizeof(b));
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* RFC 4122 variant */
    snprintf(out, AB_UUID_LEN + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
}

bool ab_uuid_valid(const char *text)
{
    if (text == NULL || strlen(text) != AB_UUID_LEN)
        return false;
    for (int i = 0; i < AB_UUID_LEN; i++) {
        bool dash = i == 8 || i == 13 || i == 18 || i == 23;
        char c = text[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
        if (dash ? c != '-' : !hex)
            return false;
    }
    return true;
}

static int64_t clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t ab_monotonic_ms(void)
{
    return clock_ms(CLOCK_MONOTONIC);
}

int64_t ab_wall_ms(void)
{
    return clock_ms(CLOCK_REALTIME);
}

void ab_time_rfc3339(int64_t wall_ms, char out[32])
{
    /* Floor division: before 1970, -1 ms is 23:59:59.999 of the day before. */
    int64_t ms = ((wall_ms % 1000) + 1000) % 1000;
    time_t secs = (time_t)((wall_ms - ms) / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, 32 - n, ".%03dZ", (int)ms);
}

static bool digits(const char *s, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *value = v;
    return true;
}

bool ab_time_parse_rfc3339(const char *text, int64_t *wall_ms)
{
    int year, mon, day, hour, min, sec, frac_ms = 0;
    const char *p = text;
    if (strlen(p) < 20 || !digits(p, 4, &year) || p[4] != '-' || !digits(p + 5, 2, &mon) ||
        p[7] != '-' || !digits(p + 8, 2, &day) || (p[10] != 'T' && p[10] != 't') ||
        !digits(p + 11, 2, &hour) || p[13] != ':' || !digits(p + 14, 2, &min) || p[16] != ':' ||
        !digits(p + 17, 2, &sec))
        return false;
    /* timegm would quietly turn February 30 into March 2. */
    static const int month_days[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    if (mon < 1 || mon > 12 || day < 1 || day > month_days[mon - 1] ||
        (mon == 2 && day == 29 && !leap) || hour > 23 || min > 59 || sec > 60)
        return false;
    p += 19;
    if (*p == '.') {
        int scale = 100, n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++) {
            frac_ms += (*p - '0') * scale;
            scale /= 10;
        }
        if (n == 0)
            return false;
    }
    int offset_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        offset_min = (oh * 60 + om) * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    struct tm tm = { .tm_year = year - 1900, .tm_mon = mon - 1, .tm_mday = day,
                     .tm_hour = hour, .tm_min = min, .tm_sec = sec };
    time_t secs = timegm(&tm);
    *wall_ms = ((int64_t)secs - (int64_t)offset_min * 60) * 1000 + frac_ms;
    return true;
}

void ab_hex(const void *bytes, size_t n, char *out)
{
    static const char digits_hex[] = "0123456789abcdef";
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits_hex[b[i] >> 4];
        out[2 * i + 1] = digits_hex[b[i] & 0xf];
    }
    out[2 * n] = '\0';
}

json_t *ab_json_text_or_hex(const void *bytes, size_t len)
{
    if (bytes == NULL)
        return json_null();
    json_t *j = json_stringn(bytes, len);
    if (j)
        return j;
    char *hex = ab_xmalloc(2 * len + 5);
    memcpy(hex, "hex:", 4);
    ab_hex(bytes, len, hex + 4);
    j = json_string(hex);
    free(hex);
    return j;
}

double ab_random_unit(void)
{
    uint64_t r;
    ab_random_bytes(&r, sizeof(r));
    return (double)(r >> 11) / 9007199254740992.0; /* 53 random bits */
}

static void out_of_memory(size_t size)
{
    fprintf(stderr, "agentbus: out of memory (allocating %zu bytes)\n", size);
    abort();
}

size_t ab_utf8_sequence(const void *bytes, size_t n, bool *cut)
{
    const unsigned char *s = bytes;
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF; /* the second byte's range (RFC 3629's table) */
    *cut = false;
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        len = 2;
    else if (c >= 0xE0 && c <= 0xEF)
        len = 3;
    else if (c >= 0xF0 && c <= 0xF4)
        len = 4;
    else
        return 0;
    if (c == 0xE0)
        lo = 0xA0; /* no overlong forms */
    else if (c == 0xED)
        hi = 0x9F; /* no surrogates */
    else if (c == 0xF0)
        lo = 0x90;
    else if (c == 0xF4)
        hi = 0x8F; /* nothing beyond U+10FFFF */
    for (size_t i = 1; i < len; i++) {
        if (i >= n) {
            *cut = true;
            return 0;
        }
        if (s[i] < (i == 1 ? lo : 0x80) || s[i] > (i == 1 ? hi : 0xBF))
            return 0;
    }
    return len;
}

bool ab_utf8_sanitize(char *s)
{
    bool valid = true;
    unsigned char *p = (unsigned char *)s, *end = p + strlen(s);
    while (p < end) {
        bool cut;
        size_t len = ab_utf8_sequence(p, (size_t)(end - p), &cut);
        if (len > 0) {
            p += len;
            continue;
        }
        valid = false;
        if (cut) {
            *p = '\0'; /* a character the end cut short: drop it */
            break;
        }
        *p++ = '?';
    }
    return valid;
}

size_t ab_redact(char *s, const char *secret)
{
    size_t n = 0, len = secret ? strlen(secret) : 0;
    if (len < 4)
        return 0;
    for (char *hit = strstr(s, secret); hit != NULL; hit = strstr(hit + 3, secret)) {
        memmove(hit + 3, hit + len, strlen(hit + len) + 1); /* "***" is never longer */
        memcpy(hit, "***", 3);
        n++;
    }
    size_t s_len = strlen(s);
    for (size_t k = len - 1; k >= 4; k--) { /* the longest start of secret that ends s */
        if (k <= s_len && memcmp(s + s_len - k, secret, k) == 0) {
            memcpy(s + s_len - k, "***", 4);
            n++;
            break;
        }
    }
    return n;
}

void *ab_xmalloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        out_of_memory(size);
    return p;
}

void *ab_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        out_of_memory(count * size);
    return p;
}

void *ab_xrealloc(void *p, size_t size)
{
    void *grown = realloc(p, size ? size : 1);
    if (grown == NULL)
        out_of_memory(size);
    return grown;
}

char *ab_xstrdup(const char *s)
{
    if (s == NULL)
        return NULL;
    char *copy = strdup(s);
    if (copy == NULL)
        out_of_memory(strlen(s) + 1);
    return copy;
}

uint64_t ab_fnv1a(uint64_t h, const void *data, size_t len)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}
