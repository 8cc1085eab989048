/*
 * loadgen: the connection-scaling benchmark's load generator.
 *
 * One process, one epoll set and one connection table per thread (one thread by
 * default), N connections to a TCP host:port or a Unix socket path.  Modes:
 *
 *   echo   ping-pong: every connection keeps DEPTH messages of SIZE bytes in flight;
 *          each echoed message completes one request, timed with CLOCK_MONOTONIC.
 *   idle   open N connections (optionally one request each, --ping), print "@ready"
 *          on stderr, hold them until SIGTERM/SIGINT or --hold seconds, count the
 *          connections the server dropped.
 *   churn  C concurrent slots, each: connect, one request, close, again.
 *
 * Progress events go to stderr, one per line, so a driver can sample the server at
 * the right moments:  "@ready ...", "@measure", "@done".  The result is one JSON
 * object on stdout.  Latencies go into a log-linear histogram (1024 linear
 * sub-buckets per power of two, about 0.1% resolution, like HdrHistogram).
 *
 * Build:  cc -O2 -Wall -Wextra -pthread -o bench/bin/loadgen bench/loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* ---- histogram ------------------------------------------------------------------ */

#define SUB_BITS 10
#define SUB (1u << SUB_BITS)
#define HALF (SUB >> 1)
#define MAX_SHIFT 35
#define HBUCKETS (SUB + MAX_SHIFT * HALF)

typedef struct {
    uint64_t *counts;
    uint64_t count, min, max;
    double sum;
} hist_t;

static unsigned hidx(uint64_t v)
{
    if (v < SUB)
        return (unsigned)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - (SUB_BITS - 1);
    if (shift > MAX_SHIFT)
        return HBUCKETS - 1;
    return SUB + (unsigned)(shift - 1) * HALF + (unsigned)((v >> shift) - HALF);
}

static uint64_t hval(unsigned i)
{
    if (i < SUB)
        return i;
    unsigned j = i - SUB;
    unsigned shift = j / HALF + 1;
    uint64_t m = (uint64_t)(j % HALF) + HALF;
    return (m << shift) + ((1ull << shift) >> 1);
}

static void hist_init(hist_t *h)
{
    h->counts = calloc(HBUCKETS, sizeof(uint64_t));
    if (!h->counts) {
        perror("loadgen: calloc");
        exit(2);
    }
    h->count = 0;
    h->min = UINT64_MAX;
    h->max = 0;
    h->sum = 0;
}

static inline void hist_add(hist_t *h, uint64_t v)
{
    h->counts[hidx(v)]++;
    h->count++;
    h->sum += (double)v;
    if (v < h->min)
        h->min = v;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(hist_t *into, const hist_t *from)
{
    for (unsigned i = 0; i < HBUCKETS; i++)
        into->counts[i] += from->counts[i];
    into->count += from->count;
    into->sum += from->sum;
    if (from->min < into->min)
        into->min = from->min;
    if (from->max > into->max)
        into->max = from->max;
}

/* the value at quantile q (0..1) in nanoseconds, clamped to the exact min and max */
static uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->count == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HBUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hval(i);
            if (v < h->min)
                v = h->min;
            if (v > h->max)
                v = h->max;
            return v;
        }
    }
    return h->max;
}

/* ---- configuration and shared state --------------------------------------------- */

enum mode { MODE_ECHO, MODE_IDLE, MODE_CHURN };
enum phase { PH_CONNECT, PH_WARMUP, PH_MEASURE, PH_STOP };

static struct {
    enum mode mode;
    const char *host;
    int port;
    const char *unix_path;
    int nconn;
    size_t size;
    int depth;
    double warmup, duration, timeout, connect_timeout, hold;
    int threads;
    int connect_concurrency;
    int ping;
    int linger0;
    int cpu;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    int family;
} cfg = {
    .mode = MODE_ECHO, .host = "127.0.0.1", .port = 0, .unix_path = NULL, .nconn = 1,
    .size = 1024, .depth = 1, .warmup = 1.0, .duration = 5.0, .timeout = 5.0,
    .connect_timeout = 30.0, .hold = 0.0, .threads = 1, .connect_concurrency = 256,
    .ping = 0, .linger0 = 0, .cpu = -1,
};

