/* Tests for common/errors: names, retry policy and HTTP statuses come from one table. */
#include "test.h"

#include "common/errors.h"

TEST(errors_every_code_has_a_distinct_name)
{
    for (int a = 0; a < AB_ERR__COUNT; a++) {
        CHECK(ab_err_name((enum ab_err)a)[0] != '\0');
        for (int b = a + 1; b < AB_ERR__COUNT; b++)
            CHECK(strcmp(ab_err_name((enum ab_err)a), ab_err_name((enum ab_err)b)) != 0);
    }
}

TEST(errors_http_status_and_retry_policy)
{
    CHECK_INT_EQ(ab_err_http_status(AB_ERR_INVALID), 400);
    CHECK_INT_EQ(ab_err_http_status(AB_ERR_TOO_LARGE), 413);
    CHECK_INT_EQ(ab_err_http_status(AB_ERR_UNAVAILABLE), 503);
    CHECK_INT_EQ(ab_err_http_status(AB_ERR_CONFLICT), 409);
    CHECK(!ab_err_is_retriable(AB_ERR_INVALID));
    CHECK(!ab_err_is_retriable(AB_ERR_CONFLICT));
    CHECK(ab_err_is_retriable(AB_ERR_UNAVAILABLE));
    CHECK(ab_err_is_retriable(AB_ERR_TIMEOUT));
    CHECK(ab_err_is_retriable(AB_ERR_RATE_LIMITED));
}

TEST(errors_out_of_range_is_internal)
{
    CHECK_STR_EQ(ab_err_name((enum ab_err)999), "internal_error");
    CHECK_INT_EQ(ab_err_http_status((enum ab_err)-1), 500);
    CHECK(!ab_err_is_retriable((enum ab_err)999));
}
