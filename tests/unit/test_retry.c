/* Tests for common/retry: exponential backoff with equal jitter, explicit schedules (the
 * notifier's Svix default), the capped Retry-After floor, and the Retry-After parser in
 * each RFC 9110 form, with overflow and garbage. */
#include "test.h"

#include "common/retry.h"

#include <limits.h>
#include <math.h>
#include <stdint.h>

#define SEC 1000LL
#define MIN (60 * SEC)
#define HOUR (60 * MIN)

/* 1994-11-06T08:49:37Z, the date of RFC 9110's examples, and 2026-01-01T00:00:00Z. */
#define RFC_DATE_MS (784111777LL * 1000)
#define Y2026_MS (1767225600LL * 1000)

static struct ab_retry_policy exponential(void)
{
    return (struct ab_retry_policy){ .kind = AB_RETRY_EXPONENTIAL,
                                     .base_ms = 1000,
                                     .factor = 2.0,
                                     .max_ms = 30 * SEC,
                                     .max_attempts = 5,
                                     .retry_after_cap_ms = 60 * SEC };
}

/* Delay after `attempt` with random number u, or -1 when no attempt is left. */
static long long next(const struct ab_retry_policy *p, int attempt, int64_t retry_after, double u)
{
    int64_t d = -12345;
    if (!ab_retry_next(p, attempt, retry_after, u, &d))
        return d == -12345 ? -1 : -2; /* -2: false but *delay_ms was written */
    return d;
}

TEST(retry_notify_default_is_the_svix_schedule)
{
    struct ab_retry_policy p;
    ab_retry_policy_notify_default(&p);
    CHECK_INT_EQ(ab_retry_policy_check(&p, NULL, 0), AB_OK);
    static const long long want[] = { 5 * SEC,  5 * MIN,   30 * MIN, 2 * HOUR,
                                      5 * HOUR, 10 * HOUR, 10 * HOUR };
    REQUIRE(p.schedule_len == sizeof(want) / sizeof(want[0]));
    for (int i = 0; i < 7; i++) {
        /* u = 0.5 is the middle of the jitter range: the schedule as written. */
        CHECK_INT_EQ(next(&p, i + 1, -1, 0.5), want[i]);
        /* 10 % jitter either way, at the two ends of the random range. */
        CHECK_INT_EQ(next(&p, i + 1, -1, 0.0), want[i] * 9 / 10);
        CHECK_INT_EQ(next(&p, i + 1, -1, 1.0), want[i] * 11 / 10);
    }
    /* 8 attempts in all: after the 8th fails, none is left. */
    CHECK_INT_EQ(next(&p, 8, -1, 0.5), -1);
    CHECK_INT_EQ(next(&p, 1000, -1, 0.5), -1);
    CHECK_INT_EQ(next(&p, INT_MAX, -1, 0.5), -1);
}

TEST(retry_schedule_custom_and_bounds)
{
    static const int64_t sched[] = { 0, 100, 2500 };
    struct ab_retry_policy p = { .kind = AB_RETRY_SCHEDULE,
                                 .schedule_ms = sched,
                                 .schedule_len = 3,
                                 .jitter = 0.0 };
    CHECK_INT_EQ(next(&p, 1, -1, 0.99), 0);
    CHECK_INT_EQ(next(&p, 2, -1, 0.0), 100);
    CHECK_INT_EQ(next(&p, 3, -1, 1.0), 2500);
    CHECK_INT_EQ(next(&p, 4, -1, 0.5), -1);
    /* Attempts are 1-based: 0 and negatives have nothing to follow. */
    CHECK_INT_EQ(next(&p, 0, -1, 0.5), -1);
    CHECK_INT_EQ(next(&p, -3, -1, 0.5), -1);

    /* Full jitter fraction: [0, 2d]. */
    p.jitter = 1.0;
    CHECK_INT_EQ(next(&p, 3, -1, 0.0), 0);
    CHECK_INT_EQ(next(&p, 3, -1, 1.0), 5000);

    /* An empty schedule never retries. */
    p.schedule_len = 0;
    CHECK_INT_EQ(next(&p, 1, -1, 0.5), -1);

    /* A schedule entry past the clamp stays within it, even doubled by jitter. */
    static const int64_t huge[] = { INT64_MAX };
    p.schedule_ms = huge;
    p.schedule_len = 1;
    CHECK_INT_EQ(next(&p, 1, -1, 1.0), AB_RETRY_DELAY_MAX_MS);
}

