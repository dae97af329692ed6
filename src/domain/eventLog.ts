/** One row of the sync server's event log `sync_changes` (SPEC §2), decoded at the query. */
import { Schema } from "effect"

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
  field_timestamps: Schema.NullOr(Schema.Unknown),
  /** The inserting transaction's start time. */
  created_at: Schema.DateFromSelf,
})
export type SyncChange = typeof SyncChange.Type

/** A record's identity: two users may share a record_id. */
export interface RecordKey {
  readonly userId: string
  readonly appId: string
  readonly table: string
  readonly recordId: string
}
