/* Runs the registered unit tests, each in a forked child with a time limit, and ends with
 * the line "N passed, N failed" that test drivers read. Arguments filter tests by substring. */

#include "test.h"

#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_TESTS 1024
#define TEST_TIMEOUT_S 150 /* a guard against hangs; the rebalance tests may take a minute */

struct test_case {
    const char *name;
    const char *file;
    ab_test_fn fn;
};

/* Present only in sanitizer builds: checks for leaks now, without ending the process. The
 * child ends with _exit (no exit-time leak check), so this is where leaks are caught. */
extern int __lsan_do_recoverable_leak_check(void) __attribute__((weak));

static struct test_case tests[MAX_TESTS];
static int test_count;
static int current_failed;

void ab_test_register(const char *name, const char *file, ab_test_fn fn)
{
    if (test_count == MAX_TESTS) {
        fprintf(stderr, "too many tests (raise MAX_TESTS)\n");
        abort();
    }
    tests[test_count++] = (struct test_case){ name, file, fn };
}

void ab_test_fail(const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    current_failed = 1;
}

static int selected(const char *name, int argc, char **argv)
{
    if (argc < 2)
        return 1;
    for (int i = 1; i < argc; i++)
        if (strstr(name, argv[i]) != NULL)
            return 1;
    return 0;
}

/* Starts one test in a child whose stdout and stderr go to a temporary file, so that tests
 * running side by side do not mix their output. */
static pid_t start_one(const struct test_case *tc, FILE **out)
{
    fflush(NULL);
    *out = tmpfile();
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        return -1;
    }
    if (pid == 0) {
        if (*out != NULL) {
            dup2(fileno(*out), STDOUT_FILENO);
            dup2(fileno(*out), STDERR_FILENO);
        }
        alarm(TEST_TIMEOUT_S);
        current_failed = 0;
        tc->fn();
        if (__lsan_do_recoverable_leak_check != NULL && __lsan_do_recoverable_leak_check() != 0) {
            fprintf(stderr, "    leaks found (see the report above)\n");
            current_failed = 1;
        }
        fflush(NULL);
        _exit(current_failed ? 1 : 0);
    }
    return pid;
}

struct running {
    pid_t pid;
    int index;
    FILE *out;
};

/* Reports a finished test: its verdict, and its output when it failed. */
static int finish_one(const struct test_case *tc, int status, FILE *out)
{
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    printf("%s %s%s%s\n", ok ? "ok  " : "FAIL", tc->name, ok ? "" : " ", ok ? "" : tc->file);
    if (!ok && out != NULL) {
        char buf[4096];
        size_t n;
        rewind(out);
        while ((n = fread(buf, 1, sizeof(buf), out)) > 0)
            fwrite(buf, 1, n, stdout);
    }
    if (!ok && WIFSIGNALED(status))
        printf("    killed by signal %d%s\n", WTERMSIG(status),
               WTERMSIG(status) == SIGALRM ? " (timeout)" : "");
    if (out != NULL)
        fclose(out);
    return ok;
}

/* Tests run AB_TEST_JOBS at a time (default 4): many wait on brokers and timeouts rather
 * than on the CPU, and each test keeps to its own topics, schemas and ports. */
int main(int argc, char **argv)
{
    int passed = 0, failed = 0, next = 0, active = 0;
    const char *jobs_env = getenv("AB_TEST_JOBS");
    int jobs = jobs_env ? (int)strtol(jobs_env, NULL, 10) : 4;
    struct running slots[64];
    if (jobs < 1 || jobs > 64)
        jobs = 4;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (;;) {
        while (active < jobs && next < test_count) {
            int i = next++;
            if (!selected(tests[i].name, argc, argv))
                continue;
            FILE *out = NULL;
            pid_t pid = start_one(&tests[i], &out);
            if (pid < 0) {
                failed++;
                continue;
            }
            slots[active++] = (struct running){ pid, i, out };
        }
        if (active == 0)
            break;
        int status = 0;
        pid_t pid = wait(&status);
        if (pid < 0)
            continue;
        for (int k = 0; k < active; k++) {
            if (slots[k].pid != pid)
                continue;
            if (finish_one(&tests[slots[k].index], status, slots[k].out))
                passed++;
            else
                failed++;
            slots[k] = slots[--active];
            break;
        }
    }
    printf("unit: %d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
