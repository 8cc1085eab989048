/*
 * tlsload: the TLS load generator of python -m bench.tls (OpenSSL, one thread, epoll).
 *
 *   echo       N connections; each makes one full handshake in the connect phase, then
 *              keeps one message of SIZE bytes in flight: an echoed message is a request.
 *   handshake  C concurrent slots, each: connect, a full handshake (no session is ever
 *              offered for resumption), one message of SIZE bytes echoed, close with RST;
 *              again.  A request is a whole connection.
 *
 * Progress events on stderr, one per line, as bench/loadgen.c prints them ("@ready",
 * "@measure", "@done"), so the driver samples the server's CPU over the measured
 * window; the result is one JSON object on stdout.  The client does not verify the
 * server's certificate (its cost is the client's, not the server's).
 *
 * Build (libssl-dev):  cc -O2 -Wall -Wextra -o bench/bin/tlsload bench/tlsload.c -lssl -lcrypto
 */
#include "cbench.h"

#include <errno.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { M_ECHO, M_HANDSHAKE };
enum phase { P_CONNECT, P_WARMUP, P_MEASURE, P_STOP };
enum state { S_FREE, S_TCP, S_TLS, S_OPEN, S_DEAD };

static struct {
    enum mode mode;
    size_t size;
    double connect_timeout;
} cfg = {M_ECHO, 1024, 60.0};

typedef struct {
    int fd;
    int state;
    SSL *ssl;
    size_t sent;      /* bytes of the current message written */
    size_t received;  /* bytes of its echo read */
    uint64_t started; /* this message's (echo) or connection's (handshake) start */
    uint32_t events;  /* registered with epoll */
} conn_t;

static SSL_CTX *g_ctx;
static int g_epfd;
static conn_t *g_conns;
static char *g_msg, *g_rbuf;
static struct sockaddr_in g_addr;
static int g_phase = P_CONNECT;
static uint64_t g_requests, g_errors, g_timeouts, g_connect_errors, g_established;
static uint64_t g_handshakes, g_resumed, g_lat_count, g_lat_max;
static double g_lat_sum;

static void watch(int idx, uint32_t events, int op)
{
    if (op == EPOLL_CTL_MOD && g_conns[idx].events == events)
        return;
    struct epoll_event ev = {.events = events, .data = {.u32 = (uint32_t)idx}};
    epoll_ctl(g_epfd, op, g_conns[idx].fd, &ev);
    g_conns[idx].events = events;
}

static void conn_close(conn_t *c, int dead)
{
    if (c->ssl) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(c->fd); /* also leaves the epoll set */
    }
    c->fd = -1;
    c->state = dead ? S_DEAD : S_FREE;
}

static void conn_start(int idx)
{
    conn_t *c = &g_conns[idx];
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (c->fd < 0) {
        g_connect_errors++;
        c->state = S_DEAD;
        return;
    }
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->started = now_ns();
    c->sent = c->received = 0;
    if (connect(c->fd, (struct sockaddr *)&g_addr, sizeof g_addr) < 0 && errno != EINPROGRESS) {
        g_connect_errors++;
        conn_close(c, cfg.mode == M_ECHO);
        return;
    }
    c->state = S_TCP;
    watch(idx, EPOLLOUT, EPOLL_CTL_ADD);
}

static void fail(int idx, uint64_t *counter)
{
    conn_t *c = &g_conns[idx];
    (*counter)++;
    conn_close(c, cfg.mode == M_ECHO);
    if (cfg.mode == M_HANDSHAKE && g_phase < P_STOP)
        conn_start(idx);
}

/* what an SSL call that did not finish waits for: 0 on an error (the connection failed) */
static int want(int idx, int rc)
{
    conn_t *c = &g_conns[idx];
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        watch(idx, EPOLLIN, EPOLL_CTL_MOD);
        return 1;
    case SSL_ERROR_WANT_WRITE:
        watch(idx, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
        return 1;
    default:
        ERR_clear_error();
        return 0;
    }
}

static void pump(int idx);

static void begin_message(conn_t *c)
{
    c->sent = c->received = 0;
    if (cfg.mode == M_ECHO)
        c->started = now_ns();
}

