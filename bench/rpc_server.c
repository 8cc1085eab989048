/*
 * rpc_server: the C peer of python -m bench.rpc, a server of bench/rpcbench.x made by
 * rpcgen and run by libtirpc's svc_run.
 *
 * rpcgen writes the header, the XDR routines and the dispatch routine (rpcgen -m: no
 * main); this file holds the procedures and a main that serves TCP and UDP on one port
 * number of 127.0.0.1 (or the address given) without asking a portmapper (svc_register
 * with protocol 0), prints "PORT n" on stdout, and runs svc_run until SIGTERM.
 *
 * Build (bench/rpc.py does it, in bench/bin/rpcgen/):
 *   rpcgen -h -o rpcbench.h rpcbench.x; rpcgen -c -o rpcbench_xdr.c rpcbench.x
 *   rpcgen -m -o rpcbench_svc.c rpcbench.x
 *   cc -O2 -I/usr/include/tirpc -I. -o rpc_server rpc_server.c rpcbench_svc.c \
 *       rpcbench_xdr.c -ltirpc
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rpcbench.h"

void rpcbench_prog_1(struct svc_req *rqstp, SVCXPRT *transp);

void *rpcbench_null_1_svc(void *argp, struct svc_req *rqstp)
{
    static char nothing;
    (void)argp;
    (void)rqstp;
    return &nothing;
}

sample *bump_1_svc(sample *argp, struct svc_req *rqstp)
{
    static sample result;
    (void)rqstp;
    result = *argp;
    result.count += 1;
    return &result;
}

static void on_term(int sig)
{
    (void)sig;
    _exit(0);
}

/* a socket of TYPE bound to host:port; -1 (and a message) on failure */
static int bound(int type, const char *host, int port)
{
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "rpc_server: bad address %s\n", host);
        return -1;
    }
    int fd = socket(AF_INET, type, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = argc > 1 ? argv[1] : "127.0.0.1";
    int backlog = argc > 2 ? atoi(argv[2]) : 1024;
    int tcp = -1, udp = -1, port = 0;
    for (int tries = 0; tries < 20 && udp < 0; tries++) {
        /* the kernel picks the TCP port; UDP takes the same number when it is free */
        tcp = bound(SOCK_STREAM, host, 0);
        if (tcp < 0) {
            perror("rpc_server: tcp");
            return 2;
        }
        struct sockaddr_in got;
        socklen_t len = sizeof got;
        getsockname(tcp, (struct sockaddr *)&got, &len);
        port = ntohs(got.sin_port);
        udp = bound(SOCK_DGRAM, host, port);
        if (udp < 0)
            close(tcp);
    }
    if (udp < 0 || listen(tcp, backlog) < 0) {
        perror("rpc_server: udp or listen");
        return 2;
    }
    SVCXPRT *t = svctcp_create(tcp, 0, 0);
    SVCXPRT *u = svcudp_bufcreate(udp, 9000, 9000);
    if (t == NULL || u == NULL) {
        fprintf(stderr, "rpc_server: cannot create the transports\n");
        return 2;
    }
    /* protocol 0: no portmapper is asked */
    if (!svc_register(t, RPCBENCH_PROG, RPCBENCH_V1, rpcbench_prog_1, 0) ||
        !svc_register(u, RPCBENCH_PROG, RPCBENCH_V1, rpcbench_prog_1, 0)) {
        fprintf(stderr, "rpc_server: cannot register the program\n");
        return 2;
    }
    signal(SIGTERM, on_term);
    signal(SIGINT, on_term);
    printf("PORT %d\n", port);
    fflush(stdout);
    svc_run();
    fprintf(stderr, "rpc_server: svc_run returned\n");
    return 1;
}
