import { it } from "@effect/vitest"
import { Deferred, Effect, FastCheck as fc, Fiber, FiberId, Ref } from "effect"
import { expect } from "vitest"
import { type KeyedFairSemaphore, makeKeyedFairSemaphore } from "../../src/primitives/KeyedFairSemaphore.js"

/**
 * Holds the single permit, queues `arrivals` (one waiter each, in order, keyed), interrupts the
 * waiters at `interrupted`, then lets go; returns the labels in the order the permit reached them.
 */
const grantOrder = (arrivals: ReadonlyArray<string>, interrupted: ReadonlySet<number> = new Set()) =>
  Effect.gen(function* () {
    const semaphore = yield* makeKeyedFairSemaphore(1)
    const gate = yield* Deferred.make<void>()
    const order = yield* Ref.make<Array<string>>([])
    const holder = yield* Effect.fork(semaphore.withPermit("holder")(Deferred.await(gate)))
    yield* Effect.yieldNow()
    const fibers: Array<Fiber.RuntimeFiber<void>> = []
    for (const [i, key] of arrivals.entries()) {
      fibers.push(yield* Effect.fork(semaphore.withPermit(key)(Ref.update(order, (o) => [...o, `${key}${i}`]))))
      yield* Effect.yieldNow()
    }
    expect(yield* semaphore.waiting).toBe(arrivals.length)
    yield* Fiber.interruptAll(fibers.filter((_, i) => interrupted.has(i)))
    expect(yield* semaphore.waiting).toBe(arrivals.length - interrupted.size)
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(holder)
    yield* Effect.forEach(
      fibers.filter((_, i) => !interrupted.has(i)),
      (f) => Fiber.join(f),
    )
    expect(yield* semaphore.taken).toBe(0)
    expect(yield* semaphore.waiting).toBe(0)
    expect(yield* semaphore.waitingKeys).toBe(0)
    return yield* Ref.get(order)
  })

it.effect.each([
  { name: "one key is plain first in, first out", arrivals: ["a", "a", "a"], expected: ["a0", "a1", "a2"] },
  {
    name: "keys take turns in the order they started waiting",
    arrivals: ["a", "a", "a", "b", "c", "c"],
    expected: ["a0", "b3", "c4", "a1", "c5", "a2"],
  },
  {
    name: "a key arriving late still gets the next turn after the ring's current round",
    arrivals: ["a", "a", "a", "a", "b"],
    expected: ["a0", "b4", "a1", "a2", "a3"],
  },
  {
    name: "interleaved arrivals",
    arrivals: ["b", "a", "b", "a", "b"],
    expected: ["b0", "a1", "b2", "a3", "b4"],
  },
])("grant order: $name", ({ arrivals, expected }) =>
  Effect.gen(function* () {
    expect(yield* grantOrder(arrivals)).toEqual(expected)
  }),
)

it.effect("a quiet key waiting behind a hot key's 500 is granted on the next turn, not after the backlog", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeKeyedFairSemaphore(2)
    const grants = yield* Ref.make<Array<string>>([])
    const gate = yield* Deferred.make<void>()
    const hot = yield* Effect.forEach(Array.from({ length: 500 }), () =>
      Effect.fork(semaphore.withPermit("hot")(Effect.zipRight(Ref.update(grants, (g) => [...g, "hot"]), Deferred.await(gate)))),
    )
    yield* Effect.yieldNow()
    // Two hot runs hold the permits; 498 wait.
    expect(yield* semaphore.waiting).toBe(498)
    const quiet = yield* Effect.fork(semaphore.withPermit("quiet")(Ref.update(grants, (g) => [...g, "quiet"])))
    yield* Effect.yieldNow()
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(quiet)
    yield* Effect.forEach(hot, Fiber.join)
    const order = yield* Ref.get(grants)
    // The ring holds hot then quiet: after the 2 initial holders, at most one hot grant comes first.
    expect(order.indexOf("quiet")).toBeLessThanOrEqual(3)
    expect(order.length).toBe(501)
  }),
)

