/* Small helpers every module needs: random ids, clocks, timestamps, hex. */
#ifndef AB_UTIL_H
#define AB_UTIL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AB_UUID_LEN 36 /* without the NUL */

/* Fills buf with n bytes from the kernel's CSPRNG (getrandom). Aborts if it cannot: ids
 * and tokens must never fall back to a weak source. */
void ab_random_bytes(void *buf, size_t n);

/* A random (version 4) UUID in lower-case text form, NUL-terminated. */
void ab_uuid_v4(char out[AB_UUID_LEN + 1]);

/* True when text is a UUID in its 36-character text form (any case, any version). */
bool ab_uuid_valid(const char *text);

/* Milliseconds on the monotonic clock (for deadlines and latencies). */
int64_t ab_monotonic_ms(void);
/* Milliseconds since the Unix epoch. */
int64_t ab_wall_ms(void);

/* RFC 3339 UTC time with milliseconds: "2026-11-21T08:58:45.123Z". */
void ab_time_rfc3339(int64_t wall_ms, char out[32]);
/* Parses an RFC 3339 timestamp (any offset, optional fraction). @returns false if invalid. */
bool ab_time_parse_rfc3339(const char *text, int64_t *wall_ms);

/* Makes the NUL-terminated s valid UTF-8 in place: a sequence cut at the end (snprintf into
 * a fixed buffer cuts by bytes) is dropped, every other byte that does not belong to a valid
 * sequence (overlong forms, surrogates, beyond U+10FFFF) becomes '?'. For text assembled
 * from several sources that goes on into JSON (jansson refuses invalid UTF-8) or
 * PostgreSQL (which refuses it too). @returns true when s was valid already. */
bool ab_utf8_sanitize(char *s);

/* The length (1 to 4) of the well-formed UTF-8 sequence (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF) that starts the n > 0 bytes at s, or 0 when there is
 * none; *cut is set when a valid start is cut short by the end of the n bytes. */
size_t ab_utf8_sequence(const void *s, size_t n, bool *cut);

/* Replaces, in place, every occurrence of secret in s with "***", and a start of it (4
 * bytes or more) that ends s, as a cut text leaves it (a secret shorter than 4 bytes is
 * left alone: it would match everywhere). For text from elsewhere (an upstream's error
 * message that quotes the key it was sent) on its way to logs or events.
 * @returns the number of places replaced. */
size_t ab_redact(char *s, const char *secret);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void ab_hex(const void *bytes, size_t n, char *out);

/* Bytes of unknown shape (a Kafka key or value) as a JSON string: the text when it is
 * valid UTF-8, else "hex:" and its hex; JSON null for NULL bytes. @ownership new reference. */
json_t *ab_json_text_or_hex(const void *bytes, size_t len);

/* Allocation that cannot fail: out of memory aborts (the redis policy, STYLE.md), the
 * orchestrator restarts the process, and at-least-once delivery redoes the work. */
void *ab_xmalloc(size_t size);
void *ab_xcalloc(size_t count, size_t size);
void *ab_xrealloc(void *p, size_t size);
char *ab_xstrdup(const char *s); /* NULL gives NULL */

/* A random double in [0, 1) for backoff jitter; thread-safe. */
double ab_random_unit(void);

/* FNV-1a: a fast hash for in-memory tables (not for anything an attacker must not
 * collide). Chain calls by passing the last result as h; start with AB_FNV1A_INIT. */
#define AB_FNV1A_INIT 14695981039346656037ULL
uint64_t ab_fnv1a(uint64_t h, const void *data, size_t len);

#endif