static void handshake(int idx)
{
    conn_t *c = &g_conns[idx];
    int rc = SSL_connect(c->ssl);
    if (rc != 1) {
        if (!want(idx, rc))
            fail(idx, &g_connect_errors);
        return;
    }
    c->state = S_OPEN;
    g_handshakes++;
    if (SSL_session_reused(c->ssl))
        g_resumed++;
    if (cfg.mode == M_ECHO) {
        g_established++;
        watch(idx, EPOLLIN, EPOLL_CTL_MOD);
        return; /* the messages start with the warm-up */
    }
    begin_message(c);
    pump(idx);
}

static void completed(int idx)
{
    conn_t *c = &g_conns[idx];
    if (g_phase == P_MEASURE) {
        uint64_t lat = now_ns() - c->started;
        g_requests++;
        g_lat_count++;
        g_lat_sum += (double)lat;
        if (lat > g_lat_max)
            g_lat_max = lat;
    }
    if (cfg.mode == M_HANDSHAKE) {
        conn_close(c, 0);
        if (g_phase < P_STOP)
            conn_start(idx);
        return;
    }
    begin_message(c);
}

/* write what is left of the message, read its echo; loop while progress is made */
static void pump(int idx)
{
    conn_t *c = &g_conns[idx];
    for (;;) {
        if (c->state != S_OPEN)
            return;
        if (c->sent < cfg.size) {
            int rc = SSL_write(c->ssl, g_msg + c->sent, (int)(cfg.size - c->sent));
            if (rc <= 0) {
                if (!want(idx, rc))
                    fail(idx, &g_errors);
                return;
            }
            c->sent += (size_t)rc;
            continue;
        }
        int rc = SSL_read(c->ssl, g_rbuf, (int)cfg.size);
        if (rc <= 0) {
            if (SSL_get_error(c->ssl, rc) == SSL_ERROR_ZERO_RETURN || !want(idx, rc))
                fail(idx, &g_errors);
            return;
        }
        c->received += (size_t)rc;
        if (c->received >= cfg.size) {
            completed(idx);
            if (cfg.mode == M_HANDSHAKE)
                return;
            if (g_phase >= P_STOP)
                return;
        }
    }
}

static void on_event(int idx, uint32_t events)
{
    conn_t *c = &g_conns[idx];
    if (c->fd < 0)
        return;
    if (c->state == S_TCP) {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP)))
            return; /* an event of the connection this slot had before */
        int err = 0;
        socklen_t len = sizeof err;
        getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
        if (err != 0) {
            fail(idx, &g_connect_errors);
            return;
        }
        c->ssl = SSL_new(g_ctx);
        SSL_set_fd(c->ssl, c->fd);
        SSL_set_tlsext_host_name(c->ssl, "localhost");
        c->state = S_TLS;
    }
    if (c->state == S_TLS)
        handshake(idx);
    else if (c->state == S_OPEN)
        pump(idx);
}

static void scan_timeouts(uint64_t t)
{
    uint64_t limit = (uint64_t)(common.timeout * 1e9);
    for (int i = 0; i < common.n; i++) {
        conn_t *c = &g_conns[i];
        if (c->fd < 0 || t < c->started || t - c->started <= limit)
            continue;
        if (c->state == S_OPEN && cfg.mode == M_ECHO && c->sent == 0)
            continue; /* idle between the connect phase and the warm-up */
        fail(i, c->state == S_OPEN ? &g_timeouts : &g_connect_errors);
    }
}

