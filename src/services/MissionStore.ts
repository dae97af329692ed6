/**
 * MissionStore on the runner's own tables in schema mana_ai (SPEC §2, §7, §8).
 *
 * refresh reads mission rows newer than the cursor minus a look-back window, skipping ids already
 * applied, so a row whose transaction committed late (an earlier created_at) is still seen; each
 * record is replayed incrementally from its snapshot, or again from the log when a row sorts before
 * what the snapshot already holds. One refresh is one pass over one server-side cursor sorted by
 * record, so the first discovery of a long history and a burst of rows cost one read of their rows.
 * Timestamps travel as exact UTC text (microseconds): a JS Date would round them and break the
 * (created_at, id) order. Each pass is one transaction holding an
 * advisory lock, so two runner instances never apply the same rows twice. The cursor never runs
 * ahead of the database's now(), and a periodic reconciliation catches rows committed after the
 * window had passed them.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import type * as Statement from "@effect/sql/Statement"
import * as PgClient from "@effect/sql-pg/PgClient"
import * as Clock from "effect/Clock"
import * as Context from "effect/Context"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as FiberRef from "effect/FiberRef"
import * as Metric from "effect/Metric"
import * as Option from "effect/Option"
import * as Queue from "effect/Queue"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { ChangeOp, type SyncGeneration } from "../domain/eventLog.js"
import { MISSIONS_APP_ID, MISSIONS_TABLE, type Mission } from "../domain/mission.js"
import { decodeMissionRecord, isSchedulable, missionValidity } from "../domain/missionValidity.js"
import {
  type RecordState,
  type ReplayRow,
  applyChanges,
  fieldTimesProblem,
  initialState,
  isApplicable,
  isLive,
  parseInstant,
} from "../domain/replay.js"
import { ClusterConfig, shardOf } from "../cluster/ClusterConfig.js"
import { workBegins } from "../layers/jitPolicy.js"
import { RunnerConfig } from "./AppConfig.js"
import { EventLogSchema } from "./EventLogSchema.js"
import { withDominatedIterations } from "./currentMission.js"
import { claimCte, claimTimes } from "./runClaims.js"
import { transactionLossAsError } from "./withUserScope.js"
import {
  discoveryDuration,
  discoveryReconciledTotal,
  discoveryRowsRead,
  malformedRowsTotal,
  missionsSkippedTotal,
} from "./metrics.js"

export interface MissionSnapshot {
  readonly userId: string
  readonly missionId: string
  /**
   * The replayed record with every field (unknown ones included) but `iterations`; null once deleted.
   * A snapshot schedules a mission; the run reads the mission, iterations and all, as it stands then.
   * The iterations grow by one with every run, and carrying them cost every pass and due read in
   * proportion to the mission's history (issue 16).
   */
  readonly record: Readonly<Record<string, unknown>> | null
  /** Right: the decoded mission, its `iterations` empty (see `record`). Left: why it is skipped (malformed), a sentence for logs/API. */
  readonly decoded: Either.Either<Mission, string>
  /** Active, not deleted, decodes, and has a nextRunAt: the actor schedules it. */
  readonly schedulable: boolean
  readonly nextRunAt: Date | null
}

export interface RefreshResult {
  /**
   * Snapshots whose record changed in this refresh (deleted ones included, record null), of the users
   * RefreshKeeps accepts (all by default).
   */
  readonly changed: ReadonlyArray<MissionSnapshot>
  /** Snapshots that changed, those RefreshKeeps left out included; absent when it left none out. */
  readonly changedCount?: number
  /** Event-log rows read by this refresh. */
  readonly rowsRead: number
  /** Connections the refresh read its rows on, when more than one (a large pass on a server, SPLIT_MIN_ROWS). */
  readonly parts?: number
}

/**
 * Whose changed snapshots a refresh hands back (issue 16 item 5). The supervisor's first pass spawns
 * its actors from the stored snapshots afterwards and drops the changes of users without an actor, so
 * it keeps only those: a first discovery of a long history otherwise held every mission's snapshot
 * (its record and decoded mission) until the pass ended (1M rows: a heap of about 190 MB at its peak
 * instead of about 100, and the pages stay in RSS). Default: every user.
 */
export const RefreshKeeps: FiberRef.FiberRef<(userId: string) => boolean> = FiberRef.unsafeMake<(userId: string) => boolean>(
  () => true,
)

export interface MissionStoreShape {
  /**
   * Applies mission rows new since the last refresh (re-reading a short window behind the cursor,
   * skipping ids already applied, so a late-committing row is still seen). Cost follows new rows.
   * Rows that cannot be applied are counted and logged; the rest goes on. Once per reconcile interval
   * it also replays every mission up to the window and corrects snapshots that missed a row (a sync
   * transaction open longer than the window); those are in `changed` too.
   */
  readonly refresh: Effect.Effect<RefreshResult, SqlError>
  /**
   * Stored snapshots that are schedulable, across users, in (user, mission) order: at most `limit` of
   * them after `after` (that snapshot's user and mission; undefined: from the first). The supervisor
   * starts its actors from them a page at a time (issue 16 item 5): 50,000 missions read at once, each
   * with its record and decoded mission, were the 1M-row start-up's peak heap.
   */
  readonly schedulable: (
    after: { readonly userId: string; readonly missionId: string } | undefined,
    limit: number,
  ) => Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /**
   * Every schedulable snapshot of users in the given cluster shards (`mission_snapshots.shard`, issue
   * 19): what a runner primes from and reads again for the shards it gained. Cost follows those shards.
   */
  readonly schedulableIn: (shards: ReadonlyArray<number>) => Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /** Schedulable snapshots with nextRunAt <= now; with `shards`, only those of users in them (cluster mode). */
  readonly due: (now: Date, shards?: ReadonlyArray<number>) => Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /** All of one user's snapshots, deleted ones excluded (for /internal/missions/:userId). */
  readonly forUser: (userId: string) => Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError>
  /**
   * Claims one scheduled run (mission + iteration id) for `ttl` so a second runner instance does not
   * spend an LLM call on it. True when this caller holds the claim (new, expired, or already its own).
   */
  readonly claim: (
    key: { readonly userId: string; readonly missionId: string; readonly iterationId: string },
    owner: string,
    ttl: Duration.Duration,
  ) => Effect.Effect<boolean, SqlError>
  readonly releaseClaim: (
    key: { readonly userId: string; readonly missionId: string; readonly iterationId: string },
    owner: string,
  ) => Effect.Effect<void, SqlError>
}

export interface MissionStoreOptions {
  /** How far behind the cursor each refresh re-reads (default: DISCOVERY_LOOKBACK_MS). */
  readonly lookback?: Duration.DurationInput
  /** Mission records loaded, judged and written per statement within a refresh's one pass. */
  readonly batchSize?: number
  /** How often a refresh also reconciles every mission with the log (default: DISCOVERY_RECONCILE_INTERVAL_MS). */
  readonly reconcileInterval?: Duration.DurationInput
  /** Mission records per reconciliation transaction. */
  readonly reconcileChunk?: number
  /** Rows after the cursor from which a refresh reads in parts (default SPLIT_MIN_ROWS). */
  readonly splitMinRows?: number
}

const DEFAULT_BATCH_SIZE = 1000
/**
 * Records (each with all its new rows) per FETCH of the discovery cursor. The FETCH count is text of
 * the statement (it cannot be a parameter, and sql.literal is kept out of src/): keep both at 1000.
 */
const FETCH_RECORDS = 1000
const DEFAULT_RECONCILE_CHUNK = 500
/**
 * A pass that finds at least this many rows after the cursor (new since the last pass, not the window
 * it re-reads behind it) reads in PARTITIONS parts, each on its own connection (makeMissionStore's
 * readPartition): a first discovery, a burst. A steady state's few seconds of rows stay on one.
 */
