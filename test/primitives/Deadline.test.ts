/**
 * `withDeadline` on the TestClock, each case run twice: on `withDeadline` and on Effect's own
 * `timeoutFail`, whose contract it keeps (the second run shows the expectations are that contract,
 * not this implementation's).
 */
import { describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber, FiberRef, Option, Ref, Schema, TestClock, TestServices } from "effect"
import { expect } from "vitest"
import { unsafeScheduleAlarm, withDeadline } from "../../src/primitives/Deadline.js"

class Late extends Schema.TaggedError<Late>()("Late", { timeoutMs: Schema.Number }) {}
class Own extends Schema.TaggedError<Own>()("Own", {}) {}

type Bound = (
  ms: number,
) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | Late, R>

const implementations: ReadonlyArray<readonly [string, Bound]> = [
  ["withDeadline", (ms) => withDeadline({ duration: Duration.millis(ms), onTimeout: () => new Late({ timeoutMs: ms }) })],
  ["Effect.timeoutFail", (ms) => Effect.timeoutFail({ duration: Duration.millis(ms), onTimeout: () => new Late({ timeoutMs: ms }) })],
]

/** Lets every fiber woken so far run (real time; a wide margin that measures nothing). */
const settle = TestServices.provideLive(Effect.sleep("30 millis"))

const pending = <A, E>(fiber: Fiber.Fiber<A, E>) => Effect.map(Fiber.poll(fiber), Option.isNone)