TEST(retry_exponential_equal_jitter)
{
    struct ab_retry_policy p = exponential();
    CHECK_INT_EQ(ab_retry_policy_check(&p, NULL, 0), AB_OK);
    /* Nominal 1, 2, 4, 8 s; equal jitter draws in [d/2, d]. */
    static const long long nominal[] = { 1000, 2000, 4000, 8000 };
    for (int i = 0; i < 4; i++) {
        CHECK_INT_EQ(next(&p, i + 1, -1, 0.0), nominal[i] / 2);
        CHECK_INT_EQ(next(&p, i + 1, -1, 1.0), nominal[i]);
        CHECK_INT_EQ(next(&p, i + 1, -1, 0.5), nominal[i] * 3 / 4);
    }
    /* max_attempts = 5: after the 5th failure, stop. */
    CHECK_INT_EQ(next(&p, 5, -1, 0.5), -1);

    /* Random numbers outside [0, 1] (and NaN) are clamped, never widen the range. */
    CHECK_INT_EQ(next(&p, 1, -1, -5.0), 500);
    CHECK_INT_EQ(next(&p, 1, -1, 7.0), 1000);
    CHECK_INT_EQ(next(&p, 1, -1, NAN), 500);

    /* max_attempts = 1: never retry. */
    p.max_attempts = 1;
    CHECK_INT_EQ(next(&p, 1, -1, 0.5), -1);
}

TEST(retry_exponential_max_and_overflow)
{
    struct ab_retry_policy p = exponential();
    p.max_ms = 5000;
    CHECK_INT_EQ(next(&p, 3, -1, 1.0), 4000);
    CHECK_INT_EQ(next(&p, 4, -1, 1.0), 5000); /* 8 s capped at 5 s */
    CHECK_INT_EQ(next(&p, 4, -1, 0.0), 2500);

    /* A huge attempt number: factor^n is inf in double, capped before any conversion. */
    p.max_attempts = INT_MAX;
    CHECK_INT_EQ(next(&p, INT_MAX - 1, -1, 1.0), 5000);
    p.factor = 1e300;
    p.max_ms = INT64_MAX;
    CHECK_INT_EQ(next(&p, 100, -1, 1.0), AB_RETRY_DELAY_MAX_MS);

    /* factor 1: constant delay; base 0: retry at once. */
    p = exponential();
    p.factor = 1.0;
    CHECK_INT_EQ(next(&p, 4, -1, 1.0), 1000);
    p.base_ms = 0;
    CHECK_INT_EQ(next(&p, 4, -1, 1.0), 0);
}

TEST(retry_after_is_a_capped_floor)
{
    struct ab_retry_policy p = exponential(); /* attempt 1 at u = 1: 1000 ms */
    CHECK_INT_EQ(next(&p, 1, -1, 1.0), 1000);
    CHECK_INT_EQ(next(&p, 1, 0, 1.0), 1000);
    /* Longer than the backoff: wait what the server asked, unjittered. */
    CHECK_INT_EQ(next(&p, 1, 20 * SEC, 0.0), 20 * SEC);
    CHECK_INT_EQ(next(&p, 1, 20 * SEC, 1.0), 20 * SEC);
    /* Shorter than the backoff: the backoff stands. */
    CHECK_INT_EQ(next(&p, 1, 300, 1.0), 1000);
    /* Beyond the cap (60 s): the cap. */
    CHECK_INT_EQ(next(&p, 1, 2 * HOUR, 1.0), 60 * SEC);
    CHECK_INT_EQ(next(&p, 1, INT64_MAX, 1.0), 60 * SEC);
    /* Retry-After never grants an attempt the policy does not have. */
    CHECK_INT_EQ(next(&p, 5, 20 * SEC, 1.0), -1);
    /* Cap 0: Retry-After ignored. */
    p.retry_after_cap_ms = 0;
    CHECK_INT_EQ(next(&p, 1, 20 * SEC, 1.0), 1000);

    /* The same on a schedule: the notifier's cap is 1 hour. */
    ab_retry_policy_notify_default(&p);
    CHECK_INT_EQ(next(&p, 1, 90 * SEC, 0.5), 90 * SEC);     /* 5 s -> 90 s */
    CHECK_INT_EQ(next(&p, 1, 10 * HOUR, 0.5), 1 * HOUR);    /* capped */
    CHECK_INT_EQ(next(&p, 5, 10 * SEC, 0.5), 5 * HOUR);     /* schedule longer */
}

