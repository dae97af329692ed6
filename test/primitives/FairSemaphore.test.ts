import { it } from "@effect/vitest"
import { Deferred, Effect, Fiber, FiberId, Ref } from "effect"
import { expect } from "vitest"
import { makeFairSemaphore } from "../../src/primitives/FairSemaphore.js"

it.effect("never lets more than its permits through, and serves waiters first in, first out", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeFairSemaphore(3)
    const inside = yield* Ref.make(0)
    const peak = yield* Ref.make(0)
    const order = yield* Ref.make<Array<number>>([])
    const task = (i: number) =>
      semaphore.withPermit(
        Effect.gen(function* () {
          const n = yield* Ref.updateAndGet(inside, (x) => x + 1)
          yield* Ref.update(peak, (p) => Math.max(p, n))
          yield* Ref.update(order, (o) => [...o, i])
          yield* Effect.yieldNow()
          yield* Ref.update(inside, (x) => x - 1)
        }),
      )
    yield* Effect.forEach(Array.from({ length: 200 }, (_, i) => i), task, { concurrency: "unbounded" })
    expect(yield* Ref.get(peak)).toBe(3)
    expect(yield* Ref.get(order)).toEqual(Array.from({ length: 200 }, (_, i) => i))
    expect(yield* semaphore.taken).toBe(0)
  }))

it.effect("a waiter interrupted while queued leaves the queue; no permit is lost", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeFairSemaphore(1)
    const gate = yield* Deferred.make<void>()
    const holder = yield* Effect.fork(semaphore.withPermit(Deferred.await(gate)))
    yield* Effect.yieldNow()
    const waiters = yield* Effect.forEach(Array.from({ length: 5 }), () => Effect.fork(semaphore.withPermit(Effect.void)))
    yield* Effect.yieldNow()
    expect(yield* semaphore.waiting).toBe(5)
    yield* Fiber.interruptAll(waiters.slice(0, 3))
    expect(yield* semaphore.waiting).toBe(2)
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(holder)
    yield* Effect.forEach(waiters.slice(3), Fiber.join)
    expect(yield* semaphore.taken).toBe(0)
    // The single permit still works.
    expect(yield* semaphore.withPermit(Effect.succeed("ok"))).toBe("ok")
  }))

it.live("a waiter interrupted in the same instant its permit arrives passes the permit on", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeFairSemaphore(1)
    const gate = yield* Deferred.make<void>()
    const firstRef = yield* Ref.make<Fiber.RuntimeFiber<unknown> | null>(null)
    // The holder sends `first` an interrupt and then releases, with no yield in between: the permit
    // is handed to `first` before it has processed the interrupt.
    const holder = yield* Effect.fork(
      semaphore.withPermit(
        Effect.zipRight(
          Deferred.await(gate),
          Effect.flatMap(Ref.get(firstRef), (f) => Effect.sync(() => f?.unsafeInterruptAsFork(FiberId.none))),
        ),
      ),
    )
    yield* Effect.yieldNow()
    const first = yield* Effect.fork(semaphore.withPermit(Effect.never))
    yield* Ref.set(firstRef, first)
    const second = yield* Effect.fork(semaphore.withPermit(Effect.succeed("second ran")))
    yield* Effect.yieldNow()
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(holder)
    yield* Fiber.await(first)
    expect(yield* Fiber.join(second).pipe(Effect.timeout("2 seconds"))).toBe("second ran")
    expect(yield* semaphore.taken).toBe(0)
  }))

it.effect("2,000 fibers through 1 permit all finish (the case Effect's Semaphore wakes every waiter for)", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeFairSemaphore(1)
    const done = yield* Ref.make(0)
    yield* Effect.forEach(
      Array.from({ length: 2000 }),
      () => semaphore.withPermit(Effect.zipRight(Effect.yieldNow(), Ref.update(done, (n) => n + 1))),
      { concurrency: "unbounded", discard: true },
    )
    expect(yield* Ref.get(done)).toBe(2000)
    expect(yield* semaphore.waiting).toBe(0)
  }))
