/**
 * Server-side paging of the actor list for the operator page: with 10,000 actors the page gets one
 * screenful, never the whole list. Order: quarantined first, then backing-off, running, idle (and
 * any state the supervisor adds later), by user id within each. Linear in the number of actors.
 */
import type { ActorView } from "./ServerState.js"

export const STATE_ORDER: ReadonlyArray<string> = ["quarantined", "backing-off", "running", "idle"]

export interface ActorPageQuery {
  readonly offset: number
  readonly limit: number
  /** Only actors in this state. */
  readonly state?: string | undefined
  /** Only actors whose user id contains this text. */
  readonly user?: string | undefined
  /** The user whose actor to return as `detail`. */
  readonly detail?: string | undefined
}

export interface ActorPage {
  /** Actors matching the filter (all pages). */
  readonly total: number
  readonly offset: number
  readonly limit: number
  /** Every actor (unfiltered) by state. */
  readonly counts: Readonly<Record<string, number>>
  readonly items: ReadonlyArray<ActorView>
  /** Runs in flight across every actor. */
  readonly inFlight: number
  /** The `detail` user's actor, if it has one. */
  readonly detail: ActorView | null
}

const byUserId = (a: ActorView, b: ActorView) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0)

export interface ActorOrder {
  /** `all` by user id; sorts only when the set of users differs from the last call's. */
  readonly byUserId: (all: ReadonlyArray<ActorView>) => ReadonlyArray<ActorView>
}

/**
 * Sorting 10,000 user ids costs the runner milliseconds on every poll (string comparisons), while
 * the set of actors changes seldom: the last order is kept as user id → position, so a poll places
 * each actor in one pass and sorts only when an actor came or went.
 */
export const makeActorOrder = (): ActorOrder => {
  let position = new Map<string, number>()
  return {
    byUserId: (all) => {
      if (all.length === position.size) {
        const placed: Array<ActorView | undefined> = new Array(all.length)
        let complete = true
        for (const actor of all) {
          const at = position.get(actor.userId)
          if (at === undefined || placed[at] !== undefined) {
            complete = false
            break
          }
          placed[at] = actor
        }
        if (complete) return placed as Array<ActorView>
      }
      const sorted = [...all].sort(byUserId)
      position = new Map(sorted.map((actor, i) => [actor.userId, i]))
      return sorted
    },
  }
}

/**
 * One pass over `all`, which must come in user-id order (`ActorOrder.byUserId`, or the supervisor's
 * sorted status): with 10,000 actors every pass over them costs the runner measurably.
 */
export const pageActors = (all: ReadonlyArray<ActorView>, query: ActorPageQuery): ActorPage => {
  const counts: Record<string, number> = {}
  const buckets = new Map<string, Array<ActorView>>(STATE_ORDER.map((s) => [s, []]))
  const needle = query.user === undefined || query.user === "" ? undefined : query.user
  let inFlight = 0
  let detail: ActorView | null = null
  for (const actor of all) {
    counts[actor.state] = (counts[actor.state] ?? 0) + 1
    inFlight += actor.inFlight
    if (actor.userId === query.detail) detail = actor
    if (query.state !== undefined && actor.state !== query.state) continue
    if (needle !== undefined && !actor.userId.includes(needle)) continue
    let bucket = buckets.get(actor.state)
    if (bucket === undefined) {
      bucket = []
      buckets.set(actor.state, bucket)
    }
    bucket.push(actor)
  }
  const items: Array<ActorView> = []
  let skip = query.offset
  let total = 0
  for (const bucket of buckets.values()) {
    total += bucket.length
    if (skip >= bucket.length) {
      skip -= bucket.length
      continue
    }
    for (let i = skip; i < bucket.length && items.length < query.limit; i++) items.push(bucket[i]!)
    skip = 0
  }
  return { total, offset: query.offset, limit: query.limit, counts, items, inFlight, detail }
}
