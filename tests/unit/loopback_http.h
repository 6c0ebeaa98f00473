/* A real HTTP/1.1 server on 127.0.0.1 that runs in threads of the test itself, for the tests
 * of common/http_client and common/http_multi: it records every request and leaves the
 * answer to the test file's own respond function, so what goes over the wire (stalls,
 * trickles, odd heads) can be scripted and checked. */
#ifndef AB_LOOPBACK_HTTP_H
#define AB_LOOPBACK_HTTP_H

#include <stdbool.h>
#include <stddef.h>

/* One request as the server received it. */
struct lh_request {
    char method[16];
    char path[256];
    char head[8192]; /* request line and header lines, exactly as received */
    char body[8192];
    size_t body_len;
    int conn; /* which accepted connection carried it, counting from 1; 0: no such request */
};

/* Answers one request on fd. Called on the connection's own thread, so calls for different
 * connections run at the same time. @returns false when the connection must close. */
typedef bool (*lh_respond_fn)(int fd, const struct lh_request *req);

/* Starts the server with respond answering every request, once per process: each test runs
 * in its own forked process, so the server is a single static one. Clears the proxy
 * variables (lh_no_proxy). lh_stop is owed after it. */
void lh_start(lh_respond_fn respond);
/* Stops the accept and connection threads (a stalled respond sees it within a poll) and
 * closes every socket. */
void lh_stop(void);

/* "http://127.0.0.1:<port><path>" into buf. @returns buf. */
const char *lh_url(char *buf, size_t size, const char *path);
int lh_port(void);
/* Connections accepted so far, and the most that were open at once. */
int lh_accepts(void);
int lh_peak_conns(void);
/* The i-th request the server recorded (a copy, so the server may go on); its conn is 0 when
 * there was none. */
struct lh_request lh_recorded(int i);

/* A socket bound to 127.0.0.1 on a port the kernel picks; not listening. */
int lh_bind_loopback(int *port);
/* A proxy from the environment would carry the requests away from the test server. */
void lh_no_proxy(void);

/* For respond functions. */
bool lh_send_all(int fd, const char *data, size_t len);
bool lh_send_str(int fd, const char *s);
/* Sleeps ms, or less if the server stops or the client hangs up. @returns false if so. */
bool lh_nap(int fd, int ms);

#endif