const SPLIT_MIN_ROWS = 50_000
/** Parts of a large pass: one per core of a 2-core database server; each part rescans the rows it skips. */
const PARTITIONS = 2
/** Pages of a partitioned pass held at once (read, or being applied): as on one connection. */
const PAGES_IN_FLIGHT = 2
/** Rows applied between two ANALYZEs of mission_snapshots (see analyzeIfDue). */
const ANALYZE_AFTER_ROWS = 10_000

/** pg_advisory_xact_lock key for a refresh batch: the bytes of "manadisc". */
export const REFRESH_LOCK_KEY = "7881696566315094371"

/** created_at as exact UTC text, `YYYY-MM-DDTHH:MM:SS.ffffffZ`: fixed width, so it sorts as it reads. */
const exactUtc = (sql: SqlClient.SqlClient, column: string) =>
  sql`to_char(${sql(column)} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`

// ---------------------------------------------------------------- rows and positions

/** A position in the event log's total order. */
interface Position {
  readonly at: string
  readonly id: string
}

// Fixed-width UTC text and lower-case uuid text both sort as Postgres sorts timestamptz and uuid.
const comparePositions = (a: Position, b: Position): number =>
  a.at < b.at ? -1 : a.at > b.at ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0

const LogRow = Schema.Struct({
  id: Schema.String,
  user_id: Schema.String,
  record_id: Schema.String,
  op: ChangeOp,
  data: Schema.Unknown,
  field_timestamps: Schema.Unknown,
  at: Schema.String,
})
type LogRow = typeof LogRow.Type
const decodeLogRow = Schema.decodeUnknownEither(LogRow)

/** What LogRow's schema accepts, checked without building a parse result (see decodeRows). */
const isLogRowShape = (r: Record<string, unknown>): r is Record<string, unknown> & LogRow =>
  typeof r.id === "string" &&
  typeof r.user_id === "string" &&
  typeof r.record_id === "string" &&
  typeof r.at === "string" &&
  (r.op === "insert" || r.op === "update" || r.op === "delete") &&
  "data" in r &&
  "field_timestamps" in r

/** Whether noteRowProblems has anything to say about a row (most rows: no). */
const rowHasProblem = (row: LogRow): boolean =>
  row.op === "delete"
    ? fieldTimesProblem(row.field_timestamps, row.data) !== null
    : typeof row.data !== "object" || row.data === null || Array.isArray(row.data)
      ? true
      : fieldTimesProblem(row.field_timestamps, row.data) !== null

/**
 * A record's rows as the discovery cursor sends them (newMissionRowsQuery), checked as LogRow's schema
 * checks them, in one loop; undefined when a row fails the check (decodeRows then decides, and
 * explains, row by row).
 */
const cursorRows = (userId: unknown, recordId: unknown, list: ReadonlyArray<unknown>): Array<LogRow> | undefined => {
  if (typeof userId !== "string" || typeof recordId !== "string") return undefined
  const rows: Array<LogRow> = []
  for (const r of list) {
    if (!Array.isArray(r)) return undefined
    const id: unknown = r[0]
    const op: unknown = r[1]
    const text: unknown = r[4]
    if (typeof id !== "string" || (op !== "insert" && op !== "update" && op !== "delete") || typeof text !== "string") return undefined
    const at = exactFromIsoText(text)
    if (at === undefined) return undefined
    rows.push({ id, user_id: userId, record_id: recordId, op, data: r[2], field_timestamps: r[3], at })
  }
  return rows
}

/** A row as the discovery cursor sends it inside its record's array (newMissionRowsQuery). */
const rowFromArray = (userId: unknown, recordId: unknown, r: unknown): Record<string, unknown> =>
  Array.isArray(r)
    ? {
        id: r[0],
        user_id: userId,
        record_id: recordId,
        op: r[1],
        data: r[2],
        field_timestamps: r[3],
        at: typeof r[4] === "string" ? (exactFromIsoText(r[4]) ?? r[4]) : r[4],
      }
    : {}

/**
 * Epoch ms of exactUtc's text (`YYYY-MM-DDTHH:MM:SS.ffffffZ`), the fraction truncated as parseInstant
 * truncates it, read by position: a million rows in a first discovery. Any other shape (a year
 * outside 1000–9999) goes through parseInstant.
 */
const exactUtcMillis = (at: string): number => {
  if (at.length !== 27 || at.charCodeAt(0) === 48 /* "0": a year before 1000 */) return parseInstant(at) ?? Number.NaN
  // Digits read by character code: slicing and Number() cost three times as much per row.
  const d = (i: number) => at.charCodeAt(i) - 48
  return Date.UTC(
    d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3),
    d(5) * 10 + d(6) - 1,
    d(8) * 10 + d(9),
    d(11) * 10 + d(12),
    d(14) * 10 + d(15),
    d(17) * 10 + d(18),
    d(20) * 100 + d(21) * 10 + d(22),
  )
}

const toReplayRow = (row: LogRow): ReplayRow => ({
  id: row.id,
  op: row.op,
  data: row.data,
  field_timestamps: row.field_timestamps,
  created_at: new Date(exactUtcMillis(row.at)),
  record_id: row.record_id,
})

const describeValue = (u: unknown): string => (u === null ? "null" : Array.isArray(u) ? "an array" : `a ${typeof u}`)

const rowProblem = (row: LogRow): string =>
  `change ${row.id} (${row.op}) carries data that is not an object (${describeValue(row.data)})`

// ---------------------------------------------------------------- judging a replayed record

interface Judgement {
  readonly deleted: boolean
  readonly state: string | null
  readonly nextRunAt: string | null
  readonly schedulable: boolean
  /** Why the mission is skipped: a sentence naming the field and what was wrong. */
  readonly malformedReason: string | null
  /** The record decoded while judging, so the snapshot handed on need not decode it again. */
  readonly mission?: Mission
}

const judge = (state: RecordState, problem: string | null, defaultTimezone: string): Judgement => {
  const gone = { deleted: true, state: null, nextRunAt: null, schedulable: false } as const
  if (state.record === null) return { ...gone, malformedReason: problem }
  if (!isLive(state)) return { ...gone, malformedReason: null }
  const valid = missionValidity(state.record, defaultTimezone)
  if (Either.isLeft(valid)) {
    return {
      deleted: false,
      state: typeof state.record.state === "string" ? state.record.state : null,
      nextRunAt: null,
      schedulable: false,
      malformedReason: valid.left,
    }
  }
  return {
    deleted: false,
    state: valid.right.mission.state,
    nextRunAt: valid.right.nextRunAt,
    schedulable: isSchedulable(valid.right),
    malformedReason: null,
    mission: valid.right.mission,
  }
}

// ---------------------------------------------------------------- snapshots as stored

export const SnapshotRow = Schema.Struct({
  user_id: Schema.String,
  record_id: Schema.String,
  record: Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  deleted: Schema.Boolean,
  schedulable: Schema.Boolean,
  next_run_at: Schema.NullOr(Schema.DateFromSelf),
  malformed_reason: Schema.NullOr(Schema.String),
})
export type SnapshotRow = typeof SnapshotRow.Type

/** A snapshot's record as MissionSnapshot carries it: without `iterations`. */
const withoutIterations = (record: Readonly<Record<string, unknown>>): Readonly<Record<string, unknown>> => {
  if (!Object.hasOwn(record, "iterations")) return record
  const { iterations: _, ...rest } = record
  return rest
}

/**
 * `row.record` without `iterations` (snapshotColumns reads it so). `mission`: the record already
 * decoded by judge (refresh), spared a second decode.
 */
