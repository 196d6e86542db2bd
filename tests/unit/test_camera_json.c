/* Known cameras as clients send them: parsing, the checks that refuse bad ones, the stored file. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/camera_json.h"
#include "common/util.h"
#include "tests/unit/check.h"

static int parse(const char *ext_text, const char *intr_text, known_camera *cam, char *err) {
    json_t *e = ext_text ? json_loads(ext_text, JSON_DECODE_ANY, NULL) : NULL;
    json_t *k = intr_text ? json_loads(intr_text, JSON_DECODE_ANY, NULL) : NULL;
    int rc = camera_from_json(e, k, cam, err, 256);
    json_decref(e);
    json_decref(k);
    return rc;
}

#define K_OK "[[500,0,320],[0,500,240],[0,0,1]]"
#define E34 "[[0,-1,0,1],[1,0,0,2],[0,0,1,3]]"

static void test_parse(void) {
    known_camera cam;
    char err[256] = "";
    CHECK(parse(E34, K_OK, &cam, err) == 0);
    CHECK(cam.extrinsics[1] == -1 && cam.extrinsics[7] == 2 && cam.extrinsics[15] == 1 && cam.extrinsics[12] == 0);
    CHECK(cam.intrinsics[2] == 320 && cam.intrinsics[8] == 1);
    CHECK(parse("[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]", K_OK, &cam, err) == 0);
    /* float32 noise from other tools is fine: 1e-7 where zeros and ones belong */
    CHECK(parse(E34, "[[500,0,320],[1e-7,500,240],[0,0,1.0000001]]", &cam, err) == 0);

    struct { const char *ext, *intr, *why; } bad[] = {
        {E34, NULL, "both"},
        {NULL, K_OK, "both"},
        {"[[1,0,0],[0,1,0],[0,0,1]]", K_OK, "'extrinsics' must be a 4x4"},
        {"[[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,1,1]]", K_OK, "last row"},
        {"[[2,0,0,0],[0,1,0,0],[0,0,1,0]]", K_OK, "rotation"},
        {"[[-1,0,0,0],[0,1,0,0],[0,0,1,0]]", K_OK, "rotation"}, /* a mirror: det -1 */
        {"[[1,0,0,0],[0,1,0,\"x\"],[0,0,1,0]]", K_OK, "'extrinsics'[1][3]"},
        {E34, "[[500,0,320],[0,500,240]]", "'intrinsics' must be a 3x3"},
        {E34, "[[-5,0,320],[0,500,240],[0,0,1]]", "fx, fy > 0"},
        {E34, "[[500,0,320],[0,500,240],[0,1,1]]", "fx, fy > 0"},
        {E34, "{\"fx\":500}", "'intrinsics' must be a 3x3"},
        {"[[1,0,0,1e12],[0,1,0,0],[0,0,1,0]]", K_OK, "translation"},
        {E34, "[[500,0,320],[0.001,500,240],[0,0,1]]", "fx, fy > 0"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        CHECK_MSG(parse(bad[i].ext, bad[i].intr, &cam, err) == -1, "case %zu accepted", i);
        CHECK_MSG(strstr(err, bad[i].why) != NULL, "case %zu: '%s' lacks '%s'", i, err, bad[i].why);
    }
}

static void test_file(void) {
    char dir[] = "/tmp/da3-camera-test-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    known_camera cam, back;
    char err[256];
    CHECK(parse(E34, K_OK, &cam, err) == 0);
    CHECK(camera_file_read(dir, 3, &back, err, sizeof err) == 0); /* none stored */
    CHECK(camera_file_write(dir, 3, &cam, 0) == 0);
    CHECK(camera_file_read(dir, 3, &back, err, sizeof err) == 1);
    CHECK(memcmp(&cam, &back, sizeof cam) == 0); /* 17 digits: doubles come back exactly */
    camera_file_remove(dir, 3);
    CHECK(camera_file_read(dir, 3, &back, err, sizeof err) == 0);
    /* A damaged file is an error that names the image, not "no camera". */
    char path[300];
    snprintf(path, sizeof path, "%s/000004.camera.json", dir);
    CHECK(write_file_atomic_nosync(path, "{\"extrinsics\": 1", 16) == 0);
    CHECK(camera_file_read(dir, 4, &back, err, sizeof err) == -1);
    CHECK(strstr(err, "image 4") != NULL);
    unlink(path);
    rmdir(dir);
}

int main(void) {
    test_parse();
    test_file();
    CHECK_DONE("test_camera_json");
}