static volatile int g_phase = PH_CONNECT;
static volatile sig_atomic_t g_signalled = 0;
static char *g_sendbuf;
static size_t g_sendbuf_len;
static pthread_barrier_t g_connected;

static void on_signal(int sig)
{
    (void)sig;
    g_signalled = 1;
}

static inline int phase(void) { return __atomic_load_n(&g_phase, __ATOMIC_ACQUIRE); }
static inline void set_phase(int p) { __atomic_store_n(&g_phase, p, __ATOMIC_RELEASE); }

static inline uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000ull),
                          .tv_nsec = (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR && !g_signalled)
        ;
}

/* ---- connections ---------------------------------------------------------------- */

enum cstate { C_FREE, C_CONNECTING, C_OPEN, C_DEAD };

typedef struct {
    int fd;
    uint8_t state;
    uint8_t want_out; /* EPOLLOUT registered */
    uint8_t pinged;   /* idle --ping: the reply arrived */
    uint32_t inflight;
    uint32_t head;
    uint64_t to_send;  /* bytes queued, not yet written */
    uint64_t recv_acc; /* bytes received toward the oldest message */
    uint64_t started;  /* churn: when this cycle's connect began */
} conn_t;

typedef struct {
    int id;
    int epfd;
    pthread_t tid;
    conn_t *conns;
    int n;
    uint64_t *ts; /* n * depth send timestamps (ring per connection) */
    char *rbuf;
    size_t rbuf_len;
    hist_t hist;
    uint64_t requests, bytes, errors, timeouts, connect_errors, closed_by_peer;
    uint64_t established, connect_retries;
    int pending;  /* connects in progress */
    int next;     /* next connection to start (connect phase) */
    int resolved; /* connections established or given up */
    int cc_limit;
} worker_t;

static int set_events(worker_t *w, conn_t *c, int idx, uint32_t events, int op)
{
    struct epoll_event ev = {.events = events, .data = {.u32 = (uint32_t)idx}};
    return epoll_ctl(w->epfd, op, c->fd, &ev);
}

