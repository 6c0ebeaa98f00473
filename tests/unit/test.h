/* A tiny unit-test harness: TEST() registers a function; the runner forks each test with
 * a time limit, so a crash or a hang fails one test instead of the whole suite. */
#ifndef AB_TEST_H
#define AB_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef void (*ab_test_fn)(void);

void ab_test_register(const char *name, const char *file, ab_test_fn fn);
/* Marks the current test failed and prints where; the test goes on (like EXPECT). */
void ab_test_fail(const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define TEST(name)                                                                         \
    static void test_##name(void);                                                         \
    __attribute__((constructor)) static void test_register_##name(void)                    \
    {                                                                                      \
        ab_test_register(#name, __FILE__, test_##name);                                    \
    }                                                                                      \
    static void test_##name(void)

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        if (!(cond))                                                                       \
            ab_test_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);                          \
    } while (0)

/* Stops the test at once: for preconditions the rest of the test depends on. */
#define REQUIRE(cond)                                                                      \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            ab_test_fail(__FILE__, __LINE__, "REQUIRE(%s)", #cond);                        \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                 \
    do {                                                                                   \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                    \
        if (check_a_ != check_b_)                                                          \
            ab_test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, check_a_,   \
                         check_b_);                                                        \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                 \
    do {                                                                                   \
        const char *check_a_ = (a), *check_b_ = (b);                                       \
        if (check_a_ == NULL || check_b_ == NULL || strcmp(check_a_, check_b_) != 0)       \
            ab_test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b,         \
                         check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)");  \
    } while (0)

#define CHECK_STR_CONTAINS(hay, needle)                                                    \
    do {                                                                                   \
        const char *check_h_ = (hay), *check_n_ = (needle);                                \
        if (check_h_ == NULL || strstr(check_h_, check_n_) == NULL)                        \
            ab_test_fail(__FILE__, __LINE__, "%s contains \"%s\": got \"%s\"", #hay,       \
                         check_n_, check_h_ ? check_h_ : "(null)");                        \
    } while (0)

#endif
