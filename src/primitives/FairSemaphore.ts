/**
 * A first-in-first-out semaphore whose release wakes exactly one waiter. A primitive: it knows
 * nothing of the app (the app's semaphores are KeyedFairSemaphore now; this one is the single-key case).
 *
 * Why not `Effect.makeSemaphore`: in effect 3.22 (`internal/effect/circular.ts`, class `Semaphore`)
 * `release` schedules a task that calls every waiter's observer while `free > 0`, and a woken waiter
 * only takes its permit later, when its fiber runs, so one release resumes every waiter; all but one
 * find no permit and re-queue, in Set order rather than arrival order. With thousands of fibers
 * waiting on a few permits each release costs O(waiters): the bench measured 2,000 waiters on 1
 * permit taking 33.5 s, against 82 ms for this FIFO hand-off. We have exactly that shape (every
 * in-flight run waiting for an LLM permit).
 *
 * Interruption is safe: a waiter interrupted after its permit was handed over passes it on.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"

export interface FairSemaphore {
  readonly withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Permits currently held. */
  readonly taken: Effect.Effect<number>
  /** Fibers waiting for a permit. */
  readonly waiting: Effect.Effect<number>
}

interface Waiter {
  readonly deferred: Deferred.Deferred<void>
  /** Set when the permit was passed to this waiter. */
  handed: boolean
  /** Set when the waiter was interrupted before a permit reached it; dequeue skips it. */
  cancelled: boolean
}

export const makeFairSemaphore = (permits: number): Effect.Effect<FairSemaphore> =>
  Effect.sync(() => {
    let free = permits
    let waiting = 0
    // A FIFO of waiters; `head` avoids Array.shift's O(n) on long queues.
    let queue: Array<Waiter> = []
    let head = 0

    const dequeue = (): Waiter | undefined => {
      while (head < queue.length) {
        const next = queue[head++]!
        if (head > 1024 && head * 2 > queue.length) {
          queue = queue.slice(head)
          head = 0
        }
        if (!next.cancelled) return next
      }
      return undefined
    }

    const release = Effect.sync(() => {
      const next = dequeue()
      if (next === undefined) {
        free++
        return
      }
      // The permit passes straight to the next waiter.
      waiting--
      next.handed = true
      Deferred.unsafeDone(next.deferred, Exit.void)
    })

    const acquire = Effect.suspend(() => {
      if (free > 0) {
        free--
        return Effect.void
      }
      const waiter: Waiter = { deferred: Deferred.unsafeMake<void>(FiberId.none), handed: false, cancelled: false }
      queue.push(waiter)
      waiting++
      return Deferred.await(waiter.deferred).pipe(
        Effect.onInterrupt(() =>
          Effect.suspend(() => {
            if (waiter.handed) return release // handed a permit while being interrupted: pass it on
            waiter.cancelled = true
            waiting--
            return Effect.void
          }),
        ),
      )
    })

    return {
      withPermit: <A, E, R>(self: Effect.Effect<A, E, R>) =>
        Effect.uninterruptibleMask((restore) =>
          Effect.zipRight(restore(acquire), Effect.ensuring(restore(self), release)),
        ),
      taken: Effect.sync(() => permits - free),
      waiting: Effect.sync(() => waiting),
    }
  })
