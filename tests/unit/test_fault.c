/* Fault points (common/fault.h), each case in a forked child with its own environment, since the
 * environment is read once per process: an armed point stops the child (seen with WUNTRACED), an
 * unarmed or unlisted one returns, a taken DA3_FAULT_ONCE marker disarms it, a free one is taken,
 * and a stopped child sent SIGCONT goes on. Also write_file_atomic_hooked's halfway call and
 * is_atomic_temp_name, which the front's fault point and its reload rely on. */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fault.h"
#include "common/util.h"
#include "tests/unit/check.h"

enum { RETURNED, STOPPED, OTHER };

/* Runs fault_point(name) twice in a child with DA3_FAULT=armed (NULL: unset) and DA3_FAULT_ONCE=once;
 * returns how the child ended (a stopped child is continued, and must then exit 0 too). */
static int run_point(const char *armed, const char *once, const char *name) {
    pid_t pid = fork();
    if (pid == 0) {
        if (armed) setenv("DA3_FAULT", armed, 1);
        else unsetenv("DA3_FAULT");
        if (once) setenv("DA3_FAULT_ONCE", once, 1);
        else unsetenv("DA3_FAULT_ONCE");
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, STDERR_FILENO); /* the "stopping for the test" line */
        fault_point(name);
        fault_point(name);
        _exit(0);
    }
    int status, how = OTHER;
    if (waitpid(pid, &status, WUNTRACED) != pid) return OTHER;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return RETURNED;
    if (WIFSTOPPED(status)) {
        how = STOPPED;
        kill(pid, SIGCONT);
        /* Without a marker the second call stops it again. */
        while (waitpid(pid, &status, WUNTRACED) == pid && WIFSTOPPED(status)) kill(pid, SIGCONT);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) how = OTHER;
    }
    return how;
}

static int halfway_calls;
static char halfway_path[256];
static long halfway_size;

static void at_halfway(void) {
    struct stat st;
    char tmp[300];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", halfway_path, (int)gettid());
    halfway_size = stat(tmp, &st) ? -1 : (long)st.st_size;
    halfway_calls++;
}

int main(void) {
    CHECK(run_point(NULL, NULL, "p") == RETURNED);
    CHECK(run_point("", NULL, "p") == RETURNED);
    CHECK(run_point("p", NULL, "p") == STOPPED);
    CHECK(run_point("a,p,b", NULL, "p") == STOPPED);
    CHECK(run_point("a,b", NULL, "p") == RETURNED);
    CHECK(run_point("pp,p2,xp", NULL, "p") == RETURNED); /* whole names only */

    char dir[] = "/tmp/da3-fault-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char marker[300];
    snprintf(marker, sizeof marker, "%s/once", dir);
    CHECK(run_point("p", marker, "p") == STOPPED);   /* takes the marker */
    CHECK(access(marker, F_OK) == 0);
    CHECK(run_point("p", marker, "p") == RETURNED);  /* taken: runs through */
    unlink(marker);
    CHECK(run_point("q", marker, "p") == RETURNED);  /* unlisted points never take it */
    CHECK(access(marker, F_OK) != 0);
    char missing[350];
    snprintf(missing, sizeof missing, "%s/no/such/dir", dir);
    CHECK(run_point("p", missing, "p") == RETURNED); /* a marker that cannot be made: no stop */

    /* The hook sees half the data in the temporary file, and the rename happens after it. */
    snprintf(halfway_path, sizeof halfway_path, "%s/file.bin", dir);
    char data[1000];
    memset(data, 'x', sizeof data);
    CHECK(write_file_atomic_hooked(halfway_path, data, sizeof data, 0, at_halfway) == 0);
    CHECK(halfway_calls == 1 && halfway_size == 500);
    size_t len = 0;
    uint8_t *back = read_file(halfway_path, &len);
    CHECK(back && len == sizeof data && !memcmp(back, data, len));
    free(back);
    unlink(halfway_path);
    rmdir(dir);

    CHECK(is_atomic_temp_name("000003.jpg.tmp.12345"));
    CHECK(is_atomic_temp_name("session.json.tmp.7"));
    CHECK(!is_atomic_temp_name("000003.jpg"));
    CHECK(!is_atomic_temp_name("000003.tmp.jpg"));
    CHECK(!is_atomic_temp_name("x.tmp."));
    CHECK(!is_atomic_temp_name(".tmp.12"));
    CHECK(!is_atomic_temp_name("x.tmp.12a"));
    CHECK_DONE("test_fault");
}