TEST(retry_policy_check_rejects_bad_fields)
{
    char err[128];
    struct ab_retry_policy p = exponential();
    p.factor = 0.5;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "factor");
    CHECK_INT_EQ(next(&p, 1, -1, 0.5), -1); /* an invalid policy never retries */
    p.factor = NAN;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    p.factor = INFINITY;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    p = exponential();
    p.max_ms = 10;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "max_ms");
    p = exponential();
    p.base_ms = -1;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    p = exponential();
    p.max_attempts = 0;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    p = exponential();
    p.retry_after_cap_ms = -1;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);

    ab_retry_policy_notify_default(&p);
    p.jitter = 1.5;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    CHECK_STR_CONTAINS(err, "jitter");
    p.jitter = 0.1;
    p.schedule_ms = NULL;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    static const int64_t negative[] = { 5, -1 };
    p.schedule_ms = negative;
    p.schedule_len = 2;
    CHECK_INT_EQ(ab_retry_policy_check(&p, err, sizeof(err)), AB_ERR_CONFIG);
    CHECK_INT_EQ(ab_retry_policy_check(NULL, err, sizeof(err)), AB_ERR_CONFIG);
}

/* Parsed value, or -1 when rejected (and *ms untouched). */
static long long parse(const char *header, int64_t now)
{
    int64_t ms = -777;
    if (!ab_retry_after_parse(header, now, &ms))
        return ms == -777 ? -1 : -2;
    return ms;
}

TEST(retry_after_parse_delta_seconds)
{
    CHECK_INT_EQ(parse("120", Y2026_MS), 120 * SEC);
    CHECK_INT_EQ(parse("0", Y2026_MS), 0);
    CHECK_INT_EQ(parse(" \t5 ", Y2026_MS), 5 * SEC);
    CHECK_INT_EQ(parse("007", 0), 7 * SEC);
    CHECK_INT_EQ(parse("2147483647", 0), 2147483647LL * SEC);
    /* Huge values clamp to 2^31 s, without overflow, however many digits. */
    CHECK_INT_EQ(parse("2147483648", 0), AB_RETRY_DELAY_MAX_MS);
    CHECK_INT_EQ(parse("9223372036854775808", 0), AB_RETRY_DELAY_MAX_MS);
    CHECK_INT_EQ(parse("99999999999999999999999999999999999999999999999999999999999999999999", 0),
                 AB_RETRY_DELAY_MAX_MS);
}

TEST(retry_after_parse_rejects_garbage)
{
    static const char *const bad[] = {
        "", "   ", "-1", "+5", "1.5", "12a", "5 s", "1e3", "0x10", "١٢", "\xff",
        "Sun, 06 Nov 1994 08:49:37 UTC",       /* not GMT */
        "Sun, 06 Nov 1994 08:49:37",           /* no zone */
        "Sun, 06 Nov 1994 08:49:37 GMT junk",  /* trailing text */
        "Sun, 6 Nov 1994 08:49:37 GMT",        /* day not two digits */
        "Sun, 06 Nov 94 08:49:37 GMT",         /* two-digit year in IMF-fixdate */
        "Sun, 06 Foo 1994 08:49:37 GMT",       /* month */
        "Fun, 06 Nov 1994 08:49:37 GMT",       /* day name */
        "Sun,06 Nov 1994 08:49:37 GMT",        /* missing space */
        "Sun, 31 Feb 2020 08:49:37 GMT",       /* no such day */
        "Sun, 29 Feb 2021 08:49:37 GMT",       /* not a leap year */
        "Sun, 00 Nov 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 24:00:00 GMT",
        "Sun, 06 Nov 1994 08:60:00 GMT",
        "Sun, 06 Nov 1994 08:49:61 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sunday, 06-Nov-1994 08:49:37 GMT",    /* RFC 850 has two digits */
        "Sunday, 06 Nov 1994 08:49:37 GMT",    /* long name with IMF layout */
        "Sun Nov 6 08:49:37 1994",             /* asctime pads the day with a space */
        "Sun Nov  6 08:49:37 94",
        "Sun Nov  6 08:49:37 1994 GMT",
        "2026-01-01T00:00:00Z",                /* RFC 3339 is not an HTTP-date */
        "Wednesday, 06-Nov-94 08:49:37 GMT and then a lot more text past the buffer",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        long long got = parse(bad[i], RFC_DATE_MS);
        if (got != -1)
            ab_test_fail(__FILE__, __LINE__, "accepted \"%s\" as %lld", bad[i], got);
    }
    CHECK_INT_EQ(parse(NULL, 0), -1);
}

