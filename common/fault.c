#include "common/fault.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

atomic_int fault_armed_ = 1; /* "maybe": the first point reads the environment */

static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static char armed[512];     /* DA3_FAULT, as given (a comma list) */
static char once_path[512]; /* DA3_FAULT_ONCE; "" fires every time */

static void read_env(void) {
    const char *names = getenv("DA3_FAULT"), *once = getenv("DA3_FAULT_ONCE");
    if (names && *names && strlen(names) < sizeof armed) strcpy(armed, names);
    if (once && strlen(once) < sizeof once_path) strcpy(once_path, once);
    atomic_store(&fault_armed_, armed[0] != 0);
}

/* 1 when name is one of the comma-separated entries of list. */
static int listed(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; *p;) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len == n && !memcmp(p, name, n)) return 1;
        if (!end) break;
        p = end + 1;
    }
    return 0;
}

void fault_point_check(const char *name) {
    pthread_once(&env_once, read_env);
    if (!armed[0] || !listed(armed, name)) return;
    if (once_path[0]) {
        /* The marker outlives this process: a restarted worker retrying the job, or a restarted
         * front reloading the session, runs through the point. */
        int fd = open(once_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (fd < 0) {
            if (errno != EEXIST) log_warn("fault point %s: cannot create %s (%s); not stopping", name, once_path, strerror(errno));
            return;
        }
        close(fd);
    }
    log_warn("fault point %s reached: stopping for the test", name);
    raise(SIGSTOP);
}
