/**
 * Which generation of the sync server's `sync_changes` the database holds (SPEC §2, §13), read once
 * from the catalog at start, before anything else touches the table. Reads, replay, write-back and
 * discovery take the per-field time column and the write shape from here.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import { type SyncGeneration, generationOf } from "../domain/eventLog.js"

export interface EventLogSchemaShape {
  /** The generation found: named for its per-field time column. */
  readonly generation: SyncGeneration
  /** That column (`field_meta` today, `field_timestamps` in the seed's table); use with `sql(…)`. */
  readonly timeColumn: SyncGeneration
}

/** The start stops: the database holds no event log this runner can serve. */
export class EventLogSchemaUnknown extends Data.TaggedError("EventLogSchemaUnknown")<{ readonly message: string }> {}

const BOTH = "a field_meta column (today's sync server) or a field_timestamps column (the seed's)"

/** Reads the catalog as the runner role sees it (`sync_changes` resolved through its search_path). */
export const detectEventLogSchema: Effect.Effect<EventLogSchemaShape, EventLogSchemaUnknown | SqlError, SqlClient.SqlClient> =
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const table = yield* sql<{ found: boolean }>`SELECT to_regclass('sync_changes') IS NOT NULL AS found`
    if (table[0]?.found !== true) {
      return yield* new EventLogSchemaUnknown({
        message: `no table sync_changes is visible to the runner's role; expected the sync server's event log with ${BOTH}`,
      })
    }
    const columns = yield* sql<{ name: string }>`
      SELECT a.attname::text AS name
      FROM pg_catalog.pg_attribute a
      WHERE a.attrelid = to_regclass('sync_changes') AND a.attnum > 0 AND NOT a.attisdropped
        AND a.attname IN ('field_meta', 'field_timestamps')`
    const generation = generationOf(columns.map((c) => c.name))
    if (generation === undefined) {
      return yield* new EventLogSchemaUnknown({
        message: `sync_changes has neither a field_meta nor a field_timestamps column; expected ${BOTH}`,
      })
    }
    if (columns.length > 1) {
      yield* Effect.logWarning("sync_changes holds both field_meta and field_timestamps; using field_meta (today's sync server)")
    }
    yield* Effect.logInfo(
      generation === "field_meta"
        ? "Event log: today's sync_changes (field_meta, origin, space_id)"
        : "Event log: the seed's sync_changes (field_timestamps)",
    ).pipe(Effect.annotateLogs({ generation }))
    return { generation, timeColumn: generation }
  }).pipe(Effect.withSpan("EventLogSchema.detect"))

/** Read once when the layer is built (at start, after the pool and before the migrations' users). */
export class EventLogSchema extends Effect.Service<EventLogSchema>()("mana-ai/EventLogSchema", { effect: detectEventLogSchema }) {}
