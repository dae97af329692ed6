/**
 * A semaphore shared by many keys (users) that grants round-robin across the keys with waiters:
 * one first-in-first-out queue per key, and a ring of the keys that have waiters. Each release
 * hands the permit to the oldest waiter of the key at the ring's head, and that key goes to the
 * ring's tail if it still has waiters. So a key that starts waiting while another has thousands
 * queued is served within (keys waiting) grants, not after the whole backlog. A primitive: it knows
 * nothing of the app (used by the supervisor's run slots and the global LLM permits, keyed by user).
 *
 * Permits found free go to whoever asks first, unless `batchYields` is set: then requests made at
 * the same moment (within that many yields of the first) share the free permits round-robin too;
 * and `whileHeld` keeps the free permits back for as long as an effect runs, then shares them so.
 *
 * Like FairSemaphore, a release hands over exactly one permit (no thundering herd), and
 * interruption is safe: a waiter interrupted after its permit was handed over passes it on; one
 * interrupted before leaves its queue (skipped lazily), so no permit is lost or leaked.
 */
import * as Deferred from "effect/Deferred"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as FiberId from "effect/FiberId"

export interface KeyedFairSemaphore {
  readonly withPermit: (key: string) => <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Permits currently held. */
  readonly taken: Effect.Effect<number>
  /** Fibers waiting for a permit, all keys. */
  readonly waiting: Effect.Effect<number>
  /** Keys with at least one fiber waiting. */
  readonly waitingKeys: Effect.Effect<number>
  /**
   * Runs `self` with the free permits held back: requests made meanwhile queue by key, and when
   * `self` ends (however it ends) the free permits are handed out round-robin across every key that
   * asked, after the batch's yields (`batchYields`), so requests made just before the end are in the
   * round too. Permits released meanwhile still pass to the waiters, round-robin. For a start-up that
   * spawns its requesters over several asynchronous steps (the supervisor's first pass reads the
   * stored missions a page at a time): without it, the first pages' keys would take every free
   * permit before the later pages' keys had asked.
   */
  readonly whileHeld: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
}

interface Waiter {
  readonly deferred: Deferred.Deferred<void>
  /** Set when the permit was passed to this waiter. */
  handed: boolean
  /** Set when the waiter was interrupted before a permit reached it; dequeue skips it. */
  cancelled: boolean
}

/** An array-backed FIFO; `head` avoids Array.shift's O(n) on long queues. */
class Fifo<T> {
  private items: Array<T> = []
  private head = 0
  push(item: T): void {
    this.items.push(item)
  }
  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined
    const item = this.items[this.head++]!
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return item
  }
}

interface KeyQueue {
  readonly waiters: Fifo<Waiter>
  /** Waiters not cancelled and not yet handed a permit. */
  live: number
  /** Whether the key is in the ring (it may stay there with `live` 0 until the ring reaches it). */
  inRing: boolean
}

export interface KeyedFairOptions {
  /**
   * 0 (the default): a free permit goes to whoever asks first. Above 0: a request that finds permits
   * free and nobody waiting opens a batch instead, joins the ring, and yields to the scheduler this
   * many times before the free permits are handed out round-robin across every key that asked
   * meanwhile. So requests made at the same moment (all due at once: every actor's first runs, in the
   * order the actors were spawned) share the free permits by key, not by who came first: otherwise the
   * first keys to ask take every free permit (their USER_CONCURRENCY each), and every other key waits
   * for those runs to end. Costs a request that finds the semaphore idle that many yields.
   */
  readonly batchYields?: number
}

/**
 * Resumes after `turns` passes through the fiber's scheduler: what `turns` × `Effect.yieldNow()`
 * do (each yield is one task at the back of the scheduler's queue), as plain scheduler tasks in one
 * asynchronous step. The yields took about six run-loop instructions each, and a run slot's batch
 * made eight on every run that found a slot free (issue 16).
 */
const afterSchedulerTurns = (turns: number): Effect.Effect<void> =>
  turns <= 0
    ? Effect.void
    : Effect.withFiberRuntime((fiber) =>
        Effect.async<void>((resume) => {
          const scheduler = fiber.currentScheduler
          let left = turns - 1
          const step = () => {
            if (left-- <= 0) resume(Effect.void)
            else scheduler.scheduleTask(step, 0)
          }
          // Resuming the fiber is itself one more task on the scheduler, the last turn.
          scheduler.scheduleTask(step, 0)
        }),
      )

