/* The front process's shared state: options, the shared-memory queue, the CivetWeb context. */
#ifndef DA3_SERVER_H
#define DA3_SERVER_H

#include "frontend/options.h"
#include "shm/shm_queue.h"

struct mg_context;

typedef struct {
    server_options opt;
    shmq *q;
    char shm_name[64];
    struct mg_context *ctx;
    double started_mono;
    volatile int stopping;
} server_state;

extern server_state g_server;

#endif
