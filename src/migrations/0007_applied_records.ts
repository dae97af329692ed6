/**
 * mana_ai.applied_records: the rows discovery applied inside the look-back window, one row per record
 * and pass (or write-back) with the ids in an array, unlogged (issue 16 item 3). A burst of a million
 * rows inside the window marked every row in mana_ai.applied_changes: a million keys parsed from text
 * (a uuid and a timestamp each), inserted into a btree and written to the WAL took half of the 1M
 * burst's time (`bench/tools/bootstrapOnce.ts --burst`: 9.7 s with the marks, 4.1 s without); here it is
 * one row per record (50,000), and nothing in the WAL.
 *
 * The marks are a cache, not a record: after a crash Postgres empties an unlogged table (a promoted
 * standby has it empty), and a pass that finds no mark for a row inside the window reads it as a late
 * row and replays its record from the log, which gives the same snapshot (MissionStore's late path;
 * `MissionStore.test.ts` drops the marks between passes and compares). The cost of a lost table is one
 * replay of the records written in the last window. applied_changes stays, unused by this release: a
 * runner of the earlier release still running beside this one (a rolling upgrade) keeps marking there,
 * and each reads the other's rows as late and replays them, correct either way.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`
    CREATE UNLOGGED TABLE IF NOT EXISTS mana_ai.applied_records (
      user_id text NOT NULL,
      record_id text NOT NULL,
      newest_at timestamptz NOT NULL,
      change_ids uuid[] NOT NULL
    )`
  yield* sql`CREATE INDEX IF NOT EXISTS applied_records_record_idx ON mana_ai.applied_records (user_id, record_id)`
})
