/**
 * Hands the garbage of finished runs, and the code compiled for them, back to the OS once the process
 * is quiet (issue 16 item 5). JavaScriptCore starts a full collection only when the heap has grown by a
 * factor it judges against the machine's RAM, and never while the process sits idle: after a tick of
 * 1,000 runs the heap held 171 MB of which 31 MB was live, and the RSS stayed at 330 MB until something
 * allocated again. Every CHECK_EVERY this layer reads the heap's size (a counter) and the runs in
 * flight (the gauge); when no run is under way, the heap has stopped changing and it holds
 * QUIET_GROWTH more than the last collection left, it calls `Bun.shrink()`: once the event loop is
 * back, the compiled code is dropped, a full collection runs and malloc's free pages go back. That
 * collection is deferred to the loop, so the floor it leaves is read at the next check (the lowest
 * size seen). While runs are under way it leaves the collector alone: a full collection stops the
 * event loop (100–500 ms measured on the loaded 2-core machine), which runs at work would feel; the
 * idle process pays it once per quiet spell.
 * Why the code goes too: after a tick of 1,000 runs, what stays above the idle process is mostly the
 * runs' compiled code, its metadata and the heap blocks they keep half-full. Keeping it read 98–100 MB
 * after the first tick and 108–110 MB after the tenth; dropping it 79–80 and 82 MB (`tickSmaps.ts
 * --ticks=10`, two alternating pairs). The price is paid by the next busy spell, which compiles its code
 * again: 1.3–1.8 ms more runner CPU per run on ticks of 1,000 runs, 8–10 ms per run on ticks of 50
 * (about 0.4 s a spell). Runs that follow one another without a quiet spell (the bench's throughput,
 * any steady load) never pay it; a process with quiet spells has the CPU to spare. MEMORY_TRIM_CODE=false
 * keeps the code: then only start-up's quiet spell shrinks, later ones run `Bun.gc(true)` (a full
 * collection, then mimalloc hands the freed pages back).
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
import { memoryTrimsTotal, runsInFlightGauge } from "../services/metrics.js"
import { isStartupDone } from "./jitPolicy.js"

const CHECK_EVERY = Duration.seconds(1)
/** Garbage left over when the process goes quiet that is worth a collection. */
export const QUIET_GROWTH_BYTES = 4 * 2 ** 20
/**
 * Growth under this between two checks counts as a still heap (timers and polls allocate a little);
 * a heap that shrank is still too (JSC's own collector at work).
 */
export const STILL_CHANGE_BYTES = 2 ** 20

export interface BunGc {
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

/**
 * What a quiet spell's collection calls. With `dropCode` (MEMORY_TRIM_CODE, the default) every one is
 * Bun.shrink; without it only the first (start-up's code, run once), later ones a full collection that
 * keeps the runs' compiled code. A Bun without `shrink` always gets the full collection.
 */
export const makeQuietCollection = (bun: BunGc, dropCode: boolean): (() => "shrink" | "collect") => {
  let shrunk = false
  return () => {
    if (bun.shrink === undefined || (shrunk && !dropCode)) {
      bun.gc(true)
      return "collect"
    }
    shrunk = true
    bun.shrink()
    return "shrink"
  }
}

export const memoryTrimLayer = (options: { readonly dropCode: boolean }): Layer.Layer<never> => Layer.scopedDiscard(
  Effect.gen(function* () {
    const bun = (globalThis as { Bun?: BunGc }).Bun
    if (bun === undefined) return
    // A variable specifier: the type checker has no declarations for Bun's own modules.
    const specifier = "bun:jsc"
    const { heapSize } = (yield* Effect.promise(() => import(specifier))) as { heapSize: () => number }
    const collect = makeQuietCollection(bun, options.dropCode)
    let kind: "shrink" | "collect" = "collect"
    const check = makeTrimmer(
      heapSize,
      () => {
        kind = collect()
      },
      QUIET_GROWTH_BYTES,
      true,
    )
    yield* Metric.value(runsInFlightGauge).pipe(
      // Start-up counts as busy: its first collection is the one after start-up (see the header).
      Effect.flatMap(({ value }) =>
        check(value > 0 || !isStartupDone()) ? Metric.increment(Metric.tagged(memoryTrimsTotal, "kind", kind)) : Effect.void,
      ),
      Effect.repeat(Schedule.spaced(CHECK_EVERY)),
      Effect.forkScoped,
    )
  }),
)