TEST(retry_after_parse_imf_fixdate)
{
    const char *d = "Sun, 06 Nov 1994 08:49:37 GMT";
    CHECK_INT_EQ(parse(d, RFC_DATE_MS - 30 * SEC), 30 * SEC);
    CHECK_INT_EQ(parse(d, RFC_DATE_MS - 1), 1);
    CHECK_INT_EQ(parse(d, RFC_DATE_MS), 0);
    CHECK_INT_EQ(parse(d, RFC_DATE_MS + HOUR), 0); /* in the past: no wait */
    CHECK_INT_EQ(parse("  Sun, 06 Nov 1994 08:49:37 GMT\t", RFC_DATE_MS - SEC), SEC);
    CHECK_INT_EQ(parse("Thu, 01 Jan 2026 00:00:00 GMT", Y2026_MS - 2 * HOUR), 2 * HOUR);
    CHECK_INT_EQ(parse("Sat, 29 Feb 2020 00:00:00 GMT", 0), 1582934400LL * SEC);
    /* The weekday is not checked against the date (RFC 9110 does not ask it). */
    CHECK_INT_EQ(parse("Mon, 06 Nov 1994 08:49:37 GMT", RFC_DATE_MS - SEC), SEC);
    /* Far future clamps; extreme clocks neither overflow nor go negative. */
    CHECK_INT_EQ(parse("Fri, 31 Dec 9999 23:59:59 GMT", 0), AB_RETRY_DELAY_MAX_MS);
    CHECK_INT_EQ(parse("Fri, 31 Dec 9999 23:59:59 GMT", INT64_MIN), AB_RETRY_DELAY_MAX_MS);
    CHECK_INT_EQ(parse(d, INT64_MAX), 0);
    CHECK_INT_EQ(parse("Sat, 01 Jan 0000 00:00:00 GMT", INT64_MAX), 0);
}

TEST(retry_after_parse_obsolete_forms)
{
    /* RFC 850 and asctime, the two forms recipients must still accept. */
    CHECK_INT_EQ(parse("Sunday, 06-Nov-94 08:49:37 GMT", RFC_DATE_MS - 30 * SEC), 30 * SEC);
    CHECK_INT_EQ(parse("Sun Nov  6 08:49:37 1994", RFC_DATE_MS - 30 * SEC), 30 * SEC);
    CHECK_INT_EQ(parse("Sun Nov 06 08:49:37 1994", RFC_DATE_MS - 30 * SEC), 30 * SEC);
    CHECK_INT_EQ(parse("Wed Nov 16 08:49:37 1994", RFC_DATE_MS), 10 * 24 * HOUR);

    /* Two-digit years, seen from 2026: up to 50 years ahead is the future... */
    CHECK_INT_EQ(parse("Thursday, 01-Jan-26 00:00:10 GMT", Y2026_MS), 10 * SEC);
    CHECK_INT_EQ(parse("Wednesday, 01-Jan-76 00:00:00 GMT", Y2026_MS),
                 (3345062400LL - 1767225600LL) * SEC);
    /* ...beyond is the past century (1977, 1994): no wait. */
    CHECK_INT_EQ(parse("Friday, 01-Jan-77 00:00:00 GMT", Y2026_MS), 0);
    CHECK_INT_EQ(parse("Sunday, 06-Nov-94 08:49:37 GMT", Y2026_MS), 0);
    /* Seen from 2090, "05" is 2105, not 2005. */
    int64_t y2090 = 3786912000LL * SEC;
    CHECK_INT_EQ(parse("Monday, 01-Jan-05 00:00:00 GMT", y2090), (4260211200LL - 3786912000LL) * SEC);
}
