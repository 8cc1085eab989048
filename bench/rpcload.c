/*
 * rpcload: the Sun RPC load generator of python -m bench.rpc (one thread, epoll).
 *
 * The call is given whole, already encoded (--call HEX: the RPC message without the
 * record mark, as bench/rpc.py encodes it); every call sent is a copy with its own
 * xid (a counter over the whole run), so no two calls are the same (a server's
 * duplicate-request cache never answers one).
 *
 *   tcp  N connections, DEPTH calls in flight on each (pipelined): each call is one
 *        record (record marking, one fragment); a reply read is a request done, and
 *        another call goes out.
 *   udp  N sockets (N client ports), DEPTH calls in flight on each, one call per
 *        datagram; when a socket hears nothing for TIMEOUT seconds its calls in
 *        flight are counted lost ("timeouts") and sent again with new xids.
 *
 * A reply counts when it is MSG_ACCEPTED with SUCCESS; any other reply is an error.
 * Progress events on stderr ("@ready", "@measure", "@done") as bench/loadgen.c prints
 * them; the result is one JSON object on stdout.
 *
 * Build:  cc -O2 -Wall -Wextra -o bench/bin/rpcload bench/rpcload.c
 */
#include "cbench.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define RBUF 65536

static struct {
    int udp;
    int depth;
} cfg = {0, 4};

typedef struct {
    int fd;
    int inflight;
    int in_reply;     /* tcp: a reply's first fragment read, its last not yet */
    uint8_t *out;     /* tcp: calls waiting to be written */
    size_t out_len, out_off;
    uint8_t *in;      /* tcp: bytes read, not yet a whole fragment */
    size_t in_len;
    uint64_t last;    /* udp: when a reply last came (or the calls went out) */
    uint32_t events;
} conn_t;

static conn_t *g_conns;
static uint8_t *g_call; /* the call message (no record mark) */
static size_t g_call_len;
static uint32_t g_xid = 1;
static int g_epfd, g_measuring, g_stopping;
static uint64_t g_requests, g_errors, g_timeouts, g_connect_errors, g_established, g_late;
static uint8_t g_dgram[RBUF];

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* whether a reply (its first bytes: len of them) is MSG_ACCEPTED with SUCCESS */
static int reply_ok(const uint8_t *p, size_t len)
{
    if (len < 24 || be32(p + 4) != 1 || be32(p + 8) != 0)
        return 0;
    size_t verf = (be32(p + 16) + 3u) & ~3u;
    if (len < 24 + verf)
        return 0;
    return be32(p + 20 + verf) == 0;
}

static void watch(int idx, uint32_t events, int op)
{
    if (op == EPOLL_CTL_MOD && g_conns[idx].events == events)
        return;
    struct epoll_event ev = {.events = events, .data = {.u32 = (uint32_t)idx}};
    epoll_ctl(g_epfd, op, g_conns[idx].fd, &ev);
    g_conns[idx].events = events;
}

static void dead(int idx)
{
    conn_t *c = &g_conns[idx];
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    c->inflight = 0;
}

/* ---- tcp ------------------------------------------------------------------------ */

static void tcp_queue(conn_t *c, int count)
{
    if (c->out_off > 0) { /* room at the end: calls in flight, written or not, <= depth */
        memmove(c->out, c->out + c->out_off, c->out_len - c->out_off);
        c->out_len -= c->out_off;
        c->out_off = 0;
    }
    for (int k = 0; k < count; k++) {
        uint8_t *rec = c->out + c->out_len;
        put32(rec, 0x80000000u | (uint32_t)g_call_len);
        memcpy(rec + 4, g_call, g_call_len);
        put32(rec + 4, g_xid++);
        c->out_len += 4 + g_call_len;
        c->inflight++;
    }
}

static void tcp_flush(int idx)
{
    conn_t *c = &g_conns[idx];
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n > 0) {
            c->out_off += (size_t)n;
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
            watch(idx, EPOLLIN | EPOLLOUT, EPOLL_CTL_MOD);
            return;
        }
        g_errors++;
        dead(idx);
        return;
    }
    c->out_off = c->out_len = 0;
    watch(idx, EPOLLIN, EPOLL_CTL_MOD);
}

