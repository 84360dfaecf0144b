/*
 * ARCCounter: counts swift_retain / swift_release calls made by the calling thread between
 * arc_counter_start() and arc_counter_stop().
 *
 * Why not the benchmark package's retainCount / releaseCount: on Linux with Swift 6.3 they rely on
 * either the runtime's refcount hooks, which crash there (ordo-one/benchmark issue #349, fixed in the
 * 6.4 runtime), or the separate swift-runtime-interposer package, which this machine does not have.
 *
 * How: this target defines swift_retain, swift_release and their _n, bridgeObject and nonatomic
 * variants in the benchmark executable itself. Every Swift module of the benchmark (the engine,
 * the stages, the harness) is linked statically into that executable, so the static linker binds
 * their calls to these definitions; each counts (when the calling thread is counting) and forwards
 * to the runtime's own function found with dlsym(RTLD_NEXT). libswiftCore's internal retains do not
 * go through its PLT, so they are not seen (and not counted twice).
 */
#ifndef SWITCHYARD_BENCHMARKS_ARC_COUNTER_H
#define SWITCHYARD_BENCHMARKS_ARC_COUNTER_H

#include <stdint.h>

/// Zeroes this thread's counts and starts counting on this thread.
void arc_counter_start(void);
/// Stops counting on this thread (the counts stay readable).
void arc_counter_stop(void);
/// Retains (swift_retain, _n, bridgeObject and nonatomic variants) counted on this thread.
uint64_t arc_counter_retains(void);
/// Releases counted on this thread.
uint64_t arc_counter_releases(void);
/// 1 when every interposed function found the runtime's own to forward to.
int arc_counter_ready(void);

#endif