it.effect("never lets more than its permits through, across many keys", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeKeyedFairSemaphore(3)
    const inside = yield* Ref.make(0)
    const peak = yield* Ref.make(0)
    const done = yield* Ref.make(0)
    yield* Effect.forEach(
      Array.from({ length: 300 }, (_, i) => `u${i % 7}`),
      (key) =>
        semaphore.withPermit(key)(
          Effect.gen(function* () {
            const n = yield* Ref.updateAndGet(inside, (x) => x + 1)
            yield* Ref.update(peak, (p) => Math.max(p, n))
            yield* Effect.yieldNow()
            yield* Ref.update(inside, (x) => x - 1)
            yield* Ref.update(done, (x) => x + 1)
          }),
        ),
      { concurrency: "unbounded" },
    )
    expect(yield* Ref.get(peak)).toBe(3)
    expect(yield* Ref.get(done)).toBe(300)
    expect(yield* semaphore.taken).toBe(0)
  }),
)

it.effect("waiters interrupted while queued leave; a key with all its waiters gone is skipped; no permit is lost", () =>
  Effect.gen(function* () {
    // b's only waiter and a's first are interrupted.
    const order = yield* grantOrder(["a", "b", "a", "c", "a"], new Set([0, 1]))
    expect(order).toEqual(["a2", "c3", "a4"])
  }),
)

/** A one-permit semaphore whose permit key "h" holds until `gate` opens. */
const heldByOne = Effect.gen(function* () {
  const semaphore = yield* makeKeyedFairSemaphore(1)
  const gate = yield* Deferred.make<void>()
  const holder = yield* Effect.fork(semaphore.withPermit("h")(Deferred.await(gate)))
  yield* Effect.yieldNow()
  return { semaphore, gate, holder }
})

it.effect("a key whose waiters were all interrupted can wait again later", () =>
  Effect.gen(function* () {
    const { semaphore, gate, holder } = yield* heldByOne
    const gone = yield* Effect.fork(semaphore.withPermit("a")(Effect.void))
    yield* Effect.yieldNow()
    yield* Fiber.interrupt(gone)
    expect(yield* semaphore.waitingKeys).toBe(0)
    const again = yield* Effect.fork(semaphore.withPermit("a")(Effect.succeed("again")))
    yield* Effect.yieldNow()
    expect(yield* semaphore.waiting).toBe(1)
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(holder)
    expect(yield* Fiber.join(again)).toBe("again")
    expect(yield* semaphore.taken).toBe(0)
    expect(yield* semaphore.withPermit("z")(Effect.succeed("ok"))).toBe("ok")
  }),
)

it.live("a waiter interrupted in the same instant its permit arrives passes the permit on", () =>
  Effect.gen(function* () {
    const semaphore: KeyedFairSemaphore = yield* makeKeyedFairSemaphore(1)
    const gate = yield* Deferred.make<void>()
    const firstRef = yield* Ref.make<Fiber.RuntimeFiber<unknown> | null>(null)
    // The holder interrupts `first` and then releases with no yield between: the permit is handed
    // to `first` before it has processed the interrupt.
    const holder = yield* Effect.fork(
      semaphore.withPermit("h")(
        Effect.zipRight(
          Deferred.await(gate),
          Effect.flatMap(Ref.get(firstRef), (f) => Effect.sync(() => f?.unsafeInterruptAsFork(FiberId.none))),
        ),
      ),
    )
    yield* Effect.yieldNow()
    const first = yield* Effect.fork(semaphore.withPermit("a")(Effect.never))
    yield* Ref.set(firstRef, first)
    const second = yield* Effect.fork(semaphore.withPermit("b")(Effect.succeed("second ran")))
    yield* Effect.yieldNow()
    yield* Deferred.succeed(gate, undefined)
    yield* Fiber.join(holder)
    yield* Fiber.await(first)
    expect(yield* Fiber.join(second).pipe(Effect.timeout("2 seconds"))).toBe("second ran")
    expect(yield* semaphore.taken).toBe(0)
  }),
)

