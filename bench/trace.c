/* What tracing adds to a request: one span entered from a caller's traceparent, formatted
 * for the events it publishes, one child for an outgoing call, and left. Prints the time per
 * request over many iterations (`make bench-trace`; the script also counts instructions
 * under callgrind, which is repeatable whatever else the machine does). */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "common/trace.h"

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    char out[AB_TRACEPARENT_LEN + 1];
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    for (long i = 0; i < n; i++) {
        ab_trace_enter("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        ab_trace_current_header(out);
        ab_trace_child_header(out, out);
        ab_trace_leave();
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    double ns = (double)(b.tv_sec - a.tv_sec) * 1e9 + (double)(b.tv_nsec - a.tv_nsec);
    printf("trace: %ld requests, %.0f ns per request (span, its traceparent, one outgoing "
           "child); last %s\n",
           n, ns / (double)n, out);
    return 0;
}
