/**
 * Hands the garbage of finished runs back to the OS once the process is quiet (issue 16 item 5).
 * JavaScriptCore starts a full collection only when the heap has grown by a factor it judges against
 * the machine's RAM, and never while the process sits idle: after a tick of 1,000 runs the heap
 * held 171 MB of which 31 MB was live, and the RSS stayed at 330 MB until something allocated
 * again. Every CHECK_EVERY this layer reads the heap's size (a counter) and the runs in flight
 * (the gauge); when no run is under way, the heap has stopped changing and it holds QUIET_GROWTH
 * more than the last collection left, it collects (`Bun.gc(true)`: a full collection, then mimalloc
 * hands the freed pages back). The first time after start-up it calls `Bun.shrink()` instead: once the
 * event loop is back, the compiled code is dropped, a full collection runs and malloc's free pages go
 * back; that collection is deferred to the loop, so the floor it leaves is read at the next check
 * (the lowest size seen). While runs are under way it leaves the collector alone: a full
 * collection stops the event loop (100–500 ms measured on the loaded 2-core machine), which runs
 * at work would feel; the idle process pays it once per quiet spell.
 * The first collection waits until start-up is done (`jitPolicy.ts`'s `isStartupDone`) and then needs
 * no growth: the bundle `npm start` runs leaves less than QUIET_GROWTH of start-up garbage, so the
 * first quiet spell's Bun.shrink came 7–11 s after start or only after the first tick (which then
 * lost its compiled code); from source start-up left more and it came about 2 s after start.
 * Outside Bun (the Node test layers) it does nothing.
 */
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Metric from "effect/Metric"
import * as Schedule from "effect/Schedule"
import { runsInFlightGauge } from "../services/metrics.js"
import { isStartupDone } from "./jitPolicy.js"

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
export const makeTrimmer = (
  heapSize: () => number,
  collect: () => void,
  quietGrowth = QUIET_GROWTH_BYTES,
  /** The first collection needs no growth, only a quiet, still heap. */
  firstAtOnce = false,
) => {
  let floor = heapSize()
  let previous = floor
  let firstPending = firstAtOnce
  return (busy: boolean): boolean => {
    const size = heapSize()
    const still = size - previous < STILL_CHANGE_BYTES
    previous = size
    floor = Math.min(floor, size)
    if (busy || !still || (size - floor < quietGrowth && !firstPending)) return false
    firstPending = false
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
    // The first quiet spell after start-up: Bun.shrink, which also drops the compiled code of start-up
    // (run once, not again). Later ones: a full collection only. Bun.shrink after every busy spell
    // took the RSS after 1,000 runs from about 130 to 101 MB, but the next tick compiles its code
    // again: runner CPU per run 10.9–16.3 ms against 8.3–9.6 ms on ticks 2 and 3 (README).
    let shrunk = bun.shrink === undefined
    const check = makeTrimmer(
      heapSize,
      () => {
        if (shrunk) return bun.gc(true)
        shrunk = true
        bun.shrink!()
      },
      QUIET_GROWTH_BYTES,
      true,
    )
    yield* Metric.value(runsInFlightGauge).pipe(
      // Start-up counts as busy: its first collection is the one after start-up (see the header).
      Effect.flatMap(({ value }) => Effect.sync(() => check(value > 0 || !isStartupDone()))),
      Effect.repeat(Schedule.spaced(CHECK_EVERY)),
      Effect.forkScoped,
    )
  }),
)
