/**
 * A deadline on an effect: `Effect.timeoutFail`'s contract at half its fibers (issue 16). A
 * primitive: it knows nothing of the app (the run's MISSION_TIMEOUT_MS, each LLM request's
 * LLM_TIMEOUT_MS).
 *
 * The contract, as `timeoutFail` keeps it: `self` runs interruptibly; when `duration` has passed on
 * the fiber's Clock first, `self` is interrupted, its finalizers run to their end (a transaction
 * rolls back; a region that is uninterruptible, like a COMMIT under way, finishes first), and then
 * the result is the typed error `onTimeout()`, whatever `self` ended with. When `self` ends first its
 * exit is the result, and on success its FiberRefs are joined back into the caller. Interrupting the
 * caller interrupts `self` and waits for it.
 *
 * Why not `timeoutFail`: it races two forked fibers (`self` and a sleep) and interrupts and awaits
 * the loser: at about 50 µs of CPU each, the three of a run cost about 1 ms per run (DEVELOPERS.md).
 * Here `self` is the one fork; the sleep is an entry in a heap per Clock, and one fiber per Clock
 * sleeps on that Clock until the earliest entry (the actor host's wake-up schedule, the same
 * `WakeHeap`). An entry costs a heap push; a deadline met cancels its entry in O(1) (dropped when it
 * reaches the top, or by the heap's compaction). The timer fiber wakes early only when an entry
 * earlier than the one it sleeps for arrives, and is stopped once no deadline is left (so, under
 * load, one timer fiber serves many runs; a lone run still forks two fibers, as before).
 *
 * It sleeps on the caller's Clock, so TestClock drives it: the deadline fires when the clock reaches
 * the instant of the call plus `duration`, not before. Each timer fiber is started with
 * `Effect.runFork` (no parent: it outlives the call that started it, and a test's TestClock that goes
 * away takes its heap and fiber with it).
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import type * as Fiber from "effect/Fiber"
import * as FiberId from "effect/FiberId"
import { type LazyArg, dual } from "effect/Function"
import { type WakeEntry, WakeHeap } from "./WakeHeap.js"

/** What a heap entry does when due; cleared once the deadline is met, so a dead entry holds no fiber. */
interface Alarm {
  fire: (() => void) | undefined
}

/** The deadlines of one Clock and the fiber that sleeps until the earliest. */
class Timer {
  private heap = new WakeHeap<Alarm>()
  /** The instant the timer fiber sleeps until; Infinity: no timer fiber. */
  private wakeAt = Number.POSITIVE_INFINITY
  /** Bumped when a timer fiber is replaced; an older fiber that still wakes does nothing. */
  private generation = 0
  private fiber: Fiber.RuntimeFiber<void> | undefined

  constructor(private readonly clock: Clock.Clock) {}

  add(at: number, alarm: Alarm): WakeEntry<Alarm> {
    const entry = this.heap.add(at, alarm)
    if (at < this.wakeAt) this.restart()
    return entry
  }

  cancel(entry: WakeEntry<Alarm>): void {
    entry.target.fire = undefined
    this.heap.cancel(entry)
    // No deadline left: no timer either (a sleep left behind would hold the event loop open).
    if (this.heap.size === 0 && this.fiber !== undefined) {
      this.generation++
      this.fiber.unsafeInterruptAsFork(FiberId.none)
      this.fiber = undefined
      this.wakeAt = Number.POSITIVE_INFINITY
      this.heap = new WakeHeap<Alarm>()
    }
  }

  /** A new timer fiber for an earlier entry; the one sleeping for a later instant is interrupted. */
  private restart(): void {
    const generation = ++this.generation
    const previous = this.fiber
    this.fiber = undefined
    previous?.unsafeInterruptAsFork(FiberId.none)
    // Started at once: its first sleep is on the Clock before `add` returns.
    const fiber = Effect.runFork(this.wake(generation))
    if (this.generation === generation && this.wakeAt !== Number.POSITIVE_INFINITY) this.fiber = fiber
  }