/* the whole fragments in c->in; returns the replies completed (*bad of them not
 * SUCCESS), -1 on a broken stream */
static int tcp_parse(conn_t *c, int *bad)
{
    size_t at = 0;
    int done = 0;
    *bad = 0;
    while (c->in_len - at >= 4) {
        uint32_t mark = be32(c->in + at);
        size_t len = mark & 0x7fffffffu;
        if (len + 4 > RBUF)
            return -1;
        if (c->in_len - at < 4 + len)
            break;
        if (!c->in_reply && !reply_ok(c->in + at + 4, len))
            (*bad)++;
        c->in_reply = !(mark & 0x80000000u);
        if (!c->in_reply)
            done++;
        at += 4 + len;
    }
    memmove(c->in, c->in + at, c->in_len - at);
    c->in_len -= at;
    return done;
}

static void tcp_readable(int idx)
{
    conn_t *c = &g_conns[idx];
    ssize_t n = recv(c->fd, c->in + c->in_len, RBUF - c->in_len, 0);
    if (n <= 0) {
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return;
        g_errors++;
        dead(idx);
        return;
    }
    c->in_len += (size_t)n;
    int bad;
    int done = tcp_parse(c, &bad);
    if (done < 0) {
        g_errors++;
        dead(idx);
        return;
    }
    c->inflight -= done;
    g_errors += (uint64_t)bad;
    if (g_measuring)
        g_requests += (uint64_t)(done - bad);
    if (!g_stopping && done > 0) {
        tcp_queue(c, done);
        tcp_flush(idx);
    }
}

/* ---- udp ------------------------------------------------------------------------ */

static void udp_send(int idx, int count)
{
    conn_t *c = &g_conns[idx];
    for (int k = 0; k < count; k++) {
        put32(g_call, g_xid++);
        if (send(c->fd, g_call, g_call_len, 0) < 0 && errno != EAGAIN && errno != ENOBUFS &&
            errno != ECONNREFUSED) {
            g_errors++;
            continue;
        }
        c->inflight++; /* a datagram not sent is lost like one dropped: the scan resends */
    }
    c->last = now_ns();
}

static void udp_readable(int idx)
{
    conn_t *c = &g_conns[idx];
    for (;;) {
        ssize_t n = recv(c->fd, g_dgram, sizeof g_dgram, MSG_DONTWAIT);
        if (n < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNREFUSED)
                g_errors++;
            return;
        }
        if (c->inflight == 0) {
            g_late++; /* a reply to a call already counted lost */
            continue;
        }
        c->inflight--;
        c->last = now_ns();
        if (!reply_ok(g_dgram, (size_t)n))
            g_errors++;
        else if (g_measuring)
            g_requests++;
        if (!g_stopping)
            udp_send(idx, 1);
    }
}

static void udp_scan(uint64_t t)
{
    uint64_t limit = (uint64_t)(common.timeout * 1e9);
    for (int i = 0; i < common.n; i++) {
        conn_t *c = &g_conns[i];
        if (c->fd < 0 || c->inflight == 0 || t - c->last < limit)
            continue;
        g_timeouts += (uint64_t)c->inflight;
        int again = c->inflight;
        c->inflight = 0;
        udp_send(i, again);
    }
}

/* ---- the run -------------------------------------------------------------------- */

static void run_for(double seconds)
{
    struct epoll_event events[256];
    uint64_t until = now_ns() + (uint64_t)(seconds * 1e9);
    while (!g_signalled && now_ns() < until) {
        int n = epoll_wait(g_epfd, events, 256, 5);
        for (int i = 0; i < n; i++) {
            int idx = (int)events[i].data.u32;
            if (g_conns[idx].fd < 0)
                continue;
            if (cfg.udp) {
                udp_readable(idx);
            } else {
                if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP))
                    tcp_readable(idx);
                if (g_conns[idx].fd >= 0 && (events[i].events & EPOLLOUT))
                    tcp_flush(idx);
            }
        }
        if (cfg.udp)
            udp_scan(now_ns());
    }
}

static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

