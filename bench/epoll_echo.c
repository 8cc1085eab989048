/*
 * epoll_echo: the benchmark's floor, a minimal echo server in C.
 *
 * What a Python event loop is compared against when its own cost is taken away: one
 * thread, one level-triggered epoll set, no timers, no deadlines, no connection table
 * beyond the little each connection needs to finish a short write.
 *
 *   - The listener is accepted from in a loop with accept4(SOCK_NONBLOCK) until EAGAIN,
 *     so an accepted socket costs no extra call to make it non-blocking.
 *   - A readable connection gets one recv() into one fixed buffer (shared: the server
 *     has one thread and echoes before it reads again), and what was read is sent back
 *     at once.  What a short send leaves is copied to the connection and the interest
 *     changes to EPOLLOUT alone until it is drained: the connection is not read while
 *     it owes bytes, so a slow reader holds at most one read's worth.
 *   - EOF, an error or a hang-up closes the connection; close() also takes it out of
 *     the epoll set (nobody else holds the descriptor).
 *
 * Like the benchmark's Python servers (bench/servers.py) it binds HOST:PORT (port 0:
 * the kernel picks), prints "PORT <n>" on stdout, sets TCP_NODELAY on accepted sockets,
 * listens with a backlog of 1024, reads at most 256 KiB at a time, raises the open-file
 * soft limit to the hard one, and exits 0 on SIGTERM or SIGINT.
 *
 * Usage:  epoll_echo PORT [HOST]          (HOST defaults to 127.0.0.1)
 * Build:  cc -O2 -Wall -Wextra -o bench/bin/epoll_echo bench/epoll_echo.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define BACKLOG 1024
#define READ_SIZE (256 * 1024) /* bench.servers.READ_SIZE */
#define MAX_EVENTS 1024
#define EMFILE_PAUSE_MS 100

/* One connection: its descriptor and what a short send left to write. */
typedef struct {
    int fd;
    char *pending;
    size_t len, off;
} conn_t;

static volatile sig_atomic_t g_stop = 0;
static char g_buf[READ_SIZE];

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static void conn_close(conn_t *c)
{
    close(c->fd); /* leaves the epoll set by itself: no EPOLL_CTL_DEL */
    free(c->pending);
    free(c);
}

static int set_interest(int epfd, conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    return epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Send buf[0:len]; keep what the kernel did not take and wait for EPOLLOUT.
 * Returns -1 when the connection must be closed. */
static int echo(int epfd, conn_t *c, const char *buf, size_t len)
{
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        n = 0;
    }
    if ((size_t)n == len)
        return 0;
    c->pending = malloc(len - (size_t)n);
    if (c->pending == NULL)
        return -1;
    memcpy(c->pending, buf + n, len - (size_t)n);
    c->len = len - (size_t)n;
    c->off = 0;
    return set_interest(epfd, c, EPOLLOUT);
}

static int on_readable(int epfd, conn_t *c)
{
    ssize_t n = recv(c->fd, g_buf, sizeof g_buf, 0);
    if (n > 0)
        return echo(epfd, c, g_buf, (size_t)n);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0; /* level-triggered: it will be reported again */
    return -1;    /* EOF or an error */
}

static int on_writable(int epfd, conn_t *c)
{
    ssize_t n = send(c->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
    if (n < 0)
        return (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 0 : -1;
    c->off += (size_t)n;
    if (c->off < c->len)
        return 0;
    free(c->pending);
    c->pending = NULL;
    c->len = c->off = 0;
    return set_interest(epfd, c, EPOLLIN); /* drained: read again */
}

/* Accept until EAGAIN.  Returns 1 when out of descriptors: the caller stops watching
 * the listener for a while instead of being woken for it at once, forever. */
static int on_accept(int epfd, int lfd)
{
    static const int one = 1;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == ECONNABORTED || errno == EINTR)
                continue; /* that one gave up; others may be queued */
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
                return 1;
            return 0; /* EAGAIN: the queue is empty */
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        conn_t *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0)
            conn_close(c);
    }
}

static int listen_on(const char *host, int port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
        fprintf(stderr, "epoll_echo: not an IPv4 address: %s\n", host);
        return -1;
    }
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0
        || bind(fd, (struct sockaddr *)&sin, sizeof sin) < 0 || listen(fd, BACKLOG) < 0) {
        perror("epoll_echo: listen");
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: epoll_echo PORT [HOST]\n");
        return 2;
    }
    char *end;
    long port = strtol(argv[1], &end, 10);
    if (*end != '\0' || port < 0 || port > 65535) {
        fprintf(stderr, "epoll_echo: bad port: %s\n", argv[1]);
        return 2;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }

    /* SIGTERM/SIGINT are blocked except inside epoll_pwait: a signal that arrives
     * between the check of g_stop and the wait interrupts the wait (EINTR) instead of
     * being noticed only at the next event. */
    sigset_t stop_signals, waiting;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    sigprocmask(SIG_BLOCK, &stop_signals, &waiting);
    sigdelset(&waiting, SIGTERM);
    sigdelset(&waiting, SIGINT);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = listen_on(argc == 3 ? argv[2] : "127.0.0.1", (int)port);
    int epfd = epoll_create1(EPOLL_CLOEXEC);
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL}; /* NULL: listener */
    if (lfd < 0 || epfd < 0 || epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) < 0) {
        if (epfd < 0 || lfd >= 0)
            perror("epoll_echo: epoll");
        return 1;
    }
    struct sockaddr_in bound;
    socklen_t blen = sizeof bound;
    getsockname(lfd, (struct sockaddr *)&bound, &blen);
    printf("PORT %d\n", ntohs(bound.sin_port)); /* how bench.measure learns the port */
    fflush(stdout);

    static struct epoll_event events[MAX_EVENTS];
    long resume_at = -1; /* out of descriptors: the listener is muted until then (ms) */
    while (!g_stop) {
        int timeout = -1;
        if (resume_at >= 0) {
            long left = resume_at - now_ms();
            timeout = left > 0 ? (int)left : 0;
        }
        int n = epoll_pwait(epfd, events, MAX_EVENTS, timeout, &waiting);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("epoll_echo: epoll_pwait");
            return 1;
        }
        if (resume_at >= 0 && now_ms() >= resume_at) {
            resume_at = -1;
            lev.events = EPOLLIN;
            epoll_ctl(epfd, EPOLL_CTL_MOD, lfd, &lev);
        }
        for (int i = 0; i < n; i++) {
            conn_t *c = events[i].data.ptr;
            uint32_t ev = events[i].events;
            if (c == NULL) {
                if (on_accept(epfd, lfd)) {
                    resume_at = now_ms() + EMFILE_PAUSE_MS;
                    lev.events = 0;
                    epoll_ctl(epfd, EPOLL_CTL_MOD, lfd, &lev);
                }
                continue;
            }
            int rc;
            if (ev & EPOLLOUT)
                rc = on_writable(epfd, c);
            else if (ev & EPOLLIN)
                rc = on_readable(epfd, c); /* EOF and errors: as recv()'s result */
            else
                rc = -1; /* EPOLLERR or EPOLLHUP alone */
            if (rc < 0)
                conn_close(c);
        }
    }
    /* the connections are left to exit(): the kernel closes their descriptors */
    close(lfd);
    close(epfd);
    return 0;
}
