/* The protocol's resize-method names (see protocol.h). */
#include "common/protocol.h"

#include <string.h>

static const char *const method_names[] = {"upper_bound_resize", "upper_bound_crop", "lower_bound_resize",
                                           "lower_bound_crop"};

int resize_method_parse(const char *name, resize_method *m) {
    for (int i = 0; name && i < 4; i++) {
        if (strcmp(name, method_names[i]) == 0) {
            *m = (resize_method)i;
            return 0;
        }
    }
    return -1;
}

const char *resize_method_name(resize_method m) { return (unsigned)m < 4 ? method_names[m] : "unknown"; }
