/* The retry policy (exponential backoff or an explicit schedule, with jitter and a capped
 * Retry-After floor) and the Retry-After parser. See retry.h for the contract. */
#include "retry.h"

#include "common/log.h"

#include <math.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

const int64_t ab_retry_notify_default_ms[AB_RETRY_NOTIFY_DEFAULT_LEN] = {
    5 * 1000,           /* 5 s */
    5 * 60 * 1000,      /* 5 min */
    30 * 60 * 1000,     /* 30 min */
    2 * 3600 * 1000,    /* 2 h */
    5 * 3600 * 1000,    /* 5 h */
    10 * 3600 * 1000LL, /* 10 h */
    10 * 3600 * 1000LL, /* 10 h */
};

void ab_retry_policy_notify_default(struct ab_retry_policy *policy)
{
    *policy = (struct ab_retry_policy){
        .kind = AB_RETRY_SCHEDULE,
        .schedule_ms = ab_retry_notify_default_ms,
        .schedule_len = AB_RETRY_NOTIFY_DEFAULT_LEN,
        .jitter = 0.1,
        .retry_after_cap_ms = 3600 * 1000,
    };
}

static enum ab_err bad(char *errstr, size_t errstr_size, const char *what)
{
    if (errstr != NULL && errstr_size > 0)
        snprintf(errstr, errstr_size, "retry policy: %s", what);
    return AB_ERR_CONFIG;
}

enum ab_err ab_retry_policy_check(const struct ab_retry_policy *policy, char *errstr,
                                  size_t errstr_size)
{
    if (policy == NULL)
        return bad(errstr, errstr_size, "missing");
    if (policy->retry_after_cap_ms < 0)
        return bad(errstr, errstr_size, "retry_after_cap_ms must be >= 0");
    switch (policy->kind) {
    case AB_RETRY_EXPONENTIAL:
        if (policy->base_ms < 0)
            return bad(errstr, errstr_size, "base_ms must be >= 0");
        /* !(x >= 1) also rejects NaN. */
        if (!(policy->factor >= 1.0) || isinf(policy->factor))
            return bad(errstr, errstr_size, "factor must be a finite number >= 1");
        if (policy->max_ms < policy->base_ms)
            return bad(errstr, errstr_size, "max_ms must be >= base_ms");
        if (policy->max_attempts < 1)
            return bad(errstr, errstr_size, "max_attempts must be >= 1");
        return AB_OK;
    case AB_RETRY_SCHEDULE:
        if (policy->schedule_len > 0 && policy->schedule_ms == NULL)
            return bad(errstr, errstr_size, "schedule_ms missing");
        for (size_t i = 0; i < policy->schedule_len; i++)
            if (policy->schedule_ms[i] < 0)
                return bad(errstr, errstr_size, "schedule delays must be >= 0");
        if (!(policy->jitter >= 0.0 && policy->jitter <= 1.0))
            return bad(errstr, errstr_size, "jitter must be in [0, 1]");
        return AB_OK;
    }
    return bad(errstr, errstr_size, "unknown kind");
}

/* Rounds a delay computed in double to whole milliseconds within [0, AB_RETRY_DELAY_MAX_MS];
 * converting a double beyond int64_t's range would be undefined. */
static int64_t clamp_ms(double ms)
{
    if (!(ms > 0.0))
        return 0;
    if (ms >= (double)AB_RETRY_DELAY_MAX_MS)
        return AB_RETRY_DELAY_MAX_MS;
    return (int64_t)llround(ms);
}

