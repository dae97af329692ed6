/**
 * Server-side paging of the actor list for the operator page: with 10,000 actors the page gets one
 * screenful, never the whole list. Order: quarantined first, then backing-off, running, idle (and
 * any state the supervisor adds later), by user id within each. Linear in the number of actors:
 * the supervisor's list already comes by user id, so a sort happens only when it does not.
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
}

export interface ActorPage {
  /** Actors matching the filter (all pages). */
  readonly total: number
  readonly offset: number
  readonly limit: number
  /** Every actor (unfiltered) by state. */
  readonly counts: Readonly<Record<string, number>>
  readonly items: ReadonlyArray<ActorView>
}

const byUserId = (a: ActorView, b: ActorView) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0)

const sortedByUser = (xs: Array<ActorView>): Array<ActorView> => {
  for (let i = 1; i < xs.length; i++) {
    if (byUserId(xs[i - 1]!, xs[i]!) > 0) return xs.sort(byUserId)
  }
  return xs
}

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

export const pageActors = (all: ReadonlyArray<ActorView>, query: ActorPageQuery): ActorPage => {
  const counts: Record<string, number> = {}
  const buckets = new Map<string, Array<ActorView>>(STATE_ORDER.map((s) => [s, []]))
  const needle = query.user === undefined || query.user === "" ? undefined : query.user
  for (const actor of all) {
    counts[actor.state] = (counts[actor.state] ?? 0) + 1
    if (query.state !== undefined && actor.state !== query.state) continue
    if (needle !== undefined && !actor.userId.includes(needle)) continue
    let bucket = buckets.get(actor.state)
    if (bucket === undefined) {
      bucket = []
      buckets.set(actor.state, bucket)
    }
    bucket.push(actor)
  }
  const ordered: Array<ActorView> = []
  for (const bucket of buckets.values()) for (const actor of sortedByUser(bucket)) ordered.push(actor)
  return {
    total: ordered.length,
    offset: query.offset,
    limit: query.limit,
    counts,
    items: ordered.slice(query.offset, query.offset + query.limit),
  }
}
