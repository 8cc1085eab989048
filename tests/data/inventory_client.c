/*
 * inventory_client.c: a C client of inventory.x, linked with the stubs rpcgen makes
 * from that file and with libtirpc. tests/test_rpc_rpcgen.py builds and runs it
 * against the Python server that reads the same .x file.
 *
 * usage: inventory_client HOST PORT tcp|udp
 * It prints one line per call, in a form the test compares word for word.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <rpc/rpc.h>

#include "inventory.h"

static CLIENT *connect_to(const char *host, int port, const char *proto,
                          unsigned long vers)
{
    struct sockaddr_in addr;
    int sock = RPC_ANYSOCK;
    CLIENT *clnt;

    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &addr.sin_addr) != 1) {
        fprintf(stderr, "bad address %s\n", host);
        exit(2);
    }
    if (strcmp(proto, "tcp") == 0) {
        clnt = clnttcp_create(&addr, INVENTORY_PROG, vers, &sock, 0, 0);
    } else {
        struct timeval wait = {1, 0};
        clnt = clntudp_create(&addr, INVENTORY_PROG, vers, wait, &sock);
    }
    if (clnt == NULL) {
        clnt_pcreateerror(host);
        exit(2);
    }
    auth_destroy(clnt->cl_auth);
    clnt->cl_auth = authunix_create_default();  /* AUTH_SYS: uid, gids, host name */
    return clnt;
}

static void fail(CLIENT *clnt, const char *what)
{
    clnt_perror(clnt, what);
    exit(3);
}

static void print_item(const item *it)
{
    int i;

    printf(" %s %d %u %lld %.2f %d [%s] ", it->name, (int)it->kind, it->count,
           (long long)it->serial, it->weight, (int)it->fragile, it->tags);
    for (i = 0; i < 16; i++)
        printf("%02x", (unsigned char)it->sum[i]);
}

static item make_item(char *name, kind k, u_int count, int fragile, char *tags)
{
    item it;
    int i;

    memset(&it, 0, sizeof it);
    it.name = name;
    it.kind = k;
    it.count = count;
    it.serial = -7 - (quad_t)count * 1000000000000LL;
    it.weight = 1.25 * count;
    it.fragile = fragile;
    it.tags = tags;
    for (i = 0; i < 16; i++)
        it.sum[i] = (char)(i * 17);
    return it;
}

int main(int argc, char **argv)
{
    CLIENT *v1, *v2, *v9;
    status *st;
    lookup_result *found;
    itemlist *list;
    stock_report *report;
    itemchain *chain;
    itemnode *node;
    int *count;
    u_int i;
    struct rpc_err err;
    struct timeval wait = {5, 0};
    char *names[] = {"hammer", "saw", "drill"};
    char *nope = "nope", *empty = "";

    if (argc != 4) {
        fprintf(stderr, "usage: %s HOST PORT tcp|udp\n", argv[0]);
        return 2;
    }
    v1 = connect_to(argv[1], atoi(argv[2]), argv[3], INVENTORY_V1);
    v2 = connect_to(argv[1], atoi(argv[2]), argv[3], INVENTORY_V2);

    if (inventory_null_1(v1) == NULL)
        fail(v1, "null");
    printf("null ok\n");

    for (i = 0; i < 3; i++) {
        item it = make_item(names[i], i == 1 ? PART : TOOL, i + 1, i == 0, "red,blue");
        st = add_item_1(it, v1);
        if (st == NULL)
            fail(v1, "add");
        printf("add %s %d\n", names[i], (int)*st);
    }

    found = find_item_1(names[0], v1);
    if (found == NULL)
        fail(v1, "find");
    printf("find %s %d", names[0], (int)found->code);
    print_item(&found->lookup_result_u.found);
    printf("\n");
    found = find_item_2(nope, v2);
    if (found == NULL)
        fail(v2, "find");
    printf("find %s %d\n", nope, (int)found->code);
    found = find_item_2(empty, v2);
    if (found == NULL)
        fail(v2, "find");
    printf("find '' %d %s\n", (int)found->code, found->lookup_result_u.reason);

    list = list_items_1(v1);
    if (list == NULL)
        fail(v1, "list");
    printf("list %u", list->itemlist_len);
    for (i = 0; i < list->itemlist_len; i++)
        printf(" %s", list->itemlist_val[i].name);
    printf("\n");

    report = report_2(TOOL, v2);
    if (report == NULL)
        fail(v2, "report");
    printf("report %llu %.3f %u %d %d %d %d %d\n", (unsigned long long)report->total,
           report->average_weight, report->items.itemlist_len, report->levels[0],
           report->levels[1], report->levels[2], report->range.low, report->range.high);

    chain = chain_2(5, v2);
    if (chain == NULL)
        fail(v2, "chain");
    printf("chain");
    for (node = *chain; node != NULL; node = node->next)
        printf(" %s", node->entry.name);
    printf("\n");
    chain = chain_2(0, v2);
    if (chain == NULL)
        fail(v2, "chain");
    printf("chain %s\n", *chain == NULL ? "empty" : "not empty");

    count = count_kind_2(TOOL, TRUE, v2);
    if (count == NULL)
        fail(v2, "count");
    printf("count %d\n", *count);

    /* a version the server does not have: PROG_MISMATCH and its range */
    v9 = connect_to(argv[1], atoi(argv[2]), argv[3], 9);
    if (clnt_call(v9, 0, (xdrproc_t)xdr_void, NULL, (xdrproc_t)xdr_void, NULL, wait)
            != RPC_PROGVERSMISMATCH) {
        fprintf(stderr, "version 9 was not refused\n");
        return 3;
    }
    clnt_geterr(v9, &err);
    printf("mismatch %lu %lu\n", (unsigned long)err.re_vers.low,
           (unsigned long)err.re_vers.high);

    clnt_destroy(v9);
    clnt_destroy(v2);
    clnt_destroy(v1);
    return 0;
}