bool ab_retry_next(const struct ab_retry_policy *policy, int attempt, int64_t retry_after_ms,
                   double random_unit, int64_t *delay_ms)
{
    if (attempt < 1 || ab_retry_policy_check(policy, NULL, 0) != AB_OK)
        return false;
    double u = random_unit >= 0.0 ? (random_unit <= 1.0 ? random_unit : 1.0) : 0.0; /* NaN: 0 */

    int64_t delay;
    if (policy->kind == AB_RETRY_EXPONENTIAL) {
        if (attempt >= policy->max_attempts)
            return false;
        /* pow in double cannot overflow into UB (it gives inf), and the min with max_ms
         * happens before any conversion. */
        double nominal = (double)policy->base_ms * pow(policy->factor, (double)(attempt - 1));
        if (nominal > (double)policy->max_ms)
            nominal = (double)policy->max_ms;
        delay = clamp_ms(nominal / 2.0 + u * nominal / 2.0);
    } else {
        if ((size_t)attempt > policy->schedule_len)
            return false;
        double d = (double)policy->schedule_ms[attempt - 1];
        delay = clamp_ms(d * (1.0 + policy->jitter * (2.0 * u - 1.0)));
    }

    if (retry_after_ms > 0 && policy->retry_after_cap_ms > 0) {
        int64_t floor_ms =
            retry_after_ms < policy->retry_after_cap_ms ? retry_after_ms : policy->retry_after_cap_ms;
        if (floor_ms > AB_RETRY_DELAY_MAX_MS)
            floor_ms = AB_RETRY_DELAY_MAX_MS;
        if (delay < floor_ms)
            delay = floor_ms;
    }
    *delay_ms = delay;
    return true;
}

/* ---- Retry-After ---------------------------------------------------------------------- */

#define DELTA_SECONDS_MAX ((int64_t)2147483648) /* AB_RETRY_DELAY_MAX_MS / 1000 */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil): no
 * timegm, so no time zone or time_t width enters the result. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

/* The Gregorian year of a day count (the inverse above, year only). */
static int64_t year_from_days(int64_t z)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    return yoe + era * 400 + (mp >= 10);
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* Reads exactly n digits at *p, advancing it. */
static bool take_digits(const char **p, int n, int *value)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    *p += n;
    *value = v;
    return true;
}

static bool take_literal(const char **p, const char *lit)
{
    size_t n = strlen(lit);
    if (strncmp(*p, lit, n) != 0)
        return false;
    *p += n;
    return true;
}

/* A three-letter month name; RFC 9110 spells them with a capital first letter, and it
 * costs nothing to accept any case. */
static bool take_month(const char **p, int *month)
{
    static const char names[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++) {
        if (strncasecmp(*p, names + 3 * i, 3) == 0) {
            *p += 3;
            *month = i + 1;
            return true;
        }
    }
    return false;
}

/* "HH:MM:SS" */
static bool take_time(const char **p, int *h, int *m, int *s)
{
    return take_digits(p, 2, h) && take_literal(p, ":") && take_digits(p, 2, m) &&
           take_literal(p, ":") && take_digits(p, 2, s);
}

/* A day name, short ("Sun") or long ("Sunday"); which one is returned in *is_long. The
 * weekday is not checked against the date: RFC 9110 does not ask recipients to. */
static bool take_day_name(const char **p, bool *is_long)
{
    static const char *const longs[7] = { "Monday", "Tuesday",  "Wednesday", "Thursday",
                                          "Friday", "Saturday", "Sunday" };
    for (int i = 0; i < 7; i++) {
        size_t n = strlen(longs[i]);
        if (strncasecmp(*p, longs[i], n) == 0) {
            *p += n;
            *is_long = true;
            return true;
        }
    }
    for (int i = 0; i < 7; i++) {
        if (strncasecmp(*p, longs[i], 3) == 0) {
            *p += 3;
            *is_long = false;
            return true;
        }
    }
    return false;
}

