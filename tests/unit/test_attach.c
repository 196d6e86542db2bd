/* The session <-> connection map (frontend/attach.h): takeover returns the replaced connection,
 * and the later asker wins whatever order the attaches arrive in (the race make soak found: an
 * old socket's handler attaching after the new socket's), clear only detaches its own
 * connection, remove detaches any. */
#include "frontend/attach.h"
#include "tests/unit/check.h"

int main(void) {
    const char *sid = "11111111-2222-4333-8444-555555555555";
    CHECK(attach_get(sid) == 0);
    CHECK(attach_set(sid, 30, 1) == 0);
    CHECK(attach_set(sid, 40, 2) == 30 && attach_get(sid) == 40); /* in order: 30 is taken over */
    /* out of order: connection 50 asked first (seq 1, before 40's 2) but attaches only now */
    CHECK(attach_set(sid, 50, 1) == 50 && attach_get(sid) == 40); /* the late old one loses */
    CHECK(attach_clear(sid, 50) == 0 && attach_get(sid) == 40);       /* and cannot detach 40 */
    CHECK(attach_set(sid, 60, 3) == 40 && attach_get(sid) == 60);
    CHECK(attach_clear(sid, 60) == 1 && attach_get(sid) == 0);
    /* once nobody is attached, any asker attaches (the later one is gone) */
    CHECK(attach_set(sid, 70, 1) == 0 && attach_get(sid) == 70);
    CHECK(attach_remove(sid) == 70 && attach_get(sid) == 0);
    CHECK_DONE("test_attach");
}