describe.each(implementations)("%s", (_name, within) => {
  it.effect("fires at exactly the duration, not a millisecond before, with the typed error", () =>
    Effect.gen(function* () {
      const fiber = yield* Effect.fork(Effect.never.pipe(within(1_000)))
      yield* settle
      yield* TestClock.adjust("999 millis")
      yield* settle
      expect(yield* pending(fiber)).toBe(true)
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.await(fiber)
      expect(exit).toStrictEqual(Exit.fail(new Late({ timeoutMs: 1_000 })))
    }),
  )

  it.effect("a success before the deadline is the result, and the deadline passing later changes nothing", () =>
    Effect.gen(function* () {
      expect(yield* Effect.succeed(7).pipe(within(1_000))).toBe(7)
      const fiber = yield* Effect.fork(Effect.as(Effect.sleep("600 millis"), "done").pipe(within(1_000)))
      yield* settle
      yield* TestClock.adjust("600 millis")
      expect(yield* Fiber.join(fiber)).toBe("done")
      yield* TestClock.adjust("10 seconds")
      yield* settle
    }),
  )

  it.effect("the work's own failure and defect pass through unchanged", () =>
    Effect.gen(function* () {
      expect(yield* Effect.exit(Effect.fail(new Own()).pipe(within(1_000)))).toStrictEqual(Exit.fail(new Own()))
      const died = yield* Effect.exit(Effect.dieMessage("boom").pipe(within(1_000)))
      expect(Exit.isFailure(died) && died.toString()).toContain("boom")
    }),
  )

  it.effect("at the deadline the work is interrupted, and the caller sees the error only once its finalizers have run", () =>
    Effect.gen(function* () {
      const events = yield* Ref.make<Array<string>>([])
      const log = (event: string) => Ref.update(events, (e) => [...e, event])
      const gate = yield* Deferred.make<void>()
      const work = Effect.never.pipe(
        Effect.onInterrupt(() => log("interrupted")),
        Effect.ensuring(Effect.zipRight(Deferred.await(gate), log("released"))),
      )
      const fiber = yield* Effect.fork(
        work.pipe(
          within(500),
          Effect.tapError((e) => log(`caller saw ${e._tag}`)),
        ),
      )
      yield* settle
      yield* TestClock.adjust("500 millis")
      yield* settle
      expect(yield* Ref.get(events)).toEqual(["interrupted"])
      expect(yield* pending(fiber)).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.await(fiber)).toStrictEqual(Exit.fail(new Late({ timeoutMs: 500 })))
      expect(yield* Ref.get(events)).toEqual(["interrupted", "released", "caller saw Late"])
    }),
  )

  it.effect("an uninterruptible region under way at the deadline finishes first; the result is still the timeout", () =>
    Effect.gen(function* () {
      const inCommit = yield* Deferred.make<void>()
      const gate = yield* Deferred.make<void>()
      const committed = yield* Ref.make(false)
      const work = Effect.uninterruptible(
        Effect.zipRight(Deferred.succeed(inCommit, undefined), Effect.zipRight(Deferred.await(gate), Ref.set(committed, true))),
      )
      const fiber = yield* Effect.fork(
        work.pipe(
          within(500),
          Effect.catchAll((e) => Effect.map(Ref.get(committed), (c) => ({ error: e, committedWhenSeen: c }))),
        ),
      )
      yield* Deferred.await(inCommit)
      yield* TestClock.adjust("500 millis")
      yield* settle
      expect(yield* pending(fiber)).toBe(true)
      yield* Deferred.succeed(gate, undefined)
      expect(yield* Fiber.join(fiber)).toStrictEqual({ error: new Late({ timeoutMs: 500 }), committedWhenSeen: true })
    }),
  )

  it.effect("interrupting the caller interrupts the work and waits for its finalizers", () =>
    Effect.gen(function* () {
      const started = yield* Deferred.make<void>()
      const finalized = yield* Ref.make(false)
      const work = Effect.zipRight(Deferred.succeed(started, undefined), Effect.never).pipe(
        Effect.ensuring(Effect.zipRight(Effect.yieldNow(), Ref.set(finalized, true))),
      )
      const fiber = yield* Effect.fork(work.pipe(within(1_000)))
      yield* Deferred.await(started)
      const exit = yield* Fiber.interrupt(fiber)
      expect(Exit.isInterrupted(exit)).toBe(true)
      expect(yield* Ref.get(finalized)).toBe(true)
      // Its deadline, long gone, fires nothing later.
      yield* TestClock.adjust("2 seconds")
      yield* settle
    }),
  )

  it.effect("FiberRefs the work set are the caller's after a success", () =>
    Effect.gen(function* () {
      const ref = FiberRef.unsafeMake("before")
      yield* FiberRef.set(ref, "inside").pipe(within(1_000))
      expect(yield* FiberRef.get(ref)).toBe("inside")
    }),
  )

  it.effect("deadlines of different lengths, started in any order, each fire at their own instant", () =>
    Effect.gen(function* () {
      const lengths = [3_000, 1_000, 2_000, 1_000, 5_000]
      const fibers = yield* Effect.forEach(lengths, (ms) => Effect.fork(Effect.never.pipe(within(ms))))
      yield* settle
      // Two more started later: one met, one not (its deadline falls before the earliest above).
      yield* TestClock.adjust("500 millis")
      const met = yield* Effect.fork(Effect.as(Effect.sleep("100 millis"), "met").pipe(within(2_000)))
      const late = yield* Effect.fork(Effect.never.pipe(within(700)))
      yield* settle
      const done = () => Effect.forEach([...fibers, late], (f) => Effect.map(pending(f), (p) => !p))
      yield* TestClock.adjust("100 millis")
      expect(yield* Fiber.join(met)).toBe("met")
      yield* TestClock.adjust("399 millis") // 999
      yield* settle
      expect(yield* done()).toEqual([false, false, false, false, false, false])
      yield* TestClock.adjust("1 millis") // 1000
      yield* settle
      expect(yield* done()).toEqual([false, true, false, true, false, false])
      yield* TestClock.adjust("199 millis") // 1199
      yield* settle
      expect(yield* done()).toEqual([false, true, false, true, false, false])
      yield* TestClock.adjust("1 millis") // 1200 = 500 + 700
      yield* settle
      expect(yield* done()).toEqual([false, true, false, true, false, true])
      yield* TestClock.adjust("800 millis") // 2000
      yield* settle
      expect(yield* done()).toEqual([false, true, true, true, false, true])
      yield* TestClock.adjust("1 second") // 3000
      yield* settle
      expect(yield* done()).toEqual([true, true, true, true, false, true])
      yield* TestClock.adjust("2 seconds") // 5000
      const exits = yield* Effect.forEach([...fibers, late], Fiber.await)
      expect(exits).toStrictEqual([...lengths, 700].map((ms) => Exit.fail(new Late({ timeoutMs: ms }))))
    }),
  )
})

describe("unsafeScheduleAlarm", () => {
  it.effect("fires once at exactly its instant on the fiber's Clock; a cancelled alarm never fires, and cancelling after it fired is harmless", () =>
    Effect.gen(function* () {
      const clock = yield* Effect.clock
      const fired: Array<string> = []
      const cancelA = unsafeScheduleAlarm(clock, 1_000, () => fired.push("a"))
      const cancelB = unsafeScheduleAlarm(clock, 500, () => fired.push("b"))
      unsafeScheduleAlarm(clock, Number.POSITIVE_INFINITY, () => fired.push("never"))
      cancelB()
      yield* settle
      yield* TestClock.adjust("999 millis")
      yield* settle
      expect(fired).toEqual([])
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(fired).toEqual(["a"])
      cancelA()
      yield* TestClock.adjust("1 hour")
      yield* settle
      expect(fired).toEqual(["a"])
    }),
  )
})