export const toSnapshot = (row: SnapshotRow, mission?: Mission): MissionSnapshot => {
  const record = row.deleted || row.record === null ? null : withoutIterations(row.record)
  const decoded: Either.Either<Mission, string> =
    row.malformed_reason !== null
      ? Either.left(row.malformed_reason)
      : record === null
        ? Either.left("the mission is deleted")
        : mission !== undefined
          ? Either.right(mission.iterations.length === 0 ? mission : { ...mission, iterations: [] })
          : decodeMissionRecord(record)
  return {
    userId: row.user_id,
    missionId: row.record_id,
    record,
    decoded,
    schedulable: row.schedulable && Either.isRight(decoded),
    nextRunAt: row.next_run_at,
  }
}

/** A snapshot's state as refresh carries it between rows. */
interface Working {
  readonly userId: string
  readonly recordId: string
  readonly state: RecordState
  readonly last: Position | null
  /** The latest row problem since the record last existed: explains a record that never came to be. */
  readonly problem: string | null
  /**
   * The stored snapshot's `iterations` were left in Postgres (loadWorking's `leaveIterations`): the
   * record here lacks them, and saveSnapshots keeps the stored ones unless a row of this pass set
   * them or a delete ended the record. A mission's iterations grow by one with every run and none of
   * discovery's decisions looks at stored ones (they were judged when they came), so a pass costs
   * what its rows changed, not the mission's history (issue 16: at 40 iterations a pass spent 2.2 ms
   * per mission reading, decoding and writing back about 34 KB of them).
   */
  readonly iterationsInStore?: boolean
}

const StoredWorking = Schema.Struct({
  user_id: Schema.String,
  record_id: Schema.String,
  record: Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.Unknown })),
  field_times: Schema.Record({ key: Schema.String, value: Schema.Number }),
  last_at: Schema.String,
  last_id: Schema.String,
  malformed_reason: Schema.NullOr(Schema.String),
  iterations_in_store: Schema.Boolean,
})

const keyOf = (userId: string, recordId: string) => JSON.stringify([userId, recordId])