static int parse_call(const char *hex)
{
    size_t len = strlen(hex);
    if (len < 48 || len % 2 || len / 2 > 8192)
        return -1;
    g_call_len = len / 2;
    g_call = malloc(g_call_len);
    for (size_t i = 0; i < g_call_len; i++) {
        int hi = hexval(hex[2 * i]), lo = hexval(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        g_call[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int open_conn(int idx, const struct sockaddr_in *addr)
{
    conn_t *c = &g_conns[idx];
    c->fd = socket(AF_INET, (cfg.udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, (const struct sockaddr *)addr, sizeof *addr) < 0) {
        dead(idx);
        return -1;
    }
    if (!cfg.udp) {
        int one = 1;
        setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        c->out = malloc((size_t)cfg.depth * (4 + g_call_len));
        c->in = malloc(RBUF);
        if (!c->out || !c->in) {
            perror("rpcload: malloc");
            exit(2);
        }
    }
    if (fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK) < 0) {
        dead(idx);
        return -1;
    }
    watch(idx, EPOLLIN, EPOLL_CTL_ADD);
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: rpcload -m tcp|udp [-H 127.0.0.1] -p PORT --call HEX [-c N] [-D DEPTH]\n"
                 "               [-w WARMUP_S] [-d DURATION_S] [-T UDP_TIMEOUT_S] [--cpu N]\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"mode", required_argument, 0, 'm'}, {"depth", required_argument, 0, 'D'},
        {"call", required_argument, 0, 'K'}, COMMON_LONG_OPTIONS,
    };
    const char *call = NULL;
    common.timeout = 0.2;
    int ch;
    while ((ch = getopt_long(argc, argv, "m:D:" COMMON_SHORT_OPTIONS, opts, NULL)) != -1) {
        if (common_option(ch, optarg))
            continue;
        switch (ch) {
        case 'm': cfg.udp = !strcmp(optarg, "udp"); break;
        case 'D': cfg.depth = atoi(optarg); break;
        case 'K': call = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    struct sockaddr_in addr;
    if (cfg.depth < 1 || !call || parse_call(call) < 0 || common_setup(&addr) < 0) {
        usage(stderr);
        return 2;
    }
    g_conns = calloc((size_t)common.n, sizeof(conn_t));
    g_epfd = epoll_create1(EPOLL_CLOEXEC);
    if (!g_conns || g_epfd < 0) {
        perror("rpcload: set-up");
        return 2;
    }
    uint64_t t0 = now_ns();
    for (int i = 0; i < common.n; i++) {
        if (open_conn(i, &addr) < 0)
            g_connect_errors++;
        else
            g_established++;
    }
    fprintf(stderr, "@ready established=%llu connect_errors=%llu connect_s=%.3f\n",
            (unsigned long long)g_established, (unsigned long long)g_connect_errors,
            (double)(now_ns() - t0) / 1e9);
    for (int i = 0; i < common.n; i++) {
        if (g_conns[i].fd < 0)
            continue;
        if (cfg.udp) {
            udp_send(i, cfg.depth);
        } else {
            tcp_queue(&g_conns[i], cfg.depth);
            tcp_flush(i);
        }
    }
    run_for(common.warmup);
    g_measuring = 1;
    fprintf(stderr, "@measure\n");
    uint64_t t_measure = now_ns();
    run_for(common.duration);
    double secs = (double)(now_ns() - t_measure) / 1e9;
    g_measuring = 0;
    g_stopping = 1;
    fprintf(stderr, "@done\n");
    for (int i = 0; i < common.n; i++)
        dead(i);
    printf("{\"mode\": \"%s\", \"target\": \"%s:%d\", \"connections\": %d, \"depth\": %d, "
           "\"call_bytes\": %zu, \"established\": %llu, \"duration_s\": %.6f, "
           "\"requests\": %llu, \"rps\": %.3f, \"errors\": %llu, \"timeouts\": %llu, "
           "\"late\": %llu, \"connect_errors\": %llu}\n",
           cfg.udp ? "udp" : "tcp", common.host, common.port, common.n, cfg.depth, g_call_len,
           (unsigned long long)g_established, secs, (unsigned long long)g_requests,
           secs > 0 ? (double)g_requests / secs : 0.0, (unsigned long long)g_errors,
           (unsigned long long)g_timeouts, (unsigned long long)g_late,
           (unsigned long long)g_connect_errors);
    fflush(stdout);
    return 0;
}