/** The specification, written independently: the ring is the keys in order of their first arrival
 * (all arrive before any grant); round r serves each key's r-th surviving waiter. */
const roundRobinModel = (arrivals: ReadonlyArray<string>, interrupted: ReadonlySet<number>) => {
  const ring: Array<string> = []
  const byKey = new Map<string, Array<string>>()
  arrivals.forEach((key, i) => {
    if (!byKey.has(key)) {
      ring.push(key)
      byKey.set(key, [])
    }
    if (!interrupted.has(i)) byKey.get(key)!.push(`${key}${i}`)
  })
  const out: Array<string> = []
  for (let round = 0; out.length < arrivals.length - interrupted.size; round++) {
    for (const key of ring) {
      const w = byKey.get(key)![round]
      if (w !== undefined) out.push(w)
    }
  }
  return out
}

it.effect("property: grants follow round-robin over keys, interrupted waiters never get one, all permits come back", () =>
  Effect.promise(() =>
    fc.assert(
      fc.asyncProperty(
        fc
          .array(fc.constantFrom("a", "b", "c", "d"), { minLength: 1, maxLength: 30 })
          .chain((arrivals) =>
            fc.tuple(fc.constant(arrivals), fc.subarray(arrivals.map((_, i) => i))),
          ),
        ([arrivals, cut]) =>
          Effect.runPromise(grantOrder(arrivals, new Set(cut))).then((order) => {
            expect(order).toEqual(roundRobinModel(arrivals, new Set(cut)))
          }),
      ),
      { numRuns: 150 },
    ),
  ),
)

/** Forks `arrivals` at once (no yield between them) on an idle semaphore of `permits`; the keys in grant order. */
const atOnce = (permits: number, arrivals: ReadonlyArray<string>, batchYields: number) =>
  Effect.gen(function* () {
    const semaphore = yield* makeKeyedFairSemaphore(permits, { batchYields })
    const gate = yield* Deferred.make<void>()
    const order = yield* Ref.make<Array<string>>([])
    const inside = yield* Ref.make({ now: 0, max: 0 })
    const fibers = yield* Effect.forEach(arrivals, (key) =>
      Effect.fork(
        semaphore.withPermit(key)(
          Effect.acquireUseRelease(
            Effect.zipRight(
              Ref.update(order, (o) => [...o, key]),
              Ref.update(inside, (c) => ({ now: c.now + 1, max: Math.max(c.max, c.now + 1) })),
            ),
            () => Deferred.await(gate),
            () => Ref.update(inside, (c) => ({ ...c, now: c.now - 1 })),
          ),
        ),
      ),
    )
    // Bounded: the batch is handed out after its opener's yields.
    for (let i = 0; i < 100 && (yield* Ref.get(order)).length < permits; i++) yield* Effect.yieldNow()
    expect(yield* semaphore.taken).toBe(permits)
    const first = [...(yield* Ref.get(order))]
    yield* Deferred.succeed(gate, undefined)
    yield* Effect.forEach(fibers, Fiber.join)
    expect((yield* Ref.get(inside)).max).toBeLessThanOrEqual(permits)
    expect(yield* Ref.get(order)).toHaveLength(arrivals.length)
    expect(yield* semaphore.taken).toBe(0)
    expect(yield* semaphore.waiting).toBe(0)
    return first
  })

it.effect("requests at the same moment on an idle semaphore: first come takes the free permits, or with a batch they go round-robin by key", () =>
  Effect.gen(function* () {
    // a asks 4 times, then b, c, d once each, all before any of them runs.
    const arrivals = ["a", "a", "a", "a", "b", "c", "d"]
    expect(yield* atOnce(3, arrivals, 0)).toEqual(["a", "a", "a"])
    expect(yield* atOnce(3, arrivals, 1)).toEqual(["a", "b", "c"])
    expect(yield* atOnce(3, arrivals, 4)).toEqual(["a", "b", "c"])
  }),
)

