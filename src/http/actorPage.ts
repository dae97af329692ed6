/**
 * Server-side paging of the actor list for the operator page: with 10,000 actors the page gets one
 * screenful, never the whole list. Order: quarantined first, then backing-off, running, idle (and
 * any state the supervisor adds later), by user id within each. Linear in the number of actors.
 */
import type { ActorCensusView, ActorView } from "./ServerState.js"

const STATE_ORDER: ReadonlyArray<string> = ["quarantined", "backing-off", "running", "idle"]

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

/** The position of `key` in the ascending `keys`; -1 when absent. */
const indexOf = (keys: ReadonlyArray<string>, key: string): number => {
  let lo = 0
  let hi = keys.length - 1
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1
    const at = keys[mid]!
    if (at === key) return mid
    if (at < key) lo = mid + 1
    else hi = mid - 1
  }
  return -1
}

/**
 * The same page as `pageActors`, from a census: it reads the few actors not idle and only the
 * page's idle ones, so a poll does not cost every actor's status. Idle actors are the user ids
 * not among the busy; without a user filter the page's first idle one is found from the busy ones'
 * positions (no pass over the ids), with one a pass over the ids (strings only, no statuses).
 */
export const pageCensus = (census: ActorCensusView, query: ActorPageQuery): ActorPage => {
  const needle = query.user === undefined || query.user === "" ? undefined : query.user
  const matches = (userId: string) => needle === undefined || userId.includes(needle)
  const counts: Record<string, number> = {}
  const busy = new Map<string, ActorView>()
  const buckets = new Map<string, Array<ActorView>>(STATE_ORDER.filter((s) => s !== "idle").map((s) => [s, []]))
  let inFlight = 0
  for (const actor of census.notIdle) {
    counts[actor.state] = (counts[actor.state] ?? 0) + 1
    inFlight += actor.inFlight
    busy.set(actor.userId, actor)
    if (query.state !== undefined && actor.state !== query.state) continue
    if (!matches(actor.userId)) continue
    let bucket = buckets.get(actor.state)
    if (bucket === undefined) {
      bucket = []
      buckets.set(actor.state, bucket)
    }
    bucket.push(actor)
  }
  const idleCount = census.total - busy.size
  if (idleCount > 0) counts.idle = idleCount

  const items: Array<ActorView> = []
  let skip = query.offset
  let total = 0
  for (const bucket of buckets.values()) {
    bucket.sort(byUserId)
    total += bucket.length
    if (skip >= bucket.length) {
      skip -= bucket.length
      continue
    }
    for (let i = skip; i < bucket.length && items.length < query.limit; i++) items.push(bucket[i]!)
    skip = 0
  }

  if (query.state === undefined || query.state === "idle") {
    const ids = census.userIds
    const take = (userId: string) => {
      const actor = census.status(userId)
      if (actor !== null) items.push(actor)
    }
    if (needle !== undefined) {
      const idle = ids.filter((id) => !busy.has(id) && id.includes(needle))
      total += idle.length
      for (let i = skip; i < idle.length && items.length < query.limit; i++) take(idle[i]!)
    } else {
      total += idleCount
      if (skip < idleCount && items.length < query.limit) {
        // The idle actor of rank `skip`: step past every busy id at or before it.
        const busyAt = [...busy.keys()].map((id) => indexOf(ids, id)).filter((i) => i >= 0).sort((a, b) => a - b)
        let at = skip
        for (const i of busyAt) {
          if (i <= at) at++
          else break
        }
        for (; at < ids.length && items.length < query.limit; at++) if (!busy.has(ids[at]!)) take(ids[at]!)
      }
    }
  }

  const detail = query.detail === undefined ? null : (busy.get(query.detail) ?? census.status(query.detail))
  return { total, offset: query.offset, limit: query.limit, counts, items, inFlight, detail }
}
