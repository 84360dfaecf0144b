#define _GNU_SOURCE
#include "ARCCounter.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>

static _Thread_local int counting;
static _Thread_local uint64_t retains;
static _Thread_local uint64_t releases;

void arc_counter_start(void) {
    retains = 0;
    releases = 0;
    counting = 1;
}
void arc_counter_stop(void) { counting = 0; }
uint64_t arc_counter_retains(void) { return retains; }
uint64_t arc_counter_releases(void) { return releases; }

static void *resolve(const char *name) {
    void *real = dlsym(RTLD_NEXT, name);
    if (real == NULL) {
        fprintf(stderr, "ARCCounter: the Swift runtime has no %s\n", name);
        abort();
    }
    return real;
}

#define COUNT_RETAIN(n) do { if (__builtin_expect(counting, 0)) retains += (n); } while (0)
#define COUNT_RELEASE(n) do { if (__builtin_expect(counting, 0)) releases += (n); } while (0)

/* One interposer per runtime entry point: type, name, counting macro. */
#define INTERPOSE_RETAIN(NAME)                                                       \
    static void *(*real_##NAME)(void *);                                             \
    void *NAME(void *object) {                                                       \
        if (__builtin_expect(real_##NAME == NULL, 0)) real_##NAME = resolve(#NAME);  \
        COUNT_RETAIN(1);                                                             \
        return real_##NAME(object);                                                  \
    }
#define INTERPOSE_RETAIN_N(NAME)                                                     \
    static void *(*real_##NAME)(void *, uint32_t);                                   \
    void *NAME(void *object, uint32_t n) {                                           \
        if (__builtin_expect(real_##NAME == NULL, 0)) real_##NAME = resolve(#NAME);  \
        COUNT_RETAIN(n);                                                             \
        return real_##NAME(object, n);                                               \
    }
#define INTERPOSE_RELEASE(NAME)                                                      \
    static void (*real_##NAME)(void *);                                              \
    void NAME(void *object) {                                                        \
        if (__builtin_expect(real_##NAME == NULL, 0)) real_##NAME = resolve(#NAME);  \
        COUNT_RELEASE(1);                                                            \
        real_##NAME(object);                                                         \
    }
#define INTERPOSE_RELEASE_N(NAME)                                                    \
    static void (*real_##NAME)(void *, uint32_t);                                    \
    void NAME(void *object, uint32_t n) {                                            \
        if (__builtin_expect(real_##NAME == NULL, 0)) real_##NAME = resolve(#NAME);  \
        COUNT_RELEASE(n);                                                            \
        real_##NAME(object, n);                                                      \
    }

INTERPOSE_RETAIN(swift_retain)
INTERPOSE_RETAIN_N(swift_retain_n)
INTERPOSE_RELEASE(swift_release)
INTERPOSE_RELEASE_N(swift_release_n)
INTERPOSE_RETAIN(swift_nonatomic_retain)
INTERPOSE_RETAIN_N(swift_nonatomic_retain_n)
INTERPOSE_RELEASE(swift_nonatomic_release)
INTERPOSE_RELEASE_N(swift_nonatomic_release_n)
INTERPOSE_RETAIN(swift_bridgeObjectRetain)
INTERPOSE_RETAIN_N(swift_bridgeObjectRetain_n)
INTERPOSE_RELEASE(swift_bridgeObjectRelease)
INTERPOSE_RELEASE_N(swift_bridgeObjectRelease_n)
INTERPOSE_RETAIN(swift_nonatomic_bridgeObjectRetain)
INTERPOSE_RETAIN_N(swift_nonatomic_bridgeObjectRetain_n)
INTERPOSE_RELEASE(swift_nonatomic_bridgeObjectRelease)
INTERPOSE_RELEASE_N(swift_nonatomic_bridgeObjectRelease_n)

/* Resolve everything before main, so no thread races on the first call. */
__attribute__((constructor)) static void arc_counter_init(void) {
#define R(NAME) if (real_##NAME == NULL) real_##NAME = resolve(#NAME);
    R(swift_retain) R(swift_retain_n) R(swift_release) R(swift_release_n)
    R(swift_nonatomic_retain) R(swift_nonatomic_retain_n) R(swift_nonatomic_release) R(swift_nonatomic_release_n)
    R(swift_bridgeObjectRetain) R(swift_bridgeObjectRetain_n) R(swift_bridgeObjectRelease)
    R(swift_bridgeObjectRelease_n) R(swift_nonatomic_bridgeObjectRetain) R(swift_nonatomic_bridgeObjectRetain_n)
    R(swift_nonatomic_bridgeObjectRelease) R(swift_nonatomic_bridgeObjectRelease_n)
#undef R
}

int arc_counter_ready(void) {
    return real_swift_retain != NULL && real_swift_release != NULL && real_swift_retain_n != NULL &&
           real_swift_release_n != NULL && real_swift_bridgeObjectRetain != NULL &&
           real_swift_bridgeObjectRelease != NULL;
}