static void conn_close(worker_t *w, conn_t *c, int dead)
{
    if (c->fd >= 0) {
        if (cfg.linger0) {
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(c->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        }
        close(c->fd);
    }
    (void)w;
    c->fd = -1;
    c->state = dead ? C_DEAD : C_FREE;
    c->want_out = 0;
    c->inflight = 0;
    c->head = 0;
    c->to_send = 0;
    c->recv_acc = 0;
}

/* start a non-blocking connect; returns 0 when started, -1 on a hard error */
static int conn_start(worker_t *w, int idx)
{
    conn_t *c = &w->conns[idx];
    int fd = socket(cfg.family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        if (errno == EMFILE || errno == ENFILE)
            fprintf(stderr, "loadgen: socket(): %s (raise ulimit -n)\n", strerror(errno));
        return -1;
    }
    if (cfg.family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->fd = fd;
    c->state = C_CONNECTING;
    c->started = now_ns();
    int rc = connect(fd, (struct sockaddr *)&cfg.addr, cfg.addrlen);
    if (rc == 0 || errno == EINPROGRESS) {
        c->want_out = 1;
        if (set_events(w, c, idx, EPOLLOUT, EPOLL_CTL_ADD) < 0) {
            conn_close(w, c, 0);
            return -1;
        }
        w->pending++;
        return 0;
    }
    /* a Unix listener's full backlog says EAGAIN: retry later */
    int err = errno;
    close(fd);
    c->fd = -1;
    c->state = C_FREE;
    errno = err;
    return err == EAGAIN ? 1 : -1;
}

static void flush(worker_t *w, conn_t *c, int idx);

static void queue_message(worker_t *w, conn_t *c, int idx, uint64_t t)
{
    uint32_t slot = (c->head + c->inflight) % (uint32_t)cfg.depth;
    w->ts[(size_t)idx * (size_t)cfg.depth + slot] = t;
    c->inflight++;
    c->to_send += cfg.size;
}

static void fail(worker_t *w, conn_t *c, int idx, int churn_restart);

static void flush(worker_t *w, conn_t *c, int idx)
{
    while (c->to_send > 0) {
        size_t chunk = c->to_send < g_sendbuf_len ? (size_t)c->to_send : g_sendbuf_len;
        ssize_t sent = send(c->fd, g_sendbuf, chunk, MSG_NOSIGNAL);
        if (sent > 0) {
            c->to_send -= (uint64_t)sent;
            continue;
        }
        if (sent < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (!c->want_out) {
                c->want_out = 1;
                set_events(w, c, idx, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            }
            return;
        }
        w->errors++;
        fail(w, c, idx, 1);
        return;
    }
    if (c->want_out) {
        c->want_out = 0;
        set_events(w, c, idx, EPOLLIN, EPOLL_CTL_MOD);
    }
}

static void churn_begin(worker_t *w, int idx)
{
    int rc = conn_start(w, idx);
    if (rc < 0) {
        w->connect_errors++;
        /* out of descriptors or ports: this slot stops; other errors: the timeout
         * scan retries FREE slots every 100 ms, so a hard error cannot spin */
        if (errno == EMFILE || errno == ENFILE || errno == EADDRNOTAVAIL)
            w->conns[idx].state = C_DEAD;
    } else if (rc > 0) {
        w->connect_retries++; /* EAGAIN on a full Unix backlog: retried by the scan */
    }
}

/* an error or timeout on a connection: close it; a churn slot starts over */
static void fail(worker_t *w, conn_t *c, int idx, int churn_restart)
{
    if (c->state == C_CONNECTING)
        w->pending--;
    conn_close(w, c, cfg.mode != MODE_CHURN);
    if (cfg.mode == MODE_CHURN && churn_restart && phase() < PH_STOP)
        churn_begin(w, idx);
}

static void on_connected(worker_t *w, conn_t *c, int idx)
{
    int err = 0;
    socklen_t len = sizeof err;
    w->pending--;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
        err = errno;
    if (err != 0) {
        w->connect_errors++;
        if (cfg.mode == MODE_CHURN) {
            conn_close(w, c, 0);
            if (phase() < PH_STOP)
                churn_begin(w, idx);
        } else {
            conn_close(w, c, 1);
            w->resolved++;
        }
        return;
    }
    c->state = C_OPEN;
    c->want_out = 0;
    set_events(w, c, idx, EPOLLIN, EPOLL_CTL_MOD);
    if (cfg.mode == MODE_CHURN) {
        queue_message(w, c, idx, c->started);
        flush(w, c, idx);
        return;
    }
    w->established++;
    if (cfg.mode == MODE_IDLE && cfg.ping) {
        queue_message(w, c, idx, now_ns());
        flush(w, c, idx);
    } else {
        w->resolved++;
    }
}

/* one message fully echoed on connection idx */
static void completed(worker_t *w, conn_t *c, int idx, uint64_t t)
{
    uint64_t sent_at = w->ts[(size_t)idx * (size_t)cfg.depth + c->head];
    c->head = (c->head + 1) % (uint32_t)cfg.depth;
    c->inflight--;
    int ph = phase();
    if (ph == PH_MEASURE) {
        w->requests++;
        w->bytes += cfg.size;
        hist_add(&w->hist, t > sent_at ? t - sent_at : 0);
    }
    switch (cfg.mode) {
    case MODE_ECHO:
        if (ph < PH_STOP)
            queue_message(w, c, idx, t);
        break;
    case MODE_IDLE:
        if (!c->pinged) {
            c->pinged = 1;
            w->resolved++;
        }
        break;
    case MODE_CHURN:
        conn_close(w, c, 0);
        if (ph < PH_STOP)
            churn_begin(w, idx);
        break;
    }
}

static void on_readable(worker_t *w, conn_t *c, int idx)
{
    ssize_t got = recv(c->fd, w->rbuf, w->rbuf_len, 0);
    if (got > 0) {
        c->recv_acc += (uint64_t)got;
        uint64_t t = now_ns();
        while (c->inflight > 0 && c->recv_acc >= cfg.size) {
            c->recv_acc -= cfg.size;
            completed(w, c, idx, t);
            if (c->state != C_OPEN)
                return; /* churn closed it */
        }
        if (c->to_send > 0)
            flush(w, c, idx);
        return;
    }
    if (got < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (got == 0)
        w->closed_by_peer++;
    else
        w->errors++;
    if (cfg.mode == MODE_IDLE && !c->pinged && cfg.ping)
        w->resolved++;
    fail(w, c, idx, 1);
}

static void handle_event(worker_t *w, struct epoll_event *ev)
{
    int idx = (int)ev->data.u32;
    conn_t *c = &w->conns[idx];
    if (c->fd < 0)
        return;
    if (c->state == C_CONNECTING) {
        on_connected(w, c, idx);
        return;
    }
    if (ev->events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
        on_readable(w, c, idx);
        if (c->state != C_OPEN || c->fd < 0)
            return;
    }
    if (ev->events & EPOLLOUT)
        flush(w, c, idx);
}

/* start more connects in the connect phase, at most cc_limit in progress */
static void ramp(worker_t *w)
{
    while (w->next < w->n && w->pending < w->cc_limit) {
        int rc = conn_start(w, w->next);
        if (rc > 0)
            return; /* EAGAIN: try again on the next pass */
        if (rc < 0) {
            w->connect_errors++;
            w->conns[w->next].state = C_DEAD;
            w->resolved++;
        }
        w->next++;
    }
}

static void scan_timeouts(worker_t *w, uint64_t t)
{
    uint64_t limit = (uint64_t)(cfg.timeout * 1e9);
    for (int i = 0; i < w->n; i++) {
        conn_t *c = &w->conns[i];
        if (cfg.mode == MODE_CHURN && c->state == C_FREE) {
            if (phase() == PH_WARMUP || phase() == PH_MEASURE)
                churn_begin(w, i); /* a slot that got EAGAIN or an error earlier */
            continue;
        }
        if (c->fd < 0)
            continue;
        uint64_t since;
        if (c->state == C_CONNECTING || cfg.mode == MODE_CHURN)
            since = c->started;
        else if (c->inflight > 0)
            since = w->ts[(size_t)i * (size_t)cfg.depth + c->head];
        else
            continue;
        if (t > since && t - since > limit) {
            if (c->state == C_CONNECTING) {
                w->connect_errors++;
                if (cfg.mode != MODE_CHURN)
                    w->resolved++;
            } else {
                w->timeouts++;
                if (cfg.mode == MODE_IDLE && !c->pinged)
                    w->resolved++;
            }
            fail(w, c, i, 1);
        }
    }
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    struct epoll_event events[512];
    uint64_t next_scan = now_ns() + 100000000ull;
    uint64_t connect_deadline = now_ns() + (uint64_t)(cfg.connect_timeout * 1e9);
    int started = 0;

    if (cfg.mode == MODE_CHURN) {
        w->resolved = w->n; /* nothing to establish up front */
    }
    for (;;) {
        int ph = phase();
        if (ph >= PH_STOP)
            break;
        if (ph == PH_CONNECT) {
            if (cfg.mode != MODE_CHURN)
                ramp(w);
            if (w->resolved >= w->n || now_ns() > connect_deadline) {
                if (w->resolved < w->n)
                    fprintf(stderr, "loadgen: thread %d: connect phase timed out with "
                            "%d of %d connections ready\n", w->id, w->resolved, w->n);
                pthread_barrier_wait(&g_connected); /* all threads connected */
                pthread_barrier_wait(&g_connected); /* the main thread set the phase */
                continue;
            }
        } else if (!started) {
            started = 1;
            uint64_t t = now_ns();
            for (int i = 0; i < w->n; i++) {
                conn_t *c = &w->conns[i];
                if (cfg.mode == MODE_ECHO && c->state == C_OPEN) {
                    for (int k = 0; k < cfg.depth; k++)
                        queue_message(w, c, i, t);
                    flush(w, c, i);
                } else if (cfg.mode == MODE_CHURN && c->state == C_FREE) {
                    churn_begin(w, i);
                }
            }
        }
        int n = epoll_wait(w->epfd, events, 512, 10);
        for (int i = 0; i < n; i++)
            handle_event(w, &events[i]);
        uint64_t t = now_ns();
        if (t >= next_scan) {
            next_scan = t + 100000000ull;
            if (cfg.mode != MODE_IDLE || phase() == PH_CONNECT)
                scan_timeouts(w, t);
        }
    }
    for (int i = 0; i < w->n; i++)
        if (w->conns[i].fd >= 0)
            close(w->conns[i].fd);
    return NULL;
}

/* ---- set-up and report ---------------------------------------------------------- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: loadgen [options]\n"
            "  -m, --mode echo|idle|churn   workload (default echo)\n"
            "  -H, --host ADDR              IPv4/IPv6 address (default 127.0.0.1)\n"
            "  -p, --port PORT              TCP port\n"
            "  -u, --unix PATH              Unix socket path instead of host:port\n"
            "  -c, --connections N          connections (churn: concurrent slots)\n"
            "  -s, --size BYTES             message size (default 1024)\n"
            "  -D, --depth K                messages in flight per connection (echo)\n"
            "  -w, --warmup SECONDS         warm-up before measuring (default 1)\n"
            "  -d, --duration SECONDS       measured time (default 5)\n"
            "  -T, --timeout SECONDS        request timeout (default 5)\n"
            "      --connect-timeout S      give up establishing after S (default 30)\n"
            "      --connect-concurrency N  connects in progress at once (default 256)\n"
            "      --hold SECONDS           idle: hold this long (0: until SIGTERM)\n"
            "      --ping                   idle: one request per connection first\n"
            "      --linger0                close with RST (no TIME_WAIT)\n"
            "  -t, --threads T              worker threads (default 1)\n"
            "      --cpu N[,M...]           pin to these CPUs\n");
}

static int resolve(void)
{
    memset(&cfg.addr, 0, sizeof cfg.addr);
    if (cfg.unix_path) {
        struct sockaddr_un *sun = (struct sockaddr_un *)&cfg.addr;
        if (strlen(cfg.unix_path) >= sizeof sun->sun_path) {
            fprintf(stderr, "loadgen: Unix path too long\n");
            return -1;
        }
        sun->sun_family = AF_UNIX;
        strcpy(sun->sun_path, cfg.unix_path);
        cfg.addrlen = sizeof *sun;
        cfg.family = AF_UNIX;
        return 0;
    }
    if (cfg.port <= 0 || cfg.port > 65535) {
        fprintf(stderr, "loadgen: give --port or --unix\n");
        return -1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    char port[16];
    snprintf(port, sizeof port, "%d", cfg.port);
    int rc = getaddrinfo(cfg.host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "loadgen: %s: %s\n", cfg.host, gai_strerror(rc));
        return -1;
    }
    memcpy(&cfg.addr, res->ai_addr, res->ai_addrlen);
    cfg.addrlen = res->ai_addrlen;
    cfg.family = res->ai_family;
    freeaddrinfo(res);
    return 0;
}

static void pin(const char *spec)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    char *copy = strdup(spec), *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        CPU_SET(atoi(tok), &set);
    free(copy);
    if (sched_setaffinity(0, sizeof set, &set) < 0)
        fprintf(stderr, "loadgen: sched_setaffinity(%s): %s\n", spec, strerror(errno));
}

static void print_us(const char *name, double ns, int comma)
{
    printf("\"%s\": %.3f%s", name, ns / 1000.0, comma ? ", " : "");
}

int main(int argc, char **argv)
{
    enum { O_CT = 256, O_CC, O_HOLD, O_PING, O_LINGER, O_CPU };
    static const struct option opts[] = {
        {"mode", required_argument, 0, 'm'},     {"host", required_argument, 0, 'H'},
        {"port", required_argument, 0, 'p'},     {"unix", required_argument, 0, 'u'},
        {"connections", required_argument, 0, 'c'}, {"size", required_argument, 0, 's'},
        {"depth", required_argument, 0, 'D'},    {"warmup", required_argument, 0, 'w'},
        {"duration", required_argument, 0, 'd'}, {"timeout", required_argument, 0, 'T'},
        {"threads", required_argument, 0, 't'},  {"connect-timeout", required_argument, 0, O_CT},
        {"connect-concurrency", required_argument, 0, O_CC},
        {"hold", required_argument, 0, O_HOLD},  {"ping", no_argument, 0, O_PING},
        {"linger0", no_argument, 0, O_LINGER},   {"cpu", required_argument, 0, O_CPU},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0},
    };
    const char *cpu = NULL;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:H:p:u:c:s:D:w:d:T:t:h", opts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            if (!strcmp(optarg, "echo"))
                cfg.mode = MODE_ECHO;
            else if (!strcmp(optarg, "idle"))
                cfg.mode = MODE_IDLE;
            else if (!strcmp(optarg, "churn"))
                cfg.mode = MODE_CHURN;
            else {
                fprintf(stderr, "loadgen: unknown mode %s\n", optarg);
                return 2;
            }
            break;
        case 'H': cfg.host = optarg; break;
        case 'p': cfg.port = atoi(optarg); break;
        case 'u': cfg.unix_path = optarg; break;
        case 'c': cfg.nconn = atoi(optarg); break;
        case 's': cfg.size = (size_t)strtoull(optarg, NULL, 10); break;
        case 'D': cfg.depth = atoi(optarg); break;
        case 'w': cfg.warmup = atof(optarg); break;
        case 'd': cfg.duration = atof(optarg); break;
        case 'T': cfg.timeout = atof(optarg); break;
        case 't': cfg.threads = atoi(optarg); break;
        case O_CT: cfg.connect_timeout = atof(optarg); break;
        case O_CC: cfg.connect_concurrency = atoi(optarg); break;
        case O_HOLD: cfg.hold = atof(optarg); break;
        case O_PING: cfg.ping = 1; break;
        case O_LINGER: cfg.linger0 = 1; break;
        case O_CPU: cpu = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (cfg.nconn < 1 || cfg.size < 1 || cfg.depth < 1 || cfg.threads < 1 ||
        cfg.connect_concurrency < 1 || cfg.duration < 0 || cfg.warmup < 0 ||
        cfg.timeout <= 0) {
        fprintf(stderr, "loadgen: bad arguments\n");
        usage(stderr);
        return 2;
    }
    if (cfg.threads > cfg.nconn)
        cfg.threads = cfg.nconn;
    if (resolve() < 0)
        return 2;
    if (cpu)
        pin(cpu);

    /* the open-file limit: raise the soft limit to the hard one, say when it binds */
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
    getrlimit(RLIMIT_NOFILE, &rl);
    int limited = 0;
    if ((rlim_t)cfg.nconn + 16 > rl.rlim_cur) {
        fprintf(stderr, "loadgen: ulimit -n is %llu: using %llu connections, not %d\n",
                (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_cur - 16,
                cfg.nconn);
        cfg.nconn = (int)rl.rlim_cur - 16;
        limited = 1;
    }

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    g_sendbuf_len = cfg.size < 262144 ? cfg.size : 262144;
    g_sendbuf = malloc(g_sendbuf_len);
    if (!g_sendbuf) {
        perror("loadgen: malloc");
        return 2;
    }
    memset(g_sendbuf, 'x', g_sendbuf_len);

    worker_t *workers = calloc((size_t)cfg.threads, sizeof(worker_t));
    pthread_barrier_init(&g_connected, NULL, (unsigned)cfg.threads + 1);
    for (int i = 0; i < cfg.threads; i++) {
        worker_t *w = &workers[i];
        w->id = i;
        w->n = cfg.nconn / cfg.threads + (i < cfg.nconn % cfg.threads ? 1 : 0);
        w->conns = calloc((size_t)w->n, sizeof(conn_t));
        w->ts = calloc((size_t)w->n * (size_t)cfg.depth, sizeof(uint64_t));
        w->rbuf_len = 262144;
        w->rbuf = malloc(w->rbuf_len);
        w->epfd = epoll_create1(EPOLL_CLOEXEC);
        w->cc_limit = cfg.connect_concurrency / cfg.threads;
        if (w->cc_limit < 1)
            w->cc_limit = 1;
        if (!w->conns || !w->ts || !w->rbuf || w->epfd < 0) {
            perror("loadgen: set-up");
            return 2;
        }
        for (int k = 0; k < w->n; k++)
            w->conns[k].fd = -1;
        hist_init(&w->hist);
    }

    uint64_t t_connect = now_ns();
    for (int i = 0; i < cfg.threads; i++)
        pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]);
    pthread_barrier_wait(&g_connected);
    double connect_s = (double)(now_ns() - t_connect) / 1e9;
    uint64_t established = 0, connect_errors = 0;
    for (int i = 0; i < cfg.threads; i++) {
        established += workers[i].established;
        connect_errors += workers[i].connect_errors;
    }
    fprintf(stderr, "@ready established=%llu connect_errors=%llu connect_s=%.3f\n",
            (unsigned long long)established, (unsigned long long)connect_errors, connect_s);
    set_phase(cfg.mode == MODE_IDLE ? PH_MEASURE : PH_WARMUP);
    pthread_barrier_wait(&g_connected);

    uint64_t t_measure = 0, t_end;
    if (cfg.mode == MODE_IDLE) {
        t_measure = now_ns();
        uint64_t until = cfg.hold > 0 ? t_measure + (uint64_t)(cfg.hold * 1e9) : UINT64_MAX;
        while (!g_signalled && now_ns() < until)
            sleep_ns(20000000ull);
    } else {
        sleep_ns((uint64_t)(cfg.warmup * 1e9));
        if (!g_signalled) {
            t_measure = now_ns();
            set_phase(PH_MEASURE);
            fprintf(stderr, "@measure\n");
            uint64_t until = t_measure + (uint64_t)(cfg.duration * 1e9);
            while (!g_signalled && now_ns() < until)
                sleep_ns(until - now_ns() < 20000000ull ? until - now_ns() : 20000000ull);
        } else {
            t_measure = now_ns();
        }
    }
    t_end = now_ns();
    set_phase(PH_STOP);
    fprintf(stderr, "@done\n");
    for (int i = 0; i < cfg.threads; i++)
        pthread_join(workers[i].tid, NULL);

    hist_t total;
    hist_init(&total);
    uint64_t requests = 0, bytes = 0, errors = 0, timeouts = 0, closed = 0, retries = 0;
    connect_errors = 0;
    for (int i = 0; i < cfg.threads; i++) {
        worker_t *w = &workers[i];
        hist_merge(&total, &w->hist);
        requests += w->requests;
        bytes += w->bytes;
        errors += w->errors;
        timeouts += w->timeouts;
        closed += w->closed_by_peer;
        connect_errors += w->connect_errors;
        retries += w->connect_retries;
    }
    double secs = (double)(t_end - t_measure) / 1e9;
    static const char *names[] = {"echo", "idle", "churn"};
    printf("{\"mode\": \"%s\", ", names[cfg.mode]);
    if (cfg.unix_path)
        printf("\"target\": \"unix:%s\", ", cfg.unix_path);
    else
        printf("\"target\": \"%s:%d\", ", cfg.host, cfg.port);
    printf("\"connections\": %d, \"limited_by_ulimit\": %s, \"established\": %llu, "
           "\"threads\": %d, \"size\": %zu, \"depth\": %d, \"warmup_s\": %.3f, "
           "\"duration_s\": %.6f, \"connect_s\": %.6f, ",
           cfg.nconn, limited ? "true" : "false", (unsigned long long)established,
           cfg.threads, cfg.size, cfg.depth, cfg.warmup, secs, connect_s);
    printf("\"requests\": %llu, \"bytes\": %llu, \"rps\": %.3f, \"mib_s\": %.4f, ",
           (unsigned long long)requests, (unsigned long long)bytes,
           secs > 0 ? (double)requests / secs : 0.0,
           secs > 0 ? (double)bytes / secs / 1048576.0 : 0.0);
    printf("\"errors\": %llu, \"timeouts\": %llu, \"connect_errors\": %llu, "
           "\"connect_retries\": %llu, \"closed_by_peer\": %llu, ",
           (unsigned long long)errors, (unsigned long long)timeouts,
           (unsigned long long)connect_errors, (unsigned long long)retries,
           (unsigned long long)closed);
    printf("\"latency_us\": {");
    printf("\"count\": %llu, ", (unsigned long long)total.count);
    print_us("min", total.count ? (double)total.min : 0.0, 1);
    print_us("mean", total.count ? total.sum / (double)total.count : 0.0, 1);
    print_us("p50", (double)hist_quantile(&total, 0.50), 1);
    print_us("p90", (double)hist_quantile(&total, 0.90), 1);
    print_us("p99", (double)hist_quantile(&total, 0.99), 1);
    print_us("p999", (double)hist_quantile(&total, 0.999), 1);
    print_us("max", (double)total.max, 0);
    printf("}}\n");
    fflush(stdout);
    return 0;
}