it.effect("a batch's opener interrupted while it waits: the batch is still handed out, and its permit passes on", () =>
  Effect.gen(function* () {
    const semaphore = yield* makeKeyedFairSemaphore(1, { batchYields: 2 })
    const opener = yield* Effect.fork(semaphore.withPermit("a")(Effect.never))
    const other = yield* Effect.fork(semaphore.withPermit("b")(Effect.succeed("b ran")))
    yield* Fiber.interrupt(opener)
    expect(yield* Fiber.join(other).pipe(Effect.timeout("2 seconds"))).toBe("b ran")
    expect(yield* semaphore.taken).toBe(0)
    expect(yield* semaphore.waiting).toBe(0)
  }),
)

it.live("whileHeld: requests made across the hold's asynchronous steps share the free permits round-robin when it ends", () =>
  Effect.gen(function* () {
    // The supervisor's first pass: actors spawned page by page, a database read between pages. Key a
    // asks three times in the first "page", b and c in later ones; 3 permits are free throughout.
    const grantsWith = (held: boolean) =>
      Effect.gen(function* () {
        const semaphore = yield* makeKeyedFairSemaphore(3, { batchYields: 2 })
        const order = yield* Ref.make<ReadonlyArray<string>>([])
        const gate = yield* Deferred.make<void>()
        const fibers: Array<Fiber.RuntimeFiber<void>> = []
        const ask = (key: string) =>
          Effect.fork(semaphore.withPermit(key)(Effect.zipRight(Ref.update(order, (o) => [...o, key]), Deferred.await(gate))))
        const pages = Effect.gen(function* () {
          for (const page of [["a", "a", "a"], ["b"], ["c"]]) {
            for (const key of page) fibers.push(yield* ask(key))
            // The next page's read: a real asynchronous step, long past the batch's yields.
            yield* Effect.sleep("20 millis")
          }
        })
        yield* held ? semaphore.whileHeld(pages) : pages
        // Bounded: the hand-out comes after the batch's yields.
        for (let i = 0; i < 100 && (yield* Ref.get(order)).length < 3; i++) yield* Effect.yieldNow()
        const first = [...(yield* Ref.get(order))]
        yield* Deferred.succeed(gate, undefined)
        yield* Effect.forEach(fibers, Fiber.join)
        expect(yield* semaphore.taken).toBe(0)
        expect(yield* semaphore.waiting).toBe(0)
        return first
      })
    // Without the hold the first page's key takes every free permit before the others ask.
    expect(yield* grantsWith(false)).toEqual(["a", "a", "a"])
    expect(yield* grantsWith(true)).toEqual(["a", "b", "c"])
  }),
)

it.effect("whileHeld: permits released during the hold still pass to the waiters, and a failing hold hands out too", () =>
  Effect.gen(function* () {
    const { semaphore, gate, holder } = yield* heldByOne
    const result = yield* semaphore
      .whileHeld(
        Effect.gen(function* () {
          const waiter = yield* Effect.fork(semaphore.withPermit("w")(Effect.succeed("w ran")))
          yield* Deferred.succeed(gate, undefined)
          // The holder's release hands its permit to the waiter although the hold is still on.
          expect(yield* Fiber.join(waiter).pipe(Effect.timeout("2 seconds"))).toBe("w ran")
          return yield* Effect.fail("the hold's effect failed" as const)
        }),
      )
      .pipe(Effect.flip)
    expect(result).toBe("the hold's effect failed")
    yield* Fiber.join(holder)
    // The free permit is not stuck behind the ended hold.
    expect(yield* semaphore.withPermit("z")(Effect.succeed("ok")).pipe(Effect.timeout("2 seconds"))).toBe("ok")
    expect(yield* semaphore.taken).toBe(0)
  }),
)
