/* agentbusctl tail (tools/agentbusctl_tail.c): watches a topic of the bus from the command
 * line, one line per event. */
#ifndef CTL_TAIL_H
#define CTL_TAIL_H

/* The command lines of tail, as agentbusctl's usage text shows them. */
#define CTL_TAIL_USAGE                                                                             \
    "  agentbusctl tail [TOPIC] [--from now|beginning|TIME] [--json] [--type T]...\n"              \
    "                   [--agent A] [--conversation C] [--count N] [--bootstrap HOST:PORT]\n"      \
    "                   [--prefix P] [--group G]\n"

/* Runs `agentbusctl tail ...`; argv[0] is "tail". Reads the Kafka settings the services
 * read (environment, AGENTBUS_CONFIG), prints events on stdout until --count is reached or
 * SIGINT/SIGTERM arrives. @returns the exit status: 0 done, 1 Kafka failed or the topic does
 * not exist, 2 a usage or configuration error. */
int ctl_tail(int argc, char **argv);

#endif
