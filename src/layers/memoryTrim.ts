/**
 * Hands the garbage of finished runs back to the OS once the process is quiet (issue 16 item 5).
 * JavaScriptCore starts a full collection only when the heap has grown by a factor it judges against
 * the machine's RAM, and never while the process sits idle: after a tick of 1,000 runs the heap
 * held 171 MB of which 31 MB was live, and the RSS stayed at 330 MB until something allocated
 * again. Every CHECK_EVERY this layer reads the heap's size (a counter) and the runs in flight
 * (the gauge); when no run is under way, the heap has stopped changing and it holds QUIET_GROWTH
 * more than the last collection left, it collects (`Bun.shrink()`: once the event loop is back, the
 * compiled code is dropped, a full collection runs and mimalloc hands the freed pages back; without
 * it, `Bun.gc(true)`). The collection is deferred to the loop, so the floor it leaves is read at the
 * next check (the lowest size seen). While runs are under way it leaves the collector alone: a full
 * collection stops the event loop (100–500 ms measured on the loaded 2-core machine), which runs
 * at work would feel; the idle process pays it once per quiet spell.
 * Outside Bun (the Node test layers) it does nothing.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import { runsInFlightGauge } from "../services/metrics.js"

const CHECK_EVERY = Duration.seconds(1)
/** Garbage left over when the process goes quiet that is worth a collection. */
export const QUIET_GROWTH_BYTES = 4 * 2 ** 20
/**
 * Growth under this between two checks counts as a still heap (timers and polls allocate a little);
 * a heap that shrank is still too (JSC's own collector at work).
 */
export const STILL_CHANGE_BYTES = 2 ** 20

interface BunGc {
  readonly gc: (force: boolean) => void
  /** JavaScriptCore's shrinkFootprintWhenIdle: drops compiled code, collects, returns malloc's free pages. */
  readonly shrink?: () => void
}

/**
 * The decision, apart from the clock and the runtime: collect when `busy` says no run is under way,
 * the heap grew less than STILL_CHANGE since the last check, and it holds `quietGrowth` more than the
 * floor (the size the last collection left, or the lowest seen). Returns whether it collected.
 */
export const makeTrimmer = (heapSize: () => number, collect: () => void, quietGrowth = QUIET_GROWTH_BYTES) => {
  let floor = heapSize()
  let previous = floor
  return (busy: boolean): boolean => {
    const size = heapSize()
    const still = size - previous < STILL_CHANGE_BYTES
    previous = size
    floor = Math.min(floor, size)
    if (busy || !still || size - floor < quietGrowth) return false
    collect()
    floor = heapSize()
    previous = floor
    return true
  }
}

export const MemoryTrimLive: Layer.Layer<never> = Layer.scopedDiscard(
  Effect.gen(function* () {
    const bun = (globalThis as { Bun?: BunGc }).Bun
    if (bun === undefined) return
    // A variable specifier: the type checker has no declarations for Bun's own modules.
    const specifier = "bun:jsc"
    const { heapSize } = (yield* Effect.promise(() => import(specifier))) as { heapSize: () => number }
    // Bun.shrink where Bun has it: after 1,000 runs it took the RSS from 132 to 107 MB where a full
    // collection alone left it (the runs' JIT code, which the next busy spell compiles again).
    const check = makeTrimmer(heapSize, bun.shrink === undefined ? () => bun.gc(true) : () => bun.shrink!())
    yield* Metric.value(runsInFlightGauge).pipe(
      Effect.flatMap(({ value }) => Effect.sync(() => check(value > 0))),
      Effect.repeat(Schedule.spaced(CHECK_EVERY)),
      Effect.forkScoped,
    )
  }),
)