  private wake(generation: number): Effect.Effect<void> {
    return Effect.suspend(() => {
      if (this.generation !== generation) return Effect.void
      const now = this.clock.unsafeCurrentTimeMillis()
      for (const entry of this.heap.takeDue(now)) {
        const fire = entry.target.fire
        entry.target.fire = undefined
        fire?.()
      }
      const next = this.heap.peek()
      if (next === undefined) {
        this.wakeAt = Number.POSITIVE_INFINITY
        this.fiber = undefined
        return Effect.void
      }
      this.wakeAt = next.at
      return Effect.flatMap(this.clock.sleep(Duration.millis(next.at - now)), () => this.wake(generation))
    })
  }
}

const timers = new WeakMap<Clock.Clock, Timer>()

const timerOf = (clock: Clock.Clock): Timer => {
  let timer = timers.get(clock)
  if (timer === undefined) {
    timer = new Timer(clock)
    timers.set(clock, timer)
  }
  return timer
}

/**
 * Calls `fire` once `clock` reaches its present plus `millis`, from the same heap and timer fiber as
 * withDeadline (so TestClock drives it); the function returned cancels it (a no-op once it fired).
 * For an effect that stops its own work when told (an `Effect.async` whose request can be aborted):
 * its deadline then needs no fiber of its own, where withDeadline forks one (issue 16).
 */
export const unsafeScheduleAlarm = (clock: Clock.Clock, millis: number, fire: () => void): (() => void) => {
  if (millis === Number.POSITIVE_INFINITY) return () => {}
  const timer = timerOf(clock)
  const entry = timer.add(clock.unsafeCurrentTimeMillis() + millis, { fire })
  return () => timer.cancel(entry)
}

interface Ended<A, E> {
  readonly exit: Exit.Exit<A, E>
  readonly timedOut: boolean
}

const awaitWithin = <A, E>(child: Fiber.RuntimeFiber<A, E>, clock: Clock.Clock, millis: number, caller: FiberId.FiberId) =>
  Effect.async<Ended<A, E>>((resume) => {
    let timedOut = false
    let entry: WakeEntry<Alarm> | undefined
    if (millis !== Number.POSITIVE_INFINITY) {
      const timer = timerOf(clock)
      entry = timer.add(clock.unsafeCurrentTimeMillis() + millis, {
        fire: () => {
          timedOut = true
          child.unsafeInterruptAsFork(caller)
        },
      })
      const alarm = entry
      child.addObserver((exit) => {
        timer.cancel(alarm)
        resume(Effect.succeed({ exit, timedOut }))
      })
    } else {
      child.addObserver((exit) => resume(Effect.succeed({ exit, timedOut })))
    }
  }, child.id())

/**
 * `self` within `duration` on the fiber's Clock, else interrupted and failed with `onTimeout()`:
 * `Effect.timeoutFail`'s contract (see the header) with one fiber forked instead of two.
 */
export const withDeadline: {
  <E1>(options: {
    readonly duration: Duration.DurationInput
    readonly onTimeout: LazyArg<E1>
  }): <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | E1, R>
  <A, E, R, E1>(
    self: Effect.Effect<A, E, R>,
    options: { readonly duration: Duration.DurationInput; readonly onTimeout: LazyArg<E1> },
  ): Effect.Effect<A, E | E1, R>
} = dual(
  2,
  <A, E, R, E1>(
    self: Effect.Effect<A, E, R>,
    options: { readonly duration: Duration.DurationInput; readonly onTimeout: LazyArg<E1> },
  ): Effect.Effect<A, E | E1, R> => {
    const millis = Duration.toMillis(Duration.decode(options.duration))
    // The caller waits uninterruptibly: its interruption reaches `self` (a child fiber) at once,
    // and the caller goes on only once `self` has ended, finalizers and all.
    return Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Effect.fork(restore(self)), (child) =>
        Effect.clockWith((clock) =>
          Effect.fiberIdWith((caller) =>
            Effect.flatMap(awaitWithin(child, clock, millis, caller), ({ exit, timedOut }): Effect.Effect<A, E | E1> => {
              if (timedOut) return Effect.fail(options.onTimeout())
              if (Exit.isSuccess(exit)) return Effect.as(child.inheritAll, exit.value)
              return exit
            }),
          ),
        ),
      ),
    )
  },
)
