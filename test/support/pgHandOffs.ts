/**
 * Watches pg's own `Client#query` (the prototype's, which `clientQueryQueue.ts` calls when it hands a
 * statement over): how many statements reached pg, and how many of them reached a client that was still
 * executing another or had one waiting in pg's queue (deprecated; pg 9 removes it). `restore` puts pg's
 * method back.
 */
import pg from "pg"

export interface PgHandOffs {
  calls: number
  whileBusy: number
  readonly restore: () => void
}

export const watchPgHandOffs = (): PgHandOffs => {
  const original = pg.Client.prototype.query
  const seen: PgHandOffs = {
    calls: 0,
    whileBusy: 0,
    restore: () => {
      pg.Client.prototype.query = original
    },
  }
  pg.Client.prototype.query = function (this: pg.Client, ...args: Array<unknown>) {
    const client = this as unknown as { _activeQuery: unknown; _queryQueue: Array<unknown> }
    seen.calls += 1
    if (client._activeQuery != null || client._queryQueue.length > 0) seen.whileBusy += 1
    return (original as (...a: Array<unknown>) => unknown).apply(this, args)
  } as typeof original
  return seen
}
