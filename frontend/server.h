/* The front process's shared state: options, the shared-memory queue, the CivetWeb context. */
#ifndef DA3_SERVER_H
#define DA3_SERVER_H

#include <stdatomic.h>

#include "frontend/options.h"
#include "shm/shm_queue.h"

struct mg_context;

typedef struct {
    server_options opt;
    shmq *q;
    char shm_name[64];
    struct mg_context *ctx;
    double started_mono;
    atomic_int stopping;     /* set once by the main thread at shutdown, read by every loop */
    char front_secret[65];   /* random per start: marks requests the loop forwards (http_api.h) */
} server_state;

extern server_state g_server;

#endif
