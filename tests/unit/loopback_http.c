/* The scripted loopback HTTP/1.1 server of the HTTP client tests (loopback_http.h): an accept
 * thread and one thread per connection, serving keep-alive requests until the client hangs
 * up or the server stops. */
#include "loopback_http.h"

#include "test.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CONNS 64
#define MAX_RECORDED 64
/* How long a thread waits before it looks at the stop flag again. */
#define POLL_MS 10

/* The server: all its threads are stopped by the flag. Each test runs in its own forked
 * process, so one static server per process suffices. */
static struct {
    int listen_fd;
    int port;
    lh_respond_fn respond;
    atomic_bool stop;
    pthread_t accept_thread;
    pthread_t conn_threads[MAX_CONNS];
    int conn_fds[MAX_CONNS];
    pthread_mutex_t lock; /* guards everything below */
    int accepts;
    int open_conns, peak_conns;
    struct lh_request requests[MAX_RECORDED];
    int request_count;
} srv = { .lock = PTHREAD_MUTEX_INITIALIZER };

/* Waits for data while watching the stop flag. @returns bytes read, 0 on EOF or stop. */
static ssize_t read_some(int fd, char *buf, size_t size)
{
    while (!atomic_load(&srv.stop)) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        int ready = poll(&pfd, 1, POLL_MS);

        if (ready < 0)
            return 0;
        if (ready > 0) {
            ssize_t n = recv(fd, buf, size, 0);
            return n < 0 ? 0 : n;
        }
    }
    return 0;
}

bool lh_send_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: a client that gave up must not kill the test with SIGPIPE. */
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);

        if (n <= 0)
            return false;
        data += n;
        len -= (size_t)n;
    }
    return true;
}

bool lh_send_str(int fd, const char *s)
{
    return lh_send_all(fd, s, strlen(s));
}

bool lh_nap(int fd, int ms)
{
    char byte;

    for (int waited = 0; waited < ms; waited += POLL_MS) {
        struct pollfd pfd = { .fd = fd, .events = POLLIN };

        if (atomic_load(&srv.stop))
            return false;
        if (poll(&pfd, 1, POLL_MS) > 0 && recv(fd, &byte, 1, MSG_PEEK) <= 0)
            return false;
    }
    return true;
}

static size_t content_length(const char *head)
{
    const char *p = strcasestr(head, "\r\nContent-Length:");

    return p == NULL ? 0 : strtoul(p + strlen("\r\nContent-Length:"), NULL, 10);
}

/* head_len counts the blank line ending the head; the recorded head keeps every header
 * line's CRLF, so a test can look for "\r\nName: value\r\n" whatever the line's place. */
static void record(struct lh_request *req, int conn, const char *buf, size_t head_len,
                   size_t body_len)
{
    memset(req, 0, sizeof(*req));
    req->conn = conn;
    snprintf(req->head, sizeof(req->head), "%.*s", (int)(head_len - 2), buf);
    sscanf(req->head, "%15s %255s", req->method, req->path);
    req->body_len = body_len < sizeof(req->body) ? body_len : sizeof(req->body);
    memcpy(req->body, buf + head_len, req->body_len);
}

/* Serves requests on one connection until the client closes it: HTTP/1.1 keep-alive. A TLS
 * ClientHello never completes a head, so https requests just wait here. */
