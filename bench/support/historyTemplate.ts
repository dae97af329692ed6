/**
 * Mission history seeded once per size and copied for each measurement that reads it: the first
 * request for `rows` rows seeds a template database (seedMissionHistory: 20 rows per mission, one per
 * second, ending 600 s before the seed, every mission due in two days), every request gets its own
 * copy of it (`CREATE DATABASE … TEMPLATE`, a block copy inside the server: about 20 times faster
 * than seeding the same rows again), with the template's runner role and an empty `mana_ai` schema
 * (the runner's migrations create its tables, as on a fresh database). A copy is dropped with the
 * caller's scope, the templates with the bench's.
 *
 * The copy holds the same rows, the same statistics (pg_statistic is copied with the catalogs) and
 * the same runner role as the template; only the time since the seed differs, and every seeded row is
 * far outside discovery's look-back window either way.
 */
import { Effect, Redacted, Scope } from "effect"
import pg from "pg"
import { provisionServerDatabase } from "../../test/support/provisionServerDatabase.js"
import type { BenchDatabase } from "./benchDatabase.js"
import { seedMissionHistory } from "./seed.js"
import { nowMs, round } from "./stats.js"

export const HISTORY_ROWS_PER_MISSION = 20
export const HISTORY_ENDING_SECONDS_AGO = 600

export interface HistoryCopy extends BenchDatabase {
  /** Missions in the history (rows ÷ 20). */
  readonly missions: number
}

export interface HistoryTemplates {
  /** A database of its own holding `rows` rows of mission history, dropped with the caller's scope. */
  readonly copy: (rows: number) => Effect.Effect<HistoryCopy, never, Scope.Scope>
  /** Seeds the template for `rows` now if it is not yet (ahead of a copy; bench/run.ts does it beside work that measures nothing). */
  readonly prepare: (rows: number) => Effect.Effect<void>
}

interface Template {
  readonly name: string
  readonly runnerRole: string
  readonly runnerUrl: string
  readonly missions: number
}

const suffix = () => `${Date.now().toString(36)}_${Math.random().toString(36).slice(2, 8)}`

const withAdmin = <A>(ownerUrl: string, f: (admin: pg.Client) => Promise<A>): Effect.Effect<A> =>
  Effect.promise(async () => {
    const admin = new pg.Client({ connectionString: ownerUrl })
    await admin.connect()
    try {
      return await f(admin)
    } finally {
      await admin.end()
    }
  })

/** The templates live as long as the scope this is made in (the bench's). */
export const makeHistoryTemplates = (
  ownerUrl: string,
  log: (line: string) => Effect.Effect<void>,
): Effect.Effect<HistoryTemplates, never, Scope.Scope> =>
  Effect.gen(function* () {
    const benchScope = yield* Effect.scope
    const templates = new Map<number, Template>()
    const lock = yield* Effect.makeSemaphore(1)

    const template = (rows: number): Effect.Effect<Template> =>
      lock.withPermits(1)(
        Effect.suspend(() => {
          const known = templates.get(rows)
          if (known !== undefined) return Effect.succeed(known)
          return Effect.gen(function* () {
            const db = yield* provisionServerDatabase(ownerUrl, { prefix: "mana_ai_bench_tpl", ownerPoolMax: 1 })
            const t0 = nowMs()
            const missions = yield* seedMissionHistory(
              { ...db, ownerQuery: (text, params) => Effect.promise(async () => (await db.owner.query(text, params as Array<unknown> | undefined)).rows) },
              { rows, rowsPerMission: HISTORY_ROWS_PER_MISSION, endingSecondsAgo: HISTORY_ENDING_SECONDS_AGO },
            )
            // A template is copied only while nothing is connected to it: end the owner's session (the
            // pool ignores the error; its finalizer still ends it).
            yield* withAdmin(ownerUrl, (admin) =>
              admin.query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()", [db.name]),
            )
            yield* log(`history template: seeded ${rows} rows (${missions} missions) once in ${round((nowMs() - t0) / 1000, 1)} s`)
            const made: Template = { name: db.name, runnerRole: db.runnerRole, runnerUrl: Redacted.value(db.runnerUrl), missions }
            templates.set(rows, made)
            return made
          }).pipe(Scope.extend(benchScope))
        }),
      )

    const copy = (rows: number): Effect.Effect<HistoryCopy, never, Scope.Scope> =>
      Effect.gen(function* () {
        const t = yield* template(rows)
        const name = `mana_ai_bench_${suffix()}`
        const t0 = nowMs()
        yield* Effect.acquireRelease(
          withAdmin(ownerUrl, (admin) => admin.query(`CREATE DATABASE ${name} TEMPLATE ${t.name}`)),
          () => withAdmin(ownerUrl, (admin) => admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)).pipe(Effect.ignore),
        )
        yield* log(`history template: copied ${rows} rows in ${round((nowMs() - t0) / 1000, 1)} s`)
        const ownerDbUrl = new URL(ownerUrl)
        ownerDbUrl.pathname = `/${name}`
        const owner = new pg.Pool({ connectionString: ownerDbUrl.toString(), max: 4 })
        // As in provisionServerDatabase: the DROP … WITH (FORCE) may end an idle client first.
        owner.on("error", () => {})
        yield* Effect.addFinalizer(() => Effect.promise(() => owner.end()).pipe(Effect.ignore))
        const runnerUrl = new URL(t.runnerUrl)
        runnerUrl.pathname = `/${name}`
        return {
          name,
          runnerRole: t.runnerRole,
          runnerUrl: Redacted.make(runnerUrl.toString()),
          owner,
          ownerQuery: (text, params) =>
            Effect.promise(async () => (await owner.query(text, params as Array<unknown> | undefined)).rows),
          missions: t.missions,
        } satisfies HistoryCopy
      })

    return { copy, prepare: (rows) => Effect.asVoid(template(rows)) }
  })
