/** One row of the sync server's event log `sync_changes` (SPEC §2), decoded at the query. */
import * as Schema from "effect/Schema"

export const ChangeOp = Schema.Literal("insert", "update", "delete")
export type ChangeOp = typeof ChangeOp.Type

export const SyncChange = Schema.Struct({
  id: Schema.String,
  app_id: Schema.String,
  table_name: Schema.String,
  record_id: Schema.String,
  user_id: Schema.String,
  op: ChangeOp,
  data: Schema.NullOr(Schema.Unknown),
  /** The per-field time column of the generation found (`field_meta` or `field_timestamps`), read under this name. */
  field_timestamps: Schema.NullOr(Schema.Unknown),
  /** The inserting transaction's start time. */
  created_at: Schema.DateFromSelf,
})
export type SyncChange = typeof SyncChange.Type

/**
 * The two generations of `sync_changes` (SPEC §2, §13), named for their per-field time column:
 * `field_timestamps` (the seed's) and `field_meta` (today's sync server, with `origin` and `space_id`).
 */
export const SyncGeneration = Schema.Literal("field_meta", "field_timestamps")
export type SyncGeneration = typeof SyncGeneration.Type
export const SYNC_GENERATIONS: ReadonlyArray<SyncGeneration> = ["field_meta", "field_timestamps"]

/** The generation a table with these columns is; `field_meta` wins should both exist (a hard cut made neither). */
export const generationOf = (columns: ReadonlyArray<string>): SyncGeneration | undefined =>
  columns.includes("field_meta") ? "field_meta" : columns.includes("field_timestamps") ? "field_timestamps" : undefined
