/*
 * cbench.h: what the C clients of python -m bench.tls (bench/tlsload.c) and python -m
 * bench.rpc (bench/rpcload.c) share: the clock, the stop signals, the options every
 * one takes and the set-up they imply.  A header of static functions, included once
 * by each client (each is a single file).
 */
#ifndef CBENCH_H
#define CBENCH_H

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the options every client takes */
typedef struct {
    const char *host;
    int port;
    int n;              /* connections, slots or sockets */
    double warmup, duration, timeout;
    const char *cpu;
} common_t;

static common_t common = {"127.0.0.1", 0, 100, 1.0, 5.0, 5.0, NULL};
static volatile sig_atomic_t g_signalled;

/* their long forms (a client lists its own first) and short ones */
#define COMMON_LONG_OPTIONS                                                               \
    {"host", required_argument, 0, 'H'}, {"port", required_argument, 0, 'p'},             \
        {"connections", required_argument, 0, 'c'}, {"warmup", required_argument, 0, 'w'}, \
        {"duration", required_argument, 0, 'd'}, {"timeout", required_argument, 0, 'T'},  \
        {"cpu", required_argument, 0, 'C'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}
#define COMMON_SHORT_OPTIONS "H:p:c:w:d:T:h"

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig)
{
    (void)sig;
    g_signalled = 1;
}

/* option ch (its argument arg) into common; 0 when it is not a common option */
static int common_option(int ch, const char *arg)
{
    switch (ch) {
    case 'H': common.host = arg; return 1;
    case 'p': common.port = atoi(arg); return 1;
    case 'c': common.n = atoi(arg); return 1;
    case 'w': common.warmup = atof(arg); return 1;
    case 'd': common.duration = atof(arg); return 1;
    case 'T': common.timeout = atof(arg); return 1;
    case 'C': common.cpu = arg; return 1;
    default: return 0;
    }
}

/* check the common options, pin to --cpu, catch SIGTERM and SIGINT (g_signalled),
 * ignore SIGPIPE; the server's address in *addr; -1 on a bad option */
static int common_setup(struct sockaddr_in *addr)
{
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_port = htons((uint16_t)common.port);
    if (common.port <= 0 || common.port > 65535 || common.n < 1 || common.timeout <= 0 ||
        common.warmup < 0 || common.duration < 0 ||
        inet_pton(AF_INET, common.host, &addr->sin_addr) != 1)
        return -1;
    if (common.cpu) {
        cpu_set_t set;
        CPU_ZERO(&set);
        CPU_SET(atoi(common.cpu), &set);
        sched_setaffinity(0, sizeof set, &set);
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

#endif
