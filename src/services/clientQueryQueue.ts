/**
 * One statement at a time on a pg connection, queued here rather than in pg (issue 16).
 *
 * A discovery pass overlaps its statements on one connection: the next page's FETCH, a batch's snapshot
 * writes and its applied marks are all sent before the first has answered. pg 8 queues a query handed to
 * a client that is still executing another, warns of that queue as deprecated ("Calling client.query()
 * when the client is already executing a query", printed once by every runner process) and pg 9 removes
 * it. Waiting for a turn in Effect instead (a FIFO permit, tried and reverted) kept the order but not the
 * promptness: the next statement waited for the scheduler to resume its fiber behind the pass's own work,
 * and the 1M-row burst took about 15 % longer.
 *
 * This queue hands the next statement to pg in the same synchronous step that ends the previous one (its
 * callback, or the submittable's `handleReadyForQuery`/`handleError`), as pg's own queue does, so pg is
 * never handed a statement while it runs another and nothing waits for a scheduler. The order is the
 * order of the calls, as before.
 *
 * `queueQueries(client)` puts the queue in front of one client's `query` (Database.ts does so for each
 * connection its pool opens). The queued call goes to the prototype's `query` at the moment it is sent.
 */
import type Pg from "pg"

type Callback = (error: Error | null, result?: unknown) => void

interface Submittable {
  readonly submit: (connection: unknown) => unknown
  callback?: Callback
  handleError?: (error: Error, connection: unknown) => void
  handleReadyForQuery?: (connection: unknown) => void
}

const isSubmittable = (config: unknown): config is Submittable =>
  typeof config === "object" && config !== null && typeof (config as { submit?: unknown }).submit === "function"

/** The queue's own state for one client, for tests and the bench's tools. */
export interface ClientQueue {
  /** Statements waiting here, not yet handed to pg. */
  readonly waiting: () => number
  /** The most that waited at once. */
  readonly mostWaiting: () => number
}
const queues = new WeakMap<object, ClientQueue>()
export const clientQueueOf = (client: object): ClientQueue | undefined => queues.get(client)

export const queueQueries = (client: Pg.ClientBase): void => {
  // A client whose `query` this module already wraps has its queue here.
  if (queues.has(client)) return
  const proto = Object.getPrototypeOf(client) as { query: (...args: Array<unknown>) => unknown }
  const waiting: Array<() => void> = []
  let mostWaiting = 0
  let busy = false
  queues.set(client, { waiting: () => waiting.length, mostWaiting: () => mostWaiting })

  /**
   * The statement under way has ended: the next one goes to pg now, in this same step, and the queue
   * stays busy with it (a statement sent while it runs waits behind it, not in pg's own queue).
   */
  const ended = () => {
    const next = waiting.shift()
    busy = next !== undefined
    if (next !== undefined) next()
  }
  const sendOrWait = (send: () => void) => {
    if (busy) {
      waiting.push(send)
      if (waiting.length > mostWaiting) mostWaiting = waiting.length
      return
    }
    busy = true
    send()
  }
  /** A statement's end: its turn ends once, however many of pg's ends (callback, ready, error) call it. */
  const once = () => {
    let done = false
    return () => {
      if (done) return
      done = true
      ended()
    }
  }

  const query = function (this: Pg.ClientBase, config: unknown, values?: unknown, callback?: unknown): unknown {
    if (this !== client) return proto.query.call(this, config, values, callback)
    // pg's own argument errors (a null query) are thrown at the call, not queued.
    if (config === null || config === undefined) return proto.query.call(client, config, values, callback)
    if (isSubmittable(config)) {
      // pg takes a callback for a submittable from the second or third argument; it ends with
      // handleReadyForQuery, or handleError (a statement's failure, after which pg never calls
      // handleReadyForQuery on it; or the connection's loss, after which nothing else comes).
      const done = once()
      const onReady = config.handleReadyForQuery
      const onError = config.handleError
      config.handleReadyForQuery = function (this: Submittable, connection: unknown) {
        try {
          onReady?.call(this, connection)
        } finally {
          done()
        }
      }
      config.handleError = function (this: Submittable, error: Error, connection: unknown) {
        try {
          onError?.call(this, error, connection)
        } finally {
          done()
        }
      }
      sendOrWait(() => void proto.query.call(client, config, values, callback))
      return config
    }
    // A text or config object: pg calls its callback once, with the result or the error.
    const given = (typeof values === "function" ? values : callback) as Callback | undefined
    const params = typeof values === "function" ? undefined : values
    const done = once()
    if (given !== undefined) {
      sendOrWait(() =>
        proto.query.call(client, config, params, (error: Error | null, result?: unknown) => {
          try {
            given(error, result)
          } finally {
            done()
          }
        }),
      )
      return undefined
    }
    return new Promise((resolve, reject) => {
      sendOrWait(() =>
        proto.query.call(client, config, params, (error: Error | null, result?: unknown) => {
          if (error) reject(error)
          else resolve(result)
          done()
        }),
      )
    })
  }
  ;(client as unknown as { query: typeof query }).query = query
}
