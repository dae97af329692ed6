/**
 * Seeding as the owner (the sync server's side), fast: one INSERT … SELECT generate_series per
 * workload, so a million rows take seconds and no row travels through the client.
 */
import { Effect } from "effect"
import type { BenchDatabase } from "./benchDatabase.js"

/** A timestamptz as the app writes its ISO fields. */
const isoSql = (expr: string) => `to_char((${expr}) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')`

const missionObject = (nextRunAt: string, inputs: string) => `jsonb_build_object(
  'title', 'Bench mission ' || m,
  'objective', 'Keep the bench mission ' || m || ' moving, one small step at a time',
  'conceptMarkdown', 'Small steps, three times a week. Review progress every Sunday.',
  'state', 'active',
  'nextRunAt', ${isoSql(nextRunAt)},
  'inputs', ${inputs},
  'cadence', jsonb_build_object('kind', 'interval', 'everyMinutes', 60),
  'iterations', '[]'::jsonb,
  'createdAt', ${isoSql("now() - interval '30 days'")},
  'updatedAt', ${isoSql("now() - interval '30 days'")})`

/**
 * `rows` mission rows of history: `rows / rowsPerMission` missions (5 per user), each created by an
 * insert and then edited by small updates, one row per second ending `endingSecondsAgo` before now,
 * so every size has the same rows inside discovery's look-back window. Every mission is scheduled
 * days ahead: the due query finds nothing, as in a quiet steady state.
 */
export const seedMissionHistory = (
  db: BenchDatabase,
  options: { readonly rows: number; readonly rowsPerMission: number; readonly endingSecondsAgo: number },
) => {
  const missions = Math.max(1, Math.floor(options.rows / options.rowsPerMission))
  return db.ownerQuery(
    `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
     SELECT 'ai', 'aiMissions', 'hist-m-' || m, 'hist-u-' || (m / 5),
            CASE WHEN g <= $2 THEN 'insert' ELSE 'update' END,
            CASE WHEN g <= $2 THEN ${missionObject("now() + interval '2 days' + make_interval(secs => m)", "'[]'::jsonb")}
                 ELSE jsonb_build_object('objective', 'Revision ' || g || ' of mission ' || m,
                                         'updatedAt', ${isoSql("now() - make_interval(secs => $3 + ($1 - g))")})
            END,
            '{}'::jsonb, 'browser-device', now() - make_interval(secs => $3 + ($1 - g))
     FROM generate_series(1, $1::int) AS g, LATERAL (SELECT (g - 1) % $2 AS m) AS x`,
    [options.rows, missions, options.endingSecondsAgo],
  ).pipe(Effect.zipRight(db.ownerQuery("ANALYZE sync_changes")), Effect.as(missions))
}

export interface DueWorkload {
  readonly users: number
  readonly missionsPerUser: number
  /** Epoch ms of the first mission's nextRunAt. */
  readonly firstDueAt: number
  /** nextRunAt of mission i is firstDueAt + i * spreadMs / count; consecutive i belong to different users. */
  readonly spreadMs: number
  /** Each user gets one goal (companion/companionGoals) linked as every mission's input. */
  readonly withGoal: boolean
}

/**
 * One insert row per mission (users × missionsPerUser, user of mission i = i % users), created over
 * the hour before now, plus one goal record per user when asked. Returns the mission count.
 */
export const seedDueMissions = (db: BenchDatabase, w: DueWorkload) =>
  Effect.gen(function* () {
    const count = w.users * w.missionsPerUser
    if (w.withGoal) {
      yield* db.ownerQuery(
        `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
         SELECT 'companion', 'companionGoals', 'goal-' || u, 'bench-u-' || u, 'insert',
                jsonb_build_object('title', 'Run three times a week', 'currentValue', u % 4, 'target', jsonb_build_object('value', 3),
                                   'period', 'week', 'createdAt', ${isoSql("now() - interval '2 hours'")}),
                '{}'::jsonb, 'browser-device', now() - interval '2 hours'
         FROM generate_series(0, $1::int - 1) AS u`,
        [w.users],
      )
    }
    const inputs = w.withGoal
      ? "jsonb_build_array(jsonb_build_object('module', 'goals', 'table', 'companionGoals', 'id', 'goal-' || (i % $1)))"
      : "'[]'::jsonb"
    yield* db.ownerQuery(
      `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
       SELECT 'ai', 'aiMissions', 'bench-m-' || i, 'bench-u-' || (i % $1), 'insert',
              ${missionObject("to_timestamp(($3::float8 + i * $4::float8 / $2) / 1000)", inputs)},
              '{}'::jsonb, 'browser-device', now() - interval '1 hour' + make_interval(secs => i * 3600.0 / $2)
       FROM generate_series(0, $2::int - 1) AS i, LATERAL (SELECT i AS m) AS x`,
      [w.users, count, w.firstDueAt, w.spreadMs],
    )
    yield* db.ownerQuery("ANALYZE sync_changes")
    return count
  })