/** JSON with object keys sorted: a record read back from jsonb has its keys in jsonb's order. */
const canonicalJson = (u: unknown): string =>
  JSON.stringify(u, (_key, value: unknown) =>
    typeof value === "object" && value !== null && !Array.isArray(value)
      ? Object.fromEntries(Object.entries(value).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
      : value,
  )

// ---------------------------------------------------------------- the store

/**
 * created_at as text for the discovery cursor, cheaper than exactUtc per row (to_char is about a
 * second of Postgres CPU per million rows): the UTC wall time as Postgres prints a timestamp under
 * DateStyle ISO (`YYYY-MM-DD HH:MM:SS[.f…]`, the fraction's trailing zeros dropped), which
 * exactFromIsoText widens to exactUtc's form; a year outside 1000–9999 goes through exactUtc itself.
 */
const cursorAtText = (sql: SqlClient.SqlClient, column: string) =>
  sql`CASE WHEN ${sql(column)} >= '1000-01-01 00:00:00Z'::timestamptz AND ${sql(column)} < '10000-01-01 00:00:00Z'::timestamptz
           THEN (${sql(column)} AT TIME ZONE 'UTC')::text ELSE ${exactUtc(sql, column)} END`

/**
 * exactUtc's form (`YYYY-MM-DDTHH:MM:SS.ffffffZ`) of cursorAtText's text; that form itself passes
 * through. undefined: neither shape (a DateStyle other than ISO).
 */
export const exactFromIsoText = (t: string): string | undefined => {
  if (t.charCodeAt(t.length - 1) === 90 /* Z: exactUtc's own text, from the cursor's CASE */) return t
  const n = t.length
  if (n === 26 && t.charCodeAt(10) === 32 && t.charCodeAt(19) === 46) return `${t.slice(0, 10)}T${t.slice(11)}Z`
  if (n < 19 || n === 20 || n > 26 || t.charCodeAt(10) !== 32 /* space */ || (n > 19 && t.charCodeAt(19) !== 46)) return undefined
  const frac = n === 19 ? "000000" : t.slice(20).padEnd(6, "0")
  return `${t.slice(0, 10)}T${t.slice(11, 19)}.${frac}Z`
}

/** A row's op as JSON text: the CHECK allows three words, anything else is quoted by Postgres. */
const opJson = (sql: SqlClient.SqlClient) =>
  sql`CASE WHEN s.op IN ('insert', 'update', 'delete') THEN '"' || s.op || '"' ELSE to_json(s.op)::text END`

/** A record as the discovery cursor sends it (newMissionRowsQuery). */
interface CursorRecord {
  readonly user_id: unknown
  readonly record_id: unknown
  readonly rows: unknown
}

/** One record's rows a pass applied inside the window (markApplied): ids comma-separated, the newest created_at. */
interface RecordMark {
  readonly u: string
  readonly r: string
  readonly at: string
  readonly ids: string
}

/** The next page of the discovery cursor. The count of a FETCH cannot be a parameter: a constant of the text. */
const fetchPage = (sql: SqlClient.SqlClient) => sql<CursorRecord>`FETCH FORWARD 1000 FROM mana_ai_discovery`

/**
 * Mission rows after `cursorAt - lookback` up to `upTo` not applied yet, one result row per record
 * (`user_id`, `record_id`, `rows`: JSON text of an array of its rows in log order, each
 * `[id, op, data, field times, created_at as cursorAtText]`), sorted by record: the order one pass
 * folds them in. A first discovery reads a million rows; sent one record at a time, the driver
 * decodes three values per record, not seven per row. The array is built by text concatenation
 * (jsonb's text is JSON): json_build_array and to_char per row cost Postgres more CPU for the same
 * bytes (the query alone at 1M rows: 8–10 s against 6–8 s). Served by the partial index sync_changes_ai_missions_created_idx even
 * under the runner's RLS policies (see the EXPLAIN test), so a refresh with no new rows costs the
 * window, not the history.
 */
export const newMissionRowsQuery = (
  sql: SqlClient.SqlClient,
  options: {
    readonly cursorAt: string
    readonly lookback: string
    /** The newest created_at this pass reads (exact UTC text). */
    readonly upTo: string
    /** The per-field time column of the generation found (EventLogSchema). */
    readonly timeColumn: SyncGeneration
    /** Only the users of one part (by a hash of the user id) of `count`. */
    readonly partition?: { readonly index: number; readonly count: number }
  },
) => sql<Record<string, unknown>>`
  SELECT s.user_id, s.record_id,
         '[' || string_agg('["' || s.id::text || '",' || ${opJson(sql)} || ',' || coalesce(s.data::text, 'null') || ','
                             || coalesce(${sql(`s.${options.timeColumn}`)}::text, 'null') || ',"' || ${cursorAtText(sql, "s.created_at")} || '"]',
                           ',' ORDER BY s.created_at, s.id) || ']' AS rows
  FROM sync_changes s
  WHERE s.app_id = ${MISSIONS_APP_ID} AND s.table_name = ${MISSIONS_TABLE}
    AND s.created_at > ${options.cursorAt}::timestamptz - ${options.lookback}::interval
    AND s.created_at <= ${options.upTo}::timestamptz
    AND NOT EXISTS (
      SELECT 1 FROM mana_ai.applied_records a
      WHERE a.user_id = s.user_id AND a.record_id = s.record_id AND s.id = ANY(a.change_ids))
    ${options.partition === undefined ? sql`` : sql`AND (hashtext(s.user_id) & 2147483647) % ${options.partition.count} = ${options.partition.index}`}
  GROUP BY s.user_id, s.record_id
  ORDER BY s.user_id, s.record_id`

export const makeMissionStore = (
  options: MissionStoreOptions = {},
): Effect.Effect<MissionStoreShape, never, SqlClient.SqlClient | RunnerConfig | EventLogSchema> =>
  Effect.gen(function* () {
    const sql = yield* SqlClient.SqlClient
    const config = yield* RunnerConfig
    const { timeColumn } = yield* EventLogSchema
    const lookbackMicros = Math.round(Duration.toMillis(Duration.decode(options.lookback ?? config.discoveryLookback)) * 1000)
    const lookback = `${lookbackMicros} microseconds`
    const batchSize = options.batchSize ?? DEFAULT_BATCH_SIZE
    const splitMinRows = Math.max(1, options.splitMinRows ?? SPLIT_MIN_ROWS)
    // Cluster mode stamps each snapshot with its user's shard; one process writes NULL (it reads all).
    const shardCount = Option.map(yield* Effect.serviceOption(ClusterConfig), (c) => c.shards)
    const shardColumn = (userId: string): number | null =>
      Option.isSome(shardCount) ? shardOf(userId, shardCount.value) : null

    const countRow = (reason: string) => Metric.increment(Metric.tagged(malformedRowsTotal, "reason", reason))

    /**
     * Rows of sync_changes chosen by `where` (on `s`), in replay order, as decodeRows reads them; a
     * mission row's `iterations` left out where another row's wins them anyway (withDominatedIterations):
     * each runner row carries the whole list, so a mission's rows hold the square of its runs in bytes
     * (issue 16: 1,000 missions of 26 runs each were about 300 MB for one reconciliation).
     */
    const replayRows = (from: Statement.Fragment, where: Statement.Fragment, order: Statement.Fragment) =>
      sql<Record<string, unknown>>`
        SELECT x.id, x.user_id, x.record_id, x.op,
               CASE WHEN x.dominated THEN x.data - 'iterations' ELSE x.data END AS data,
               x.field_timestamps, ${exactUtc(sql, "x.created_at")} AS at
        FROM (${withDominatedIterations(sql, sql`
          SELECT s.id::text AS id, s.app_id, s.table_name, s.record_id, s.user_id, s.op, s.data,
                 ${sql(`s.${timeColumn}`)} AS field_timestamps, s.created_at
          FROM ${from} WHERE ${where}`)}) x
        ORDER BY ${order}`

    /** One record's rows up to `upTo`, all four key columns: the re-replay after a late row. */
    const readRecord = (userId: string, recordId: string, upTo: Position) =>
      replayRows(
        sql`sync_changes s`,
        sql`s.user_id = ${userId} AND s.app_id = ${MISSIONS_APP_ID} AND s.table_name = ${MISSIONS_TABLE}
          AND s.record_id = ${recordId}
          AND (s.created_at, s.id) <= (${upTo.at}::timestamptz, ${upTo.id}::uuid)`,
        sql`x.created_at, x.id::uuid`,
      )

    const decodeRows = (raw: ReadonlyArray<Record<string, unknown>>) =>
      Effect.gen(function* () {
        const rows: Array<LogRow> = []
        for (const r of raw) {
          // The shape checked by hand first (a million rows in a first discovery); the schema only
          // decides, and explains, a row that fails the check.
          if (isLogRowShape(r)) {
            rows.push(r)
            continue
          }
          const decoded = decodeLogRow(r)
          if (Either.isRight(decoded)) rows.push(decoded.right)
          else {
            yield* countRow("undecodable")
            yield* Effect.logWarning("Event-log row skipped: it does not decode").pipe(
              Effect.annotateLogs({ changeId: String(r.id), userId: String(r.user_id), missionId: String(r.record_id) }),
            )
          }
        }
        return rows
      })

    /** Folds rows onto a working snapshot; rows that cannot change a record are noted, not applied. */
    const fold = (start: Working, rows: ReadonlyArray<LogRow>): Working => {
      const last = rows[rows.length - 1]
      if (last === undefined) return start
      // The problem is the last row's: an applicable row clears it, any other row sets it.
      const problem = isApplicable(toReplayRow(last)) ? null : rowProblem(last)
      const state = applyChanges(start.state, rows.map(toReplayRow))
      // The stored iterations still stand unless a delete ended the record or a row's own won.
      const iterationsInStore =
        start.iterationsInStore === true &&
        state.record !== null &&
        !Object.hasOwn(state.record, "iterations") &&
        !rows.some((row) => row.op === "delete")
      return { ...start, state, last: { at: last.at, id: last.id }, problem, iterationsInStore }
    }

    /**
     * The stored snapshots of `keys`. `leaveIterations`: a valid snapshot's `iterations` stay in
     * Postgres (Working.iterationsInStore); a malformed one is read whole, as the next judgement of it
     * must see everything that made it malformed.
     */
    const loadWorking = (keys: ReadonlyArray<{ user_id: string; record_id: string }>, leaveIterations = false) =>
      Effect.gen(function* () {
        const left = sql`m.malformed_reason IS NULL AND m.record ? 'iterations'`
        const raw = yield* sql<Record<string, unknown>>`
          SELECT m.user_id, m.record_id,
                 ${leaveIterations ? sql`CASE WHEN ${left} THEN m.record - 'iterations' ELSE m.record END` : sql`m.record`} AS record,
                 ${leaveIterations ? sql`COALESCE(${left}, false)` : sql`false`} AS iterations_in_store,
                 m.field_times, ${exactUtc(sql, "m.last_created_at")} AS last_at,
                 m.last_change_id::text AS last_id, m.malformed_reason
          FROM mana_ai.mission_snapshots m
          JOIN jsonb_to_recordset(${JSON.stringify(keys)}::jsonb) AS k(user_id text, record_id text)
            ON k.user_id = m.user_id AND k.record_id = m.record_id`
        const byKey = new Map<string, Working>()
        for (const r of raw) {
          // Our own table: a row that does not decode is a bug, and replaying from scratch would hide it.
          const s = yield* Schema.decodeUnknown(StoredWorking)(r).pipe(Effect.orDie)
          byKey.set(keyOf(s.user_id, s.record_id), {
            userId: s.user_id,
            recordId: s.record_id,
            state: { record: s.record, times: s.field_times },
            last: { at: s.last_at, id: s.last_id },
            problem: s.record === null ? s.malformed_reason : null,
            iterationsInStore: s.iterations_in_store,
          })
        }
        return byKey
      })

    const judgeAndLog = (working: Working) =>
      Effect.gen(function* () {
        const judgement = judge(working.state, working.problem, config.defaultTimezone)
        if (judgement.malformedReason !== null) {
          yield* Metric.increment(Metric.tagged(missionsSkippedTotal, "reason", "malformed"))
          yield* Effect.logWarning("Mission skipped: malformed").pipe(
            Effect.annotateLogs({ userId: working.userId, missionId: working.recordId, reason: judgement.malformedReason }),
          )
        }
        return judgement
      })

    /** Writes judged snapshots (one statement). */
    const saveSnapshots = (results: ReadonlyArray<{ readonly working: Working; readonly judgement: Judgement }>) =>
      Effect.gen(function* () {
        const snapshots = results.map(({ working, judgement }) => ({
          user_id: working.userId,
          record_id: working.recordId,
          record: working.state.record,
          field_times: working.state.times,
          last_at: working.last!.at,
          last_id: working.last!.id,
          deleted: judgement.deleted,
          state: judgement.state,
          next_run_at: judgement.nextRunAt,
          schedulable: judgement.schedulable,
          malformed_reason: judgement.malformedReason,
          shard: shardColumn(working.userId),
          // Absent (NULL in SQL) unless true: a first discovery's 50,000 records send no such key.
          ...(working.iterationsInStore === true ? { keep_iterations: true } : {}),
        }))
        // keep_iterations: the stored iterations stay as they are (Working.iterationsInStore), read here
        // under the pass's lock (a write-back folds its row only while that lock is free). A batch with
        // none to keep (a first discovery: no snapshot yet) skips the join.
        const keeping = snapshots.some((x) => x.keep_iterations === true)
        yield* sql`
          INSERT INTO mana_ai.mission_snapshots AS m
            (user_id, record_id, record, field_times, last_created_at, last_change_id, deleted, state, next_run_at,
             schedulable, malformed_reason, shard, updated_at)
          SELECT x.user_id, x.record_id,
                 ${keeping
                   ? sql`CASE WHEN x.keep_iterations AND jsonb_typeof(x.record) = 'object' AND cur.record ? 'iterations'
                      THEN x.record || jsonb_build_object('iterations', cur.record -> 'iterations')
                      ELSE NULLIF(x.record, 'null'::jsonb) END`
                   : sql`NULLIF(x.record, 'null'::jsonb)`},
                 x.field_times, x.last_at::timestamptz,
                 x.last_id::uuid, x.deleted, x.state, x.next_run_at::timestamptz, x.schedulable, x.malformed_reason, x.shard, now()
          FROM jsonb_to_recordset(${JSON.stringify(snapshots)}::jsonb) AS x(
            user_id text, record_id text, record jsonb, field_times jsonb, last_at text, last_id text, deleted boolean,
            state text, next_run_at text, schedulable boolean, malformed_reason text, shard integer, keep_iterations boolean)
          ${keeping ? sql`LEFT JOIN mana_ai.mission_snapshots cur ON cur.user_id = x.user_id AND cur.record_id = x.record_id` : sql``}
          ON CONFLICT (user_id, record_id) DO UPDATE SET
            record = EXCLUDED.record, field_times = EXCLUDED.field_times, last_created_at = EXCLUDED.last_created_at,
            last_change_id = EXCLUDED.last_change_id, deleted = EXCLUDED.deleted, state = EXCLUDED.state,
            next_run_at = EXCLUDED.next_run_at, schedulable = EXCLUDED.schedulable,
            malformed_reason = EXCLUDED.malformed_reason, shard = EXCLUDED.shard, updated_at = now()`
      })

    /** Snapshots handed on as changed. */
    const changedSnapshots = (results: ReadonlyArray<{ readonly working: Working; readonly judgement: Judgement }>) =>
      results.map(({ working, judgement }) =>
        toSnapshot(
          {
            user_id: working.userId,
            record_id: working.recordId,
            record: working.state.record,
            deleted: judgement.deleted,
            schedulable: judgement.schedulable,
            next_run_at: judgement.nextRunAt === null ? null : new Date(judgement.nextRunAt),
            malformed_reason: judgement.malformedReason,
          },
          judgement.mission,
        ),
      )

    /** Counts and logs what is wrong with one row (the row is applied or noted all the same, as before). */
    const noteRowProblems = (row: LogRow) =>
      Effect.gen(function* () {
        if (!isApplicable(toReplayRow(row))) {
          yield* countRow("data-not-object")
          yield* Effect.logWarning("Mission row not applied: its data is not an object").pipe(
            Effect.annotateLogs({ userId: row.user_id, missionId: row.record_id, changeId: row.id, reason: rowProblem(row) }),
          )
        } else {
          // Applied all the same: the row's created_at stands in for the times it lacks (SPEC §2).
          const problem = fieldTimesProblem(row.field_timestamps, row.data)
          if (problem !== null) {
            yield* countRow(problem.reason)
            yield* Effect.logWarning(`Mission row's ${timeColumn} ignored where unusable: ${problem.detail}`).pipe(
              Effect.annotateLogs({ userId: row.user_id, missionId: row.record_id, changeId: row.id, reason: problem.reason }),
            )
          }
        }
      })

    /**
     * Applies the new rows of some records (each list: one record's rows, in log order) onto their
     * stored snapshots (`stored`, loadWorking's), judging each record once; the caller writes them.
     */
    const foldRecords = (records: ReadonlyArray<ReadonlyArray<LogRow>>, stored: ReadonlyMap<string, Working>) =>
      Effect.gen(function* () {
        const results: Array<{ working: Working; judgement: Judgement }> = []
        for (const list of records) {
          const first = list[0]!
          const base: Working = stored.get(keyOf(first.user_id, first.record_id)) ?? {
            userId: first.user_id,
            recordId: first.record_id,
            state: initialState,
            last: null,
            problem: null,
          }
          const baseLast = base.last
          const late = baseLast !== null && list.some((row) => comparePositions(row, baseLast) <= 0)
          let working: Working
          if (late) {
            // A row committed late sorts inside what the snapshot holds: replay the record again, up to
            // the newest row the snapshot or this pass holds (later ones arrive as ordinary new rows).
            const newest = list[list.length - 1]!
            const upTo = comparePositions(newest, baseLast) > 0 ? newest : baseLast
            const history = yield* decodeRows(yield* readRecord(first.user_id, first.record_id, upTo))
            working = fold({ ...base, state: initialState, last: null, problem: null, iterationsInStore: false }, history)
            yield* Effect.logDebug("Mission replayed again after a late row").pipe(
              Effect.annotateLogs({ userId: first.user_id, missionId: first.record_id, rows: history.length }),
            )
          } else {
            working = fold(base, list)
          }
          results.push({ working, judgement: yield* judgeAndLog(working) })
        }
        return results
      })

    /**
     * Marks rows applied, one mark per record with its ids (migration 0007): only rows still inside the
     * window after this pass (older ones are never re-read); `newest` is the newest one's created_at,
     * which says when the mark leaves the window.
     */
    const markApplied = (marks: ReadonlyArray<RecordMark>) =>
      marks.length === 0
        ? Effect.void
        : sql`
            INSERT INTO mana_ai.applied_records (user_id, record_id, newest_at, change_ids)
            SELECT x.u, x.r, x.at::timestamptz, string_to_array(x.ids, ',')::uuid[]
            FROM jsonb_to_recordset(${JSON.stringify(marks)}::jsonb) AS x(u text, r text, at text, ids text)`.pipe(Effect.asVoid)

    /**
     * What the discovery cursor needs of its transaction (these settings hold for it only). It sorts every
     * new row by record: on a first discovery or a burst that sort spills to disk, and with the default
     * 4 MB it merges in many more passes. It prints created_at as a timestamp's text (cursorAtText): ISO
     * output, whatever the server's default (the input order, the setting's other half, stays as it is).
     * No JIT: a large pass's plan costs enough to be compiled, and the compiled query took more backend
     * CPU, not less (1M rows, 4 pairs: 5.8 s against 4.9 s on average).
     */
    const cursorSettings = Effect.all(
      [sql`SET LOCAL work_mem = '64MB'`, sql`SET LOCAL DateStyle = 'ISO'`, sql`SET LOCAL jit = off`],
      { discard: true },
    )

    /**
     * How many connections a large pass reads on: PARTITIONS on a server, when the pool has room for
     * them beside the pass's own connection and one more; 1 on the embedded database (PGlite serves
     * one session to every client, and holds the others back while a transaction is open) or any other
     * SqlClient. Asked on the first large pass, and kept once answered (a failed question fails that pass).
     */
    const pool = Option.map(yield* Effect.serviceOption(PgClient.PgClient), (pg) => pg.config.maxConnections ?? 10)
    const knownReaders = yield* Ref.make(Option.none<number>())
    const readers = Effect.flatMap(Ref.get(knownReaders), (known) =>
      Option.isSome(known)
        ? Effect.succeed(known.value)
        : Option.isNone(pool) || pool.value < PARTITIONS + 2
          ? Effect.succeed(1)
          : sql<{ embedded: boolean }>`SELECT strpos(version(), 'PGlite') > 0 AS embedded`.pipe(
              Effect.map((rows) => (rows[0]?.embedded === false ? PARTITIONS : 1)),
              Effect.tap((n) => Ref.set(knownReaders, Option.some(n))),
            ),
    )

    /**
     * One part of a large pass on a connection of its own (not the pass's): its own read-only
     * transaction and cursor, each page fetched once `before` lets it and handed to `page`. A row
     * committed between this transaction's start and the pass's is read by one and not the other,
     * as a row committed just after the pass's: the look-back window or the reconciliation reads it.
     */
    const readPartition = (
      query: ReturnType<typeof newMissionRowsQuery>,
      before: (fetch: Effect.Effect<ReadonlyArray<CursorRecord>, SqlError>) => Effect.Effect<ReadonlyArray<CursorRecord>, SqlError>,
      page: (records: ReadonlyArray<CursorRecord>) => Effect.Effect<unknown>,
    ) =>
      sql
        .withTransaction(
          Effect.gen(function* () {
            yield* sql`SET TRANSACTION READ ONLY`
            yield* cursorSettings
            yield* sql`DECLARE mana_ai_discovery NO SCROLL CURSOR FOR ${query}`
            for (;;) {
              const records = yield* before(fetchPage(sql))
              yield* page(records)
              if (records.length < FETCH_RECORDS) break
            }
            yield* sql`CLOSE mana_ai_discovery`
          }),
        )
        // Outside the pass's transaction: withTransaction takes a connection of its own.
        .pipe(Effect.mapInputContext((context: Context.Context<never>) => Context.omit(SqlClient.TransactionConnection)(context)))

    /**
     * One refresh: every new mission row in one pass, in one transaction serialised between runner
     * instances. The rows come from one server-side cursor sorted by record, so each record is loaded,
     * folded, judged and written once per pass however many rows it got: the first discovery of a long
     * history and a burst inside the look-back window cost one sort and one read of their rows, not one
     * re-scan of the window per page (SPEC §2: the same field-level replay as row by row; a test
     * compares both on the same rows).
     */
    const refreshPass = sql.withTransaction(
      Effect.gen(function* () {
        yield* sql`SELECT pg_advisory_xact_lock(${REFRESH_LOCK_KEY}::bigint)`
        const cursor = yield* sql<{ at: string }>`
          SELECT ${exactUtc(sql, "created_at")} AS at FROM mana_ai.discovery_cursor`
        const cursorAt = cursor[0]?.at ?? "-infinity"
        // The newest mission row now (the partial index's last entry): the pass reads up to it, rows
        // committed meanwhile wait for the next refresh. The cursor will be `next` (never beyond now(),
        // which is fixed for the transaction), so rows after `keepAfter` are the ones to mark applied.
        // new_rows: the rows after the cursor, counted up to splitMinRows (through the same partial index;
        // a steady state has a few seconds' worth): whether the pass reads in parts.
        const [bounds] = yield* sql<{ up_to: string | null; keep_after: string | null; new_rows: number }>`
          SELECT ${exactUtc(sql, "x.m")} AS up_to,
                 ${exactUtc(sql, "x.next")} AS keep_after,
                 (SELECT count(*)::int FROM (
                    SELECT 1 FROM sync_changes s
                    WHERE s.app_id = ${MISSIONS_APP_ID} AND s.table_name = ${MISSIONS_TABLE} AND s.created_at > ${cursorAt}::timestamptz
                    LIMIT ${splitMinRows}) w) AS new_rows
          FROM (SELECT m, LEAST(GREATEST(${cursorAt}::timestamptz, m), now()) - ${lookback}::interval AS next
                FROM (SELECT max(s.created_at) AS m FROM sync_changes s
                      WHERE s.app_id = ${MISSIONS_APP_ID} AND s.table_name = ${MISSIONS_TABLE}) y) x`
        const upTo = bounds?.up_to ?? null
        const keepAfter = bounds?.keep_after ?? null
        if (upTo === null || keepAfter === null) return { rowsRead: 0, parts: 1, changed: [] as Array<MissionSnapshot>, changedCount: 0 }
        const partitions = (bounds?.new_rows ?? 0) >= splitMinRows ? yield* readers : 1
        const changed: Array<MissionSnapshot> = []
        const keep = yield* FiberRef.get(RefreshKeeps)
        let changedCount = 0
        let rowsRead = 0
        const writing: Array<Fiber.Fiber<void, SqlError>> = []
        const written = Effect.suspend(() => Effect.forEach(writing.splice(0), Fiber.join, { discard: true }))

        /**
         * One page of records: decoded, loaded, folded, judged; its writes sent without waiting.
         * `afterFirstLoad` runs once the first batch's stored snapshots are loaded (the one-connection
         * read asks for its next page there).
         */
        const applyPage = (page: ReadonlyArray<CursorRecord>, afterFirstLoad: Effect.Effect<void>) =>
          Effect.gen(function* () {
            if (page.length > 0) workBegins()
            const marks: Array<RecordMark> = []
            const records: Array<Array<LogRow>> = []
            for (const record of page) {
              const list: unknown = typeof record.rows === "string" ? JSON.parse(record.rows) : record.rows
              if (!Array.isArray(list)) continue
              rowsRead += list.length
              // The record's ids after keepAfter, and the newest of their times.
              let ids = ""
              let newest = ""
              const mark = (id: string, at: string) => {
                if (at <= keepAfter) return
                ids = ids === "" ? id : `${ids},${id}`
                if (at > newest) newest = at
              }
              let rows = cursorRows(record.user_id, record.record_id, list)
              if (rows === undefined) {
                const raw = list.map((r) => rowFromArray(record.user_id, record.record_id, r))
                // Every id read is applied, the undecodable ones too: re-reading them would change nothing.
                for (const r of raw) mark(String(r.id), String(r.at))
                rows = yield* decodeRows(raw)
              } else {
                for (const row of rows) mark(row.id, row.at)
              }
              if (ids !== "") marks.push({ u: String(record.user_id), r: String(record.record_id), at: newest, ids })
              for (const row of rows) if (rowHasProblem(row)) yield* noteRowProblems(row)
              if (rows.length > 0) records.push(rows)
            }
            for (let i = 0; i < records.length || i === 0; i += batchSize) {
              const batch = records.slice(i, i + batchSize)
              yield* written
              const stored =
                batch.length === 0
                  ? new Map<string, Working>()
                  : yield* loadWorking(
                      batch.map((list) => ({ user_id: list[0]!.user_id, record_id: list[0]!.record_id })),
                      true,
                    )
              if (i === 0) yield* afterFirstLoad
              if (batch.length === 0) continue
              const results = yield* foldRecords(batch, stored)
              writing.push(yield* Effect.fork(saveSnapshots(results)))
              changedCount += results.length
              changed.push(...changedSnapshots(results.filter((r) => keep(r.working.userId))))
            }
            if (marks.length > 0) writing.push(yield* Effect.fork(markApplied(marks)))
          })

        if (partitions === 1) {
          yield* cursorSettings
          yield* sql`DECLARE mana_ai_discovery NO SCROLL CURSOR FOR ${newMissionRowsQuery(sql, { cursorAt, lookback, upTo, timeColumn })}`
          // Bun and Postgres take turns as little as possible (one connection, statements in the order
          // they are sent): a batch's stored snapshots are loaded, then the next page is asked for, so
          // Postgres produces it while Bun folds, judges and encodes the batch; the batch's writes are
          // sent without waiting and run while Bun decodes the next page. A write's failure surfaces at
          // the next batch's load at the latest, and before the cursor moves.
          let pending: Fiber.Fiber<ReadonlyArray<CursorRecord>, SqlError> | null = yield* Effect.fork(fetchPage(sql))
          while (pending !== null) {
            const page: ReadonlyArray<CursorRecord> = yield* Fiber.join(pending)
            pending = null
            const more = page.length === FETCH_RECORDS
            yield* applyPage(
              page,
              more
                ? Effect.flatMap(Effect.fork(fetchPage(sql)), (fiber) =>
                    Effect.sync(() => {
                      pending = fiber
                    }),
                  )
                : Effect.void,
            )
          }
          yield* written
          yield* sql`CLOSE mana_ai_discovery`
        } else {
          // A large pass (a first discovery, a burst) reads its records in `partitions` parts by user, each
          // on a connection of its own (readPartition): each backend sorts and aggregates its part while the
          // other does, and this connection only writes. Pages wait for a slot, so no more pages are held
          // at once than on one connection (one applied, one read ahead).
          const slots = yield* Effect.makeSemaphore(PAGES_IN_FLIGHT)
          const pages = yield* Queue.unbounded<Exit.Exit<ReadonlyArray<CursorRecord> | null, SqlError>>()
          const readers = yield* Effect.forEach(Array.from({ length: partitions }, (_, index) => index), (index) =>
            Effect.fork(
              readPartition(
                newMissionRowsQuery(sql, { cursorAt, lookback, upTo, timeColumn, partition: { index, count: partitions } }),
                (page) => Effect.zipRight(slots.take(1), page),
                (page) => Queue.offer(pages, Exit.succeed(page)),
              ).pipe(
                Effect.onExit((exit) => Queue.offer(pages, Exit.isFailure(exit) ? Exit.failCause(exit.cause) : Exit.succeed(null))),
              ),
            ),
          )
          yield* Effect.gen(function* () {
            let running = partitions
            while (running > 0) {
              const next = yield* Queue.take(pages)
              const page = yield* next
              if (page === null) {
                running -= 1
                continue
              }
              yield* applyPage(page, Effect.void)
              yield* slots.release(1)
            }
            yield* written
          }).pipe(Effect.ensuring(Fiber.interruptAll(readers)))
        }
        // Nothing new and nothing to move: rows the write-back marked applied (the runner's own) are new
        // rows all the same, so the cursor moves past them and the window does not grow behind them.
        if (rowsRead === 0 && cursorAt !== "-infinity" && upTo <= cursorAt) return { rowsRead, parts: partitions, changed, changedCount }

        // The cursor never runs ahead of the database's now(): one row stamped in the future must not
        // carry it past rows still to commit (they would fall behind the window); a future row stays in
        // the window, skipped as applied, until its time.
        yield* sql`
          INSERT INTO mana_ai.discovery_cursor AS c (singleton, created_at)
          VALUES (true, LEAST(${upTo}::timestamptz, now()))
          ON CONFLICT (singleton) DO UPDATE
            SET created_at = LEAST(GREATEST(c.created_at, EXCLUDED.created_at), now()), updated_at = now()`
        // Marks whose ids are all older than the window: those rows are never read again.
        yield* sql`
          DELETE FROM mana_ai.applied_records
          WHERE newest_at <= (SELECT created_at FROM mana_ai.discovery_cursor) - ${lookback}::interval`
        return { rowsRead, parts: partitions, changed, changedCount }
      }),
    ).pipe(transactionLossAsError) // a connection lost at COMMIT is an SqlError, not a defect
    // ------------------------------------------------------------ reconciliation
    // The incremental path sees a row only while it is inside the look-back window; a sync transaction
    // open longer than the window commits rows the window has already passed. Reconciliation replays
    // every mission from the log, in chunks of records, up to the window's start (and up to what each
    // snapshot already holds), and corrects any snapshot that differs: rows newer than that are the
    // incremental path's, so the two never apply one row on top of the other.

    const reconcileChunk = Math.max(1, options.reconcileChunk ?? DEFAULT_RECONCILE_CHUNK)

    interface ReconcileKey {
      readonly user_id: string
      readonly record_id: string
    }

    /** Where the look-back window starts (cursor − lookback, exact UTC text); undefined before the first refresh. */
    const windowStart = Effect.map(
      sql<{ boundary: string }>`
        SELECT ${exactUtc(sql, "b")} AS boundary
        FROM (SELECT created_at - ${lookback}::interval AS b FROM mana_ai.discovery_cursor) x`,
      (rows) => rows[0]?.boundary,
    )

    /** Mission records in the log (older than the window) that have no snapshot at all. */
    const unknownRecords = (boundary: string) =>
      sql<ReconcileKey>`
        SELECT DISTINCT s.user_id, s.record_id FROM sync_changes s
        WHERE s.app_id = ${MISSIONS_APP_ID} AND s.table_name = ${MISSIONS_TABLE} AND s.created_at <= ${boundary}::timestamptz
          AND NOT EXISTS (
            SELECT 1 FROM mana_ai.mission_snapshots m WHERE m.user_id = s.user_id AND m.record_id = s.record_id)
        ORDER BY 1, 2`

    /** One chunk: re-replays `keys` (from scratch) and corrects the snapshots that differ. */
    const reconcileKeys = (keys: ReadonlyArray<ReconcileKey>) =>
      sql.withTransaction(
        Effect.gen(function* () {
          yield* sql`SELECT pg_advisory_xact_lock(${REFRESH_LOCK_KEY}::bigint)`
          const boundary = yield* windowStart
          if (boundary === undefined) return [] as Array<MissionSnapshot>
          const stored = yield* loadWorking(keys)
          const bounds = keys.map((k) => {
            const last = stored.get(keyOf(k.user_id, k.record_id))?.last ?? null
            return { user_id: k.user_id, record_id: k.record_id, last_at: last?.at ?? null, last_id: last?.id ?? null }
          })
          const raw = yield* replayRows(
            sql`sync_changes s
            JOIN jsonb_to_recordset(${JSON.stringify(bounds)}::jsonb) AS k(user_id text, record_id text, last_at text, last_id text)
              ON s.user_id = k.user_id AND s.record_id = k.record_id`,
            sql`s.app_id = ${MISSIONS_APP_ID} AND s.table_name = ${MISSIONS_TABLE}
              AND (s.created_at <= ${boundary}::timestamptz
                   OR (k.last_at IS NOT NULL AND (s.created_at, s.id) <= (k.last_at::timestamptz, k.last_id::uuid)))`,
            sql`x.user_id, x.record_id, x.created_at, x.id::uuid`,
          )
          const rows = yield* decodeRows(raw)
          const byRecord = new Map<string, Array<LogRow>>()
          for (const row of rows) {
            const key = keyOf(row.user_id, row.record_id)
            const list = byRecord.get(key)
            if (list === undefined) byRecord.set(key, [row])
            else list.push(row)
          }
          const results: Array<{ working: Working; judgement: Judgement }> = []
          for (const [key, list] of byRecord) {
            const first = list[0]!
            const before = stored.get(key)
            const replayed = fold(
              { userId: first.user_id, recordId: first.record_id, state: initialState, last: null, problem: null },
              list,
            )
            if (
              before !== undefined &&
              canonicalJson(before.state.record) === canonicalJson(replayed.state.record) &&
              canonicalJson(before.state.times) === canonicalJson(replayed.state.times)
            ) {
              continue
            }
            // Keep the newest position either side holds, so the incremental path's late-row check stays right.
            const last =
              before?.last != null && replayed.last !== null && comparePositions(before.last, replayed.last) > 0
                ? before.last
                : replayed.last
            const working: Working = { ...replayed, last }
            yield* Metric.increment(discoveryReconciledTotal)
            yield* Effect.logWarning("Reconciliation applied mission rows the incremental discovery missed").pipe(
              Effect.annotateLogs({ userId: working.userId, missionId: working.recordId, rows: list.length }),
            )
            results.push({ working, judgement: yield* judgeAndLog(working) })
          }
          if (results.length === 0) return [] as Array<MissionSnapshot>
          yield* saveSnapshots(results)
          return changedSnapshots(results)
        }),
      ).pipe(transactionLossAsError)

    /** The next chunk of snapshot keys after `after`, in key order (the primary key serves it). */
    const snapshotKeysAfter = (after: ReconcileKey | null) => {
      const from = after === null ? sql`TRUE` : sql`(user_id, record_id) > (${after.user_id}, ${after.record_id})`
      return sql<ReconcileKey>`
        SELECT user_id, record_id FROM mana_ai.mission_snapshots
        WHERE ${from}
        ORDER BY user_id, record_id LIMIT ${reconcileChunk}`
    }

    /** Every mission record, chunk by chunk; returns the snapshots it corrected. */
    const reconcile = Effect.gen(function* () {
      const changed: Array<MissionSnapshot> = []
      const boundary = yield* windowStart
      if (boundary === undefined) return changed
      let after: ReconcileKey | null = null
      for (;;) {
        const keys: ReadonlyArray<ReconcileKey> = yield* snapshotKeysAfter(after)
        if (keys.length === 0) break
        changed.push(...(yield* reconcileKeys(keys)))
        after = keys[keys.length - 1]!
        if (keys.length < reconcileChunk) break
      }
      const unknown = yield* unknownRecords(boundary)
      for (let i = 0; i < unknown.length; i += reconcileChunk) {
        changed.push(...(yield* reconcileKeys(unknown.slice(i, i + reconcileChunk))))
      }
      yield* Effect.logDebug("Mission snapshots reconciled with the event log").pipe(
        Effect.annotateLogs({ corrected: changed.length }),
      )
      return changed
    }).pipe(Effect.withSpan("MissionStore.reconcile"))
    const reconcileAll: Effect.Effect<ReadonlyArray<MissionSnapshot>, SqlError> = reconcile

    const reconcileEvery = Duration.toMillis(Duration.decode(options.reconcileInterval ?? config.reconcileInterval))
    // The first refresh bootstraps from the whole log; the first reconciliation comes one interval later.
    const lastReconciled = yield* Ref.make(yield* Clock.currentTimeMillis)
    const reconcileIfDue = Effect.gen(function* () {
      const now = yield* Clock.currentTimeMillis
      const due = yield* Ref.modify(lastReconciled, (last) => (now - last >= reconcileEvery ? [true, now] : [false, last]))
      return due ? yield* reconcileAll : []
    })

    // The due query's plan rests on mission_snapshots' statistics. Autovacuum may be off or lagging (it
    // is off on the bench's server: after a 1M-row bootstrap the never-analysed table got a parallel
    // seq-scan plan, 290 ms instead of 0.02 ms), so the store analyses its own table after many rows.
    const rowsSinceAnalyze = yield* Ref.make(0)
    const analyzeIfDue = (rowsRead: number) =>
      Ref.modify(rowsSinceAnalyze, (n) => (n + rowsRead >= ANALYZE_AFTER_ROWS ? [true, 0] : [false, n + rowsRead])).pipe(
        Effect.flatMap((due) =>
          due
            ? sql`ANALYZE mana_ai.mission_snapshots`.pipe(
                Effect.catchAll((e) => Effect.logWarning(`could not analyse mana_ai.mission_snapshots: ${e.message}`)),
              )
            : Effect.void,
        ),
      )

    const refresh: Effect.Effect<RefreshResult, SqlError> = Effect.gen(function* () {
      const changed = new Map<string, MissionSnapshot>()
      const keep = yield* FiberRef.get(RefreshKeeps)
      const pass = yield* refreshPass
      const rowsRead = pass.rowsRead
      let leftOut = pass.changedCount - pass.changed.length
      for (const s of pass.changed) changed.set(keyOf(s.userId, s.missionId), s)
      for (const s of yield* reconcileIfDue) {
        if (keep(s.userId)) changed.set(keyOf(s.userId, s.missionId), s)
        else leftOut++
      }
      yield* analyzeIfDue(rowsRead)
      yield* Metric.incrementBy(discoveryRowsRead, rowsRead)
      if (rowsRead > 0) {
        yield* Effect.logDebug("Mission snapshots refreshed").pipe(
          Effect.annotateLogs({ rowsRead, missionsChanged: changed.size + leftOut }),
        )
      }
      const parts = pass.parts > 1 ? { parts: pass.parts } : {}
      return leftOut === 0
        ? { rowsRead, ...parts, changed: [...changed.values()] }
        : { rowsRead, ...parts, changed: [...changed.values()], changedCount: changed.size + leftOut }
    }).pipe(
      Metric.trackDuration(discoveryDuration.pipe(Metric.mapInput((d: Duration.Duration) => Duration.toSeconds(d)))),
      Effect.withSpan("MissionStore.refresh"),
    )

    const readSnapshots = (query: Effect.Effect<ReadonlyArray<Record<string, unknown>>, SqlError>) =>
      Effect.flatMap(query, (raw) =>
        Effect.forEach(raw, (r) => Effect.map(Schema.decodeUnknown(SnapshotRow)(r).pipe(Effect.orDie), toSnapshot)),
      )

    // The record without its iterations (MissionSnapshot.record): they stay in Postgres.
    const snapshotColumns = sql`user_id, record_id, record - 'iterations' AS record, deleted, schedulable, next_run_at, malformed_reason`

    // A keyset page on the primary key's order (user_id, record_id).
    const schedulable: MissionStoreShape["schedulable"] = (after, limit) =>
      readSnapshots(
        after === undefined
          ? sql`
              SELECT ${snapshotColumns} FROM mana_ai.mission_snapshots WHERE schedulable
              ORDER BY user_id, record_id LIMIT ${limit}`
          : sql`
              SELECT ${snapshotColumns} FROM mana_ai.mission_snapshots
              WHERE schedulable AND (user_id, record_id) > (${after.userId}, ${after.missionId})
              ORDER BY user_id, record_id LIMIT ${limit}`,
      )

    // Through mission_snapshots_shard_due_idx (shard, next_run_at) WHERE schedulable: only those shards' rows.
    const schedulableIn = (shards: ReadonlyArray<number>) =>
      shards.length === 0
        ? Effect.succeed([] as ReadonlyArray<MissionSnapshot>)
        : readSnapshots(sql`
            SELECT ${snapshotColumns} FROM mana_ai.mission_snapshots
            WHERE schedulable AND shard = ANY(${`{${shards.join(",")}}`}::int[])
            ORDER BY user_id, record_id`)

    const due = (now: Date, shards?: ReadonlyArray<number>) =>
      shards === undefined
        ? readSnapshots(sql`
            SELECT ${snapshotColumns} FROM mana_ai.mission_snapshots
            WHERE schedulable AND next_run_at <= ${now}
            ORDER BY next_run_at, user_id, record_id`)
        : shards.length === 0
          ? Effect.succeed([] as ReadonlyArray<MissionSnapshot>)
          : readSnapshots(sql`
              SELECT ${snapshotColumns} FROM mana_ai.mission_snapshots
              WHERE schedulable AND next_run_at <= ${now} AND shard = ANY(${`{${shards.join(",")}}`}::int[])
              ORDER BY next_run_at, user_id, record_id`)

    const forUser = (userId: string) =>
      readSnapshots(sql`
        SELECT ${snapshotColumns} FROM mana_ai.mission_snapshots
        WHERE user_id = ${userId} AND NOT deleted
        ORDER BY record_id`)

    const claim: MissionStoreShape["claim"] = (key, owner, ttl) =>
      // The caller's Clock, not the server's, so TestClock drives expiry like every other timer.
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.map(
          sql`WITH ${claimCte(sql, key, owner, claimTimes(now, Duration.toMillis(ttl)), Option.isSome(shardCount))} SELECT 1 FROM claimed`,
          (rows) => rows.length > 0,
        ),
      )

    const releaseClaim: MissionStoreShape["releaseClaim"] = (key, owner) =>
      sql`
        DELETE FROM mana_ai.run_claims
        WHERE user_id = ${key.userId} AND mission_id = ${key.missionId} AND iteration_id = ${key.iterationId}
          AND owner = ${owner}`.pipe(Effect.asVoid)

    return { refresh, schedulable, schedulableIn, due, forUser, claim, releaseClaim }
  })

/** The store on the pool's SqlClient; the migrations must have run. makeMissionStore(options) for other batch sizes or windows. */
export class MissionStore extends Effect.Service<MissionStore>()("mana-ai/MissionStore", { effect: makeMissionStore() }) {}