/* Parses the three HTTP-date forms of RFC 9110 section 5.6.7 into Unix milliseconds. */
static bool parse_http_date(const char *p, int64_t now_wall_ms, int64_t *wall_ms)
{
    int year, month, day, hour, min, sec;
    bool is_long;
    if (!take_day_name(&p, &is_long))
        return false;
    if (!is_long && take_literal(&p, ", ")) {
        /* IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT" */
        if (!take_digits(&p, 2, &day) || !take_literal(&p, " ") || !take_month(&p, &month) ||
            !take_literal(&p, " ") || !take_digits(&p, 4, &year) || !take_literal(&p, " ") ||
            !take_time(&p, &hour, &min, &sec) || !take_literal(&p, " GMT"))
            return false;
    } else if (is_long && take_literal(&p, ", ")) {
        /* rfc850-date: "Sunday, 06-Nov-94 08:49:37 GMT" */
        int yy;
        if (!take_digits(&p, 2, &day) || !take_literal(&p, "-") || !take_month(&p, &month) ||
            !take_literal(&p, "-") || !take_digits(&p, 2, &yy) || !take_literal(&p, " ") ||
            !take_time(&p, &hour, &min, &sec) || !take_literal(&p, " GMT"))
            return false;
        /* The year with these last two digits in (now - 50, now + 50]: RFC 9110 takes a
         * year "more than 50 years in the future" as the most recent past one. */
        int64_t now_year = year_from_days(floor_div(now_wall_ms, 86400000));
        int64_t y = now_year - ((now_year % 100) + 100) % 100 + yy;
        if (y > now_year + 50)
            y -= 100;
        else if (y <= now_year - 50)
            y += 100;
        year = (int)y;
    } else if (!is_long && take_literal(&p, " ")) {
        /* asctime-date: "Sun Nov  6 08:49:37 1994" (day padded with a space) */
        if (!take_month(&p, &month) || !take_literal(&p, " "))
            return false;
        if (*p == ' ') {
            p++;
            if (!take_digits(&p, 1, &day))
                return false;
        } else if (!take_digits(&p, 2, &day)) {
            return false;
        }
        if (!take_literal(&p, " ") || !take_time(&p, &hour, &min, &sec) ||
            !take_literal(&p, " ") || !take_digits(&p, 4, &year))
            return false;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;

    static const int month_days[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
    bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    /* 60 seconds: a leap second, which the format allows (it counts as :59 + 1 s here). */
    if (day < 1 || day > month_days[month - 1] || (month == 2 && day == 29 && !leap) ||
        hour > 23 || min > 59 || sec > 60)
        return false;
    int64_t secs = days_from_civil(year, month, day) * 86400 + hour * 3600 + min * 60 + sec;
    *wall_ms = secs * 1000;
    return true;
}

static bool is_ows(char c)
{
    return c == ' ' || c == '\t';
}

bool ab_retry_after_parse(const char *header, int64_t now_wall_ms, int64_t *ms)
{
    if (header == NULL)
        return false;
    while (is_ows(*header))
        header++;
    size_t len = strlen(header);
    while (len > 0 && is_ows(header[len - 1]))
        len--;
    if (len == 0)
        return false;

    if (header[0] >= '0' && header[0] <= '9') {
        /* delta-seconds = 1*DIGIT, of any length: past the cap the value stops growing. */
        int64_t secs = 0;
        for (size_t i = 0; i < len; i++) {
            if (header[i] < '0' || header[i] > '9')
                return false;
            if (secs < DELTA_SECONDS_MAX)
                secs = secs * 10 + (header[i] - '0');
        }
        *ms = (secs < DELTA_SECONDS_MAX ? secs : DELTA_SECONDS_MAX) * 1000;
        return true;
    }

    /* The longest valid date is an RFC 850 one with "Wednesday" (37 characters). */
    char buf[48];
    if (len >= sizeof(buf))
        return false;
    memcpy(buf, header, len);
    buf[len] = '\0';
    int64_t date_ms;
    if (!parse_http_date(buf, now_wall_ms, &date_ms))
        return false;
    /* A date already past asks for no wait. Otherwise date_ms is within 10000 years of
     * 1970, so date_ms - AB_RETRY_DELAY_MAX_MS cannot overflow, and comparing with it
     * first keeps date_ms - now_wall_ms from overflowing whatever clock the caller passes. */
    if (now_wall_ms >= date_ms)
        *ms = 0;
    else if (now_wall_ms < date_ms - AB_RETRY_DELAY_MAX_MS)
        *ms = AB_RETRY_DELAY_MAX_MS;
    else
        *ms = date_ms - now_wall_ms;
    return true;
}

enum ab_err ab_retry_in_place(ab_retry_step step, void *ud, int tries, int first_wait_ms,
                              const char *what, char *errstr, size_t errstr_size)
{
    enum ab_err err = step(ud, errstr, errstr_size);
    int64_t wait_ms = first_wait_ms;
    for (int i = 1; i < tries && err != AB_OK && ab_err_is_retriable(err); i++) {
        ab_warn("%s: %s (try %d of %d)", what, errstr, i, tries);
        usleep((useconds_t)(wait_ms * 1000));
        wait_ms *= 2;
        err = step(ud, errstr, errstr_size);
    }
    return err;
}