export interface SkewedWorkload {
  readonly hotUsers: number
  readonly hotPerUser: number
  readonly quietUsers: number
  /** Epoch ms every hot mission is due at. */
  readonly dueAt: number
  /** Quiet user q's one mission is due at quietFirstDueAt + q * quietSpreadMs (0: all at once). */
  readonly quietFirstDueAt: number
  readonly quietSpreadMs: number
}

/**
 * A few hot users with a backlog each and many quiet users with one mission each (no inputs):
 * users 'hot-u-<n>' and 'quiet-u-<n>'. Returns the mission count.
 */
export const seedSkewedDueMissions = (db: BenchDatabase, w: SkewedWorkload) =>
  Effect.gen(function* () {
    const hot = w.hotUsers * w.hotPerUser
    yield* db.ownerQuery(
      `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
       SELECT 'ai', 'aiMissions', 'hot-m-' || i, 'hot-u-' || (i % $1), 'insert',
              ${missionObject("to_timestamp($3::float8 / 1000)", "'[]'::jsonb")},
              '{}'::jsonb, 'browser-device', now() - interval '1 hour' + make_interval(secs => i * 3600.0 / $2)
       FROM generate_series(0, $2::int - 1) AS i, LATERAL (SELECT i AS m) AS x`,
      [w.hotUsers, hot, w.dueAt],
    )
    yield* db.ownerQuery(
      `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
       SELECT 'ai', 'aiMissions', 'quiet-m-' || i, 'quiet-u-' || i, 'insert',
              ${missionObject("to_timestamp(($2::float8 + i * $3::float8) / 1000)", "'[]'::jsonb")},
              '{}'::jsonb, 'browser-device', now() - interval '1 hour'
       FROM generate_series(0, $1::int - 1) AS i, LATERAL (SELECT i + 1000000 AS m) AS x`,
      [w.quietUsers, w.quietFirstDueAt, w.quietSpreadMs],
    )
    yield* db.ownerQuery("ANALYZE sync_changes")
    return hot + w.quietUsers
  })

/**
 * One round of the same `n` missions (one per user, `${prefix}-m-i` of `${prefix}-u-i`) made due now:
 * round 1 inserts them, later rounds make them due again with an update stamped now, newer than the
 * runner's write-back, so the same actors run the same missions and their history grows each round.
 */
export const missionsDueAgain = (db: BenchDatabase, prefix: string, title: string, round: number, n: number) =>
  db.ownerQuery(
    round === 1
      ? `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
         SELECT 'ai', 'aiMissions', '${prefix}-m-' || i, '${prefix}-u-' || i, 'insert',
                jsonb_build_object('title', '${title} ' || i, 'objective', 'Keep mission ' || i || ' moving',
                  'conceptMarkdown', 'Small steps.', 'state', 'active', 'inputs', '[]'::jsonb, 'iterations', '[]'::jsonb,
                  'cadence', jsonb_build_object('kind', 'interval', 'everyMinutes', 60),
                  'nextRunAt', to_char((now() - interval '1 minute') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  'createdAt', '2026-01-01T00:00:00.000Z', 'updatedAt', '2026-01-01T00:00:00.000Z'),
                '{}'::jsonb, 'browser-device', now() - interval '2 minutes'
         FROM generate_series(1, $1::int) AS i`
      : `INSERT INTO sync_changes (app_id, table_name, record_id, user_id, op, data, field_meta, client_id, created_at)
         SELECT 'ai', 'aiMissions', '${prefix}-m-' || i, '${prefix}-u-' || i, 'update',
                jsonb_build_object('nextRunAt', to_char((now() - interval '1 minute') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')),
                '{}'::jsonb, 'browser-device', clock_timestamp()
         FROM generate_series(1, $1::int) AS i`,
    [n],
  )