static void run_until(uint64_t until, int connecting)
{
    struct epoll_event events[256];
    uint64_t next_scan = now_ns() + 100000000ull;
    while (!g_signalled) {
        uint64_t t = now_ns();
        if (t >= until)
            return;
        if (connecting) {
            int pending = 0;
            for (int i = 0; i < common.n; i++)
                pending += g_conns[i].state == S_TCP || g_conns[i].state == S_TLS;
            if (pending == 0)
                return;
        }
        int n = epoll_wait(g_epfd, events, 256, 10);
        for (int i = 0; i < n; i++)
            on_event((int)events[i].data.u32, events[i].events);
        t = now_ns();
        if (t >= next_scan) {
            next_scan = t + 100000000ull;
            scan_timeouts(t);
        }
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tlsload [-m echo|handshake] [-H 127.0.0.1] -p PORT [-c N] [-s BYTES]\n"
                 "               [-w WARMUP_S] [-d DURATION_S] [-T TIMEOUT_S] [--cpu N]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mode", required_argument, 0, 'm'}, {"size", required_argument, 0, 's'},
        COMMON_LONG_OPTIONS,
    };
    common.n = 100;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:s:" COMMON_SHORT_OPTIONS, opts, NULL)) != -1) {
        if (common_option(ch, optarg))
            continue;
        switch (ch) {
        case 'm':
            if (!strcmp(optarg, "echo"))
                cfg.mode = M_ECHO;
            else if (!strcmp(optarg, "handshake"))
                cfg.mode = M_HANDSHAKE;
            else {
                usage(stderr);
                return 2;
            }
            break;
        case 's': cfg.size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (cfg.size < 1 || cfg.size > 16384 || common_setup(&g_addr) < 0) {
        usage(stderr);
        return 2;
    }

    g_ctx = SSL_CTX_new(TLS_client_method());
    if (!g_ctx) {
        fprintf(stderr, "tlsload: SSL_CTX_new failed\n");
        return 2;
    }
    SSL_CTX_set_verify(g_ctx, SSL_VERIFY_NONE, NULL);
    /* every handshake a full one: no client-side session cache, no tickets asked for */
    SSL_CTX_set_session_cache_mode(g_ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(g_ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_mode(g_ctx, SSL_MODE_ENABLE_PARTIAL_WRITE);

    g_msg = malloc(cfg.size);
    g_rbuf = malloc(cfg.size);
    g_conns = calloc((size_t)common.n, sizeof(conn_t));
    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!g_msg || !g_rbuf || !g_conns || g_epfd < 0) {
        perror("tlsload: set-up");
        return 2;
    }
    memset(g_msg, 'x', cfg.size);
    for (int i = 0; i < common.n; i++)
        g_conns[i].fd = -1;

    uint64_t t0 = now_ns();
    if (cfg.mode == M_ECHO) {
        for (int i = 0; i < common.n; i++)
            conn_start(i);
        run_until(t0 + (uint64_t)(cfg.connect_timeout * 1e9), 1);
    }
    double connect_s = (double)(now_ns() - t0) / 1e9;
    fprintf(stderr, "@ready established=%llu connect_errors=%llu connect_s=%.3f\n",
            (unsigned long long)g_established, (unsigned long long)g_connect_errors, connect_s);
    g_phase = P_WARMUP;
    for (int i = 0; i < common.n; i++) {
        if (cfg.mode == M_HANDSHAKE) {
            conn_start(i);
        } else if (g_conns[i].state == S_OPEN) {
            begin_message(&g_conns[i]);
            pump(i);
        }
    }
    run_until(now_ns() + (uint64_t)(common.warmup * 1e9), 0);
    g_phase = P_MEASURE;
    uint64_t handshakes0 = g_handshakes;
    fprintf(stderr, "@measure\n");
    uint64_t t_measure = now_ns();
    run_until(t_measure + (uint64_t)(common.duration * 1e9), 0);
    double secs = (double)(now_ns() - t_measure) / 1e9;
    g_phase = P_STOP;
    fprintf(stderr, "@done\n");
    for (int i = 0; i < common.n; i++)
        conn_close(&g_conns[i], 1);

    printf("{\"mode\": \"%s\", \"target\": \"%s:%d\", \"connections\": %d, \"size\": %zu, "
           "\"established\": %llu, \"duration_s\": %.6f, \"connect_s\": %.6f, "
           "\"requests\": %llu, \"rps\": %.3f, \"handshakes\": %llu, "
           "\"handshakes_measured\": %llu, \"resumed\": %llu, \"errors\": %llu, "
           "\"timeouts\": %llu, \"connect_errors\": %llu, "
           "\"latency_us\": {\"count\": %llu, \"mean\": %.3f, \"max\": %.3f}, "
           "\"tls_library\": \"%s\"}\n",
           cfg.mode == M_ECHO ? "echo" : "handshake", common.host, common.port, common.n,
           cfg.size,
           (unsigned long long)g_established, secs, connect_s,
           (unsigned long long)g_requests, secs > 0 ? (double)g_requests / secs : 0.0,
           (unsigned long long)g_handshakes, (unsigned long long)(g_handshakes - handshakes0),
           (unsigned long long)g_resumed, (unsigned long long)g_errors,
           (unsigned long long)g_timeouts, (unsigned long long)g_connect_errors,
           (unsigned long long)g_lat_count,
           g_lat_count ? g_lat_sum / (double)g_lat_count / 1000.0 : 0.0,
           (double)g_lat_max / 1000.0, OpenSSL_version(OPENSSL_VERSION));
    fflush(stdout);
    SSL_CTX_free(g_ctx);
    return 0;
}