export const makeKeyedFairSemaphore = (permits: number, options: KeyedFairOptions = {}): Effect.Effect<KeyedFairSemaphore> =>
  Effect.sync(() => {
    const batchYields = options.batchYields ?? 0
    let free = permits
    let waiting = 0
    /** A batch is open: free permits wait for its hand-out instead of going to whoever asks. */
    let batchOpen = false
    /** `whileHeld` calls under way: free permits wait for the last one's end. */
    let holds = 0
    const queues = new Map<string, KeyQueue>()
    const ring = new Fifo<string>()

    /** The next waiter round-robin: the oldest live waiter of the key at the ring's head. */
    const next = (): Waiter | undefined => {
      for (;;) {
        const key = ring.shift()
        if (key === undefined) return undefined
        const queue = queues.get(key)!
        queue.inRing = false
        let waiter = queue.waiters.shift()
        while (waiter?.cancelled) waiter = queue.waiters.shift()
        if (waiter === undefined) {
          queues.delete(key)
          continue
        }
        queue.live--
        if (queue.live > 0) {
          queue.inRing = true
          ring.push(key)
        } else {
          queues.delete(key)
        }
        return waiter
      }
    }

    const hand = (waiter: Waiter) => {
      waiting--
      waiter.handed = true
      Deferred.unsafeDone(waiter.deferred, Exit.void)
    }

    const release = Effect.sync(() => {
      const waiter = next()
      if (waiter === undefined) {
        free++
        return
      }
      // The permit passes straight to the waiter.
      hand(waiter)
    })

    /** The batch's hand-out: every free permit, round-robin across the keys that asked. */
    const handOut = Effect.sync(() => {
      batchOpen = false
      while (free > 0) {
        const waiter = next()
        if (waiter === undefined) return
        free--
        hand(waiter)
      }
    })

    const acquire = (key: string) =>
      Effect.suspend(() => {
        // `free > 0` only while nobody waits (a release with a live waiter hands its permit over), or
        // while a batch is open.
        if (free > 0 && batchYields === 0 && holds === 0) {
          free--
          return Effect.void
        }
        const opens = free > 0 && !batchOpen && holds === 0
        if (opens) batchOpen = true
        const waiter: Waiter = { deferred: Deferred.unsafeMake<void>(FiberId.none), handed: false, cancelled: false }
        let queue = queues.get(key)
        if (queue === undefined) {
          queue = { waiters: new Fifo(), live: 0, inRing: false }
          queues.set(key, queue)
        }
        queue.waiters.push(waiter)
        queue.live++
        if (!queue.inRing) {
          queue.inRing = true
          ring.push(key)
        }
        waiting++
        const mine = queue
        // The opener hands the batch out whatever happens to it meanwhile (uninterruptible), so no
        // permit stays free with waiters.
        const opened = opens
          ? Effect.uninterruptible(Effect.zipRight(afterSchedulerTurns(batchYields), handOut))
          : Effect.void
        return Effect.zipRight(opened, Deferred.await(waiter.deferred)).pipe(
          Effect.onInterrupt(() =>
            Effect.suspend(() => {
              if (waiter.handed) return release // handed a permit while being interrupted: pass it on
              waiter.cancelled = true
              mine.live--
              waiting--
              return Effect.void
            }),
          ),
        )
      })

    return {
      withPermit:
        (key: string) =>
        <A, E, R>(self: Effect.Effect<A, E, R>) =>
          Effect.uninterruptibleMask((restore) =>
            Effect.suspend(() => {
              // A free permit and no batching: taken here, as `acquire` would take it, without its steps.
              if (free > 0 && batchYields === 0 && holds === 0) {
                free--
                return Effect.ensuring(restore(self), release)
              }
              return Effect.zipRight(restore(acquire(key)), Effect.ensuring(restore(self), release))
            }),
          ),
      whileHeld: <A, E, R>(self: Effect.Effect<A, E, R>) =>
        Effect.acquireUseRelease(
          Effect.sync(() => {
            holds++
          }),
          () => self,
          () =>
            Effect.suspend(() => {
              holds--
              if (holds > 0 || free === 0 || batchOpen) return Effect.void
              // The requests of the hold's last steps may not have been made yet: a batch's yields first.
              batchOpen = true
              return Effect.zipRight(afterSchedulerTurns(Math.max(1, batchYields)), handOut)
            }),
        ),
      taken: Effect.sync(() => permits - free),
      waiting: Effect.sync(() => waiting),
      waitingKeys: Effect.sync(() => {
        let n = 0
        for (const q of queues.values()) if (q.live > 0) n++
        return n
      }),
    }
  })
