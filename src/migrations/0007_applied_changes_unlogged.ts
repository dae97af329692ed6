/**
 * mana_ai.applied_changes unlogged (issue 16 item 3): a burst of rows inside the look-back window marks
 * every row applied, and writing a million marks to the WAL as well (heap and key) cost the 1M burst
 * about a tenth of its wall time (`bench/tools/bootstrapOnce.ts --burst`, three alternating pairs:
 * 9.68 s on average logged, 8.61 s unlogged) and a checkpoint. The marks are a cache, not a record:
 * after a crash Postgres empties an unlogged table (and a promoted standby has it empty), and a pass
 * that finds no mark for a row inside the window reads it as a late row and replays its record from
 * the log, which gives the same snapshot (MissionStore's late path; `MissionStore.test.ts` drops the
 * marks between two passes and compares). The cost of a lost table is one replay of the records
 * written in the last window, once.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import * as Effect from "effect/Effect"

export default Effect.gen(function* () {
  const sql = yield* SqlClient.SqlClient
  yield* sql`ALTER TABLE mana_ai.applied_changes SET UNLOGGED`
})