static void *conn_main(void *arg)
{
    int id = (int)(intptr_t)arg;
    int fd = srv.conn_fds[id - 1];
    char buf[65536];
    size_t have = 0;

    for (;;) {
        char *end = memmem(buf, have, "\r\n\r\n", 4);
        size_t head_len, body_len;
        struct lh_request req;
        ssize_t n;

        if (end == NULL) {
            n = have < sizeof(buf) - 1 ? read_some(fd, buf + have, sizeof(buf) - 1 - have) : 0;
            if (n <= 0)
                break;
            have += (size_t)n;
            continue;
        }
        head_len = (size_t)(end + 4 - buf);
        buf[head_len - 2] = '\0'; /* for the header search; restored below */
        body_len = content_length(buf);
        buf[head_len - 2] = '\r';
        if (body_len > sizeof(buf) - 1 - head_len)
            break;
        while (have < head_len + body_len) {
            n = read_some(fd, buf + have, sizeof(buf) - 1 - have);
            if (n <= 0)
                goto out;
            have += (size_t)n;
        }
        record(&req, id, buf, head_len, body_len);
        pthread_mutex_lock(&srv.lock);
        if (srv.request_count < MAX_RECORDED)
            srv.requests[srv.request_count++] = req;
        pthread_mutex_unlock(&srv.lock);
        if (!srv.respond(fd, &req))
            break;
        memmove(buf, buf + head_len + body_len, have - head_len - body_len);
        have -= head_len + body_len;
    }
out:
    shutdown(fd, SHUT_RDWR);
    pthread_mutex_lock(&srv.lock);
    srv.open_conns--;
    pthread_mutex_unlock(&srv.lock);
    return NULL;
}

static void *accept_main(void *arg)
{
    (void)arg;
    while (!atomic_load(&srv.stop)) {
        struct pollfd pfd = { .fd = srv.listen_fd, .events = POLLIN };
        int fd, id;

        if (poll(&pfd, 1, POLL_MS) <= 0)
            continue;
        fd = accept(srv.listen_fd, NULL, NULL);
        if (fd < 0)
            continue;
        pthread_mutex_lock(&srv.lock);
        id = srv.accepts < MAX_CONNS ? ++srv.accepts : 0;
        if (id != 0 && ++srv.open_conns > srv.peak_conns)
            srv.peak_conns = srv.open_conns;
        pthread_mutex_unlock(&srv.lock);
        if (id == 0) {
            close(fd);
            continue;
        }
        srv.conn_fds[id - 1] = fd;
        if (pthread_create(&srv.conn_threads[id - 1], NULL, conn_main, (void *)(intptr_t)id))
            abort();
    }
    return NULL;
}

int lh_bind_loopback(int *port)
{
    struct sockaddr_in addr = { .sin_family = AF_INET };
    socklen_t addr_len = sizeof(addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    REQUIRE(fd >= 0);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, (struct sockaddr *)&addr, sizeof(addr)) == 0);
    REQUIRE(getsockname(fd, (struct sockaddr *)&addr, &addr_len) == 0);
    *port = ntohs(addr.sin_port);
    return fd;
}

void lh_no_proxy(void)
{
    const char *const vars[] = { "http_proxy", "HTTP_PROXY", "https_proxy",
                                 "HTTPS_PROXY", "all_proxy",  "ALL_PROXY" };

    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
}

void lh_start(lh_respond_fn respond)
{
    lh_no_proxy();
    srv.respond = respond;
    srv.listen_fd = lh_bind_loopback(&srv.port);
    REQUIRE(listen(srv.listen_fd, MAX_CONNS) == 0);
    REQUIRE(pthread_create(&srv.accept_thread, NULL, accept_main, NULL) == 0);
}

void lh_stop(void)
{
    atomic_store(&srv.stop, true);
    pthread_join(srv.accept_thread, NULL);
    /* Only the accept thread, now ended, changes accepts. */
    for (int i = 0; i < srv.accepts; i++) {
        pthread_join(srv.conn_threads[i], NULL);
        close(srv.conn_fds[i]);
    }
    close(srv.listen_fd);
}

const char *lh_url(char *buf, size_t size, const char *path)
{
    snprintf(buf, size, "http://127.0.0.1:%d%s", srv.port, path);
    return buf;
}

int lh_port(void)
{
    return srv.port;
}

static int locked_int(const int *field)
{
    int n;

    pthread_mutex_lock(&srv.lock);
    n = *field;
    pthread_mutex_unlock(&srv.lock);
    return n;
}

int lh_accepts(void)
{
    return locked_int(&srv.accepts);
}

int lh_peak_conns(void)
{
    return locked_int(&srv.peak_conns);
}

struct lh_request lh_recorded(int i)
{
    struct lh_request req = { .conn = 0 };

    pthread_mutex_lock(&srv.lock);
    if (i < srv.request_count)
        req = srv.requests[i];
    pthread_mutex_unlock(&srv.lock);
    return req;
}
