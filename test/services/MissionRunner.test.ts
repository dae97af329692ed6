/**
 * The run pipeline end to end: a real database as the runner role (prepared only by
 * sql/runner-role.sql), the migrations, the MissionStore, the input resolvers, the real LlmClient and
 * Planner against a real HTTP stand-in for the LLM, and the write-back.
 */
import { FetchHttpClient } from "@effect/platform"
import { SqlClient } from "@effect/sql"
import { it } from "@effect/vitest"
import { Duration, Effect, Either, Fiber, HashMap, Layer, Logger, Metric, Schedule, TestServices } from "effect"
import { expect } from "vitest"
import { iterationIdFor } from "../../src/domain/iteration.js"
import type { Mission } from "../../src/domain/mission.js"
import { RunnerConfig } from "../../src/services/AppConfig.js"
import { GlobalLlmPermits } from "../../src/services/GlobalLlmPermits.js"
import { InputResolvers, makeInputResolvers, shippedResolvers } from "../../src/services/InputResolvers.js"
import { LlmClient } from "../../src/services/LlmClient.js"
import { MigrationsLive } from "../../src/services/Migrations.js"
import { MissionRunner, makeMissionRunner } from "../../src/services/MissionRunner.js"
import { MissionStore } from "../../src/services/MissionStore.js"
import { missionsSkippedTotal, plansProducedTotal, plansWrittenBackTotal } from "../../src/services/metrics.js"
import { PlannerLive } from "../../src/services/PlannerLive.js"
import { ToolCatalog } from "../../src/services/ToolCatalog.js"
import { WriteBack } from "../../src/services/WriteBack.js"
import { insertChange, missionData, replayedMission, runnerRows } from "../support/eventLogRows.js"
import { LlmStandIn, completion, defaultPlan, llmConfigFor, messagesOf, planAnswer } from "../support/LlmStandIn.js"
import { RunnerSqlLive, TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const INSTANCE = "runner-under-test"
const API_KEY = "sk-test-never-written-anywhere"

const Db = Layer.provideMerge(RunnerSqlLive(6), TestDatabaseLive)
const Config = RunnerConfig.test()
const Base = Layer.provideMerge(MigrationsLive, Layer.merge(Db, Config)).pipe(Layer.orDie)
const StandIn = LlmStandIn.layer
// JSON mode: these tests script fenced answers and count one request per run; tools mode is
// covered in Planner.test.ts and end to end in test/e2e/process.test.ts.
const LlmCfg = Layer.unwrapEffect(Effect.map(LlmStandIn, (s) => llmConfigFor(s, { apiKey: API_KEY, plannerMode: "json" }))).pipe(
  Layer.provideMerge(StandIn),
)
// Short backoff so transient errors repeat many times within a short deadline.
const Llm = LlmClient.withOptions({ baseDelay: Duration.millis(20), maxDelay: Duration.millis(100) }).pipe(
  Layer.provide(Layer.mergeAll(FetchHttpClient.layer, GlobalLlmPermits.Default)),
)
const Pipeline = Layer.mergeAll(
  MissionStore.Default,
  InputResolvers.Default,
  WriteBack.Default,
  PlannerLive.pipe(Layer.provide(Layer.merge(Llm, ToolCatalog.builtin))),
)
const Runner = MissionRunner.withOptions({ instanceId: INSTANCE }).pipe(Layer.provideMerge(Pipeline))
const L = Runner.pipe(Layer.provideMerge(LlmCfg), Layer.provideMerge(Base)).pipe(Layer.orDie)

const SCHEDULED = "2026-03-02T08:00:00.000Z"
let n = 0
const fresh = (prefix: string) => `${prefix}-${++n}-${Math.random().toString(36).slice(2, 8)}`

/** A mission (and its goal) as the app wrote them, found due by the store as the actors find it. */
const dueMission = (user: string, overrides: Record<string, unknown> = {}) =>
  Effect.gen(function* () {
    const missionId = fresh("mission")
    const goalId = fresh("goal")
    yield* insertChange({
      user,
      app: "companion",
      table: "companionGoals",
      id: goalId,
      data: { title: "Run 5k", currentValue: 3, target: { value: 10 }, period: "week" },
    })
    yield* insertChange({
      user,
      id: missionId,
      data: missionData({ inputs: [{ module: "goals", table: "companionGoals", id: goalId }], ...overrides }),
    })
    const store = yield* MissionStore
    yield* store.refresh
    const due = yield* store.due(new Date())
    const snapshot = due.find((s) => s.userId === user && s.missionId === missionId)
    expect(snapshot, "the store finds the mission due").toBeDefined()
    const mission = snapshot!.decoded
    if (Either.isLeft(mission)) throw new Error(mission.left)
    return mission.right satisfies Mission
  })

const counter = (metric: Metric.Metric.Counter<number>) => Effect.map(Metric.value(metric), (s) => s.count)

const live = <A, E, R>(self: Effect.Effect<A, E, R>) => TestServices.provideLive(self)

it.layer(L, { timeout: 120_000 })("MissionRunner (pipeline)", (it) => {
  it.effect("a due mission goes claim → resolve (goals input) → plan → write-back and ends as one SPEC §6 row", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const before = { produced: yield* counter(plansProducedTotal), written: yield* counter(plansWrittenBackTotal) }
        const mission = yield* dueMission("ann")
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission }))
        const iterationId = iterationIdFor(mission.id, SCHEDULED)
        expect(outcome).toEqual({
          _tag: "Written",
          iterationId,
          overallStatus: "awaiting-review",
          steps: 2,
          nextRunAt: expect.any(String),
          planProduced: true,
          parseFailures: 0,
        })

        // The LLM saw the resolved goal, and the key as a bearer token.
        const requests = yield* standIn.requests
        expect(requests).toHaveLength(1)
        expect(requests[0]!.headers.authorization).toBe(`Bearer ${API_KEY}`)
        const prompt = messagesOf(requests[0]).map((m) => m.content).join("\n")
        expect(prompt).toContain("Run 5k")
        expect(prompt).toContain("Progress: 3 / 10 per week")

        const rows = yield* runnerRows("ann", mission.id)
        expect(rows).toHaveLength(1)
        const row = rows[0]!
        const writtenAt = (row.field_timestamps as { iterations: string }).iterations
        expect(Date.parse(writtenAt)).toBeGreaterThan(Date.now() - 60_000)
        const nextRunAt = outcome._tag === "Written" ? outcome.nextRunAt : null
        // interval 60 min from 08:00: the first whole-hour slot of that series strictly after the write.
        const next = Date.parse(nextRunAt!)
        expect(next).toBeGreaterThan(Date.parse(writtenAt))
        expect(next - Date.parse(writtenAt)).toBeLessThanOrEqual(3_600_000)
        expect((next - Date.parse(SCHEDULED)) % 3_600_000).toBe(0)
        expect({ ...row, id: undefined, created_at: undefined }).toEqual({
          id: undefined,
          created_at: undefined,
          app_id: "ai",
          table_name: "aiMissions",
          record_id: mission.id,
          user_id: "ann",
          op: "update",
          data: {
            iterations: [
              {
                id: iterationId,
                startedAt: expect.any(String),
                finishedAt: expect.any(String),
                plan: defaultPlan.steps.map((s, i) => ({
                  id: `${iterationId}-${i}`,
                  summary: `${s.summary} — ${s.rationale}`,
                  intent: { kind: "toolCall", toolName: s.toolName, params: s.params },
                  status: "planned",
                })),
                summary: defaultPlan.summary,
                overallStatus: "awaiting-review",
                source: "server",
              },
            ],
            nextRunAt,
          },
          field_timestamps: { iterations: writtenAt, nextRunAt: writtenAt },
          client_id: "mana-ai-runner",
          schema_version: 1,
          // SPEC §6: the write shape of the generation found at start.
          ...((yield* TestDatabase).generation === "field_meta"
            ? {
                actor: {
                  kind: "ai",
                  principalId: "legacy:ai-default",
                  displayName: "Mana",
                  missionId: mission.id,
                  iterationId,
                  rationale: defaultPlan.summary,
                },
                origin: "agent",
              }
            : { actor: { kind: "system", source: "mission-runner" }, origin: null }),
          space_id: null,
        })
        const iteration = (row.data as { iterations: Array<Record<string, unknown>> }).iterations[0]!
        expect(Object.keys(iteration).sort()).toEqual(["finishedAt", "id", "overallStatus", "plan", "source", "startedAt", "summary"])
        expect(JSON.stringify(rows)).not.toContain(API_KEY)

        // The claim is this instance's, in the runner's own table.
        const sql = yield* SqlClient.SqlClient
        const claims = yield* sql<{ owner: string }>`
          SELECT owner FROM mana_ai.run_claims WHERE user_id = 'ann' AND mission_id = ${mission.id} AND iteration_id = ${iterationId}`
        expect(claims).toEqual([{ owner: INSTANCE }])
        expect(yield* counter(plansProducedTotal)).toBe(before.produced + 1)
        expect(yield* counter(plansWrittenBackTotal)).toBe(before.written + 1)

        // The same scheduled run again (same stale snapshot): nothing written, no LLM call spent.
        const skippedBefore = yield* counter(Metric.tagged(missionsSkippedTotal, "reason", "already-written"))
        const again = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission }))
        expect(again).toEqual({ _tag: "Skipped", reason: "already-written", planProduced: false, parseFailures: 0 })
        expect(yield* runnerRows("ann", mission.id)).toHaveLength(1)
        expect(yield* standIn.requests).toHaveLength(1)
        expect(yield* counter(Metric.tagged(missionsSkippedTotal, "reason", "already-written"))).toBe(skippedBefore + 1)

        // The store sees the write-back: the mission is scheduled for the next slot, not due again.
        const store = yield* MissionStore
        yield* store.refresh
        expect((yield* store.due(new Date())).some((s) => s.missionId === mission.id)).toBe(false)
      }),
    ))

  it.effect("a permanent LLM error (400) writes one failed iteration with errorDetails and advances nextRunAt", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        yield* standIn.enqueue({ status: 400, body: { error: { message: `bad request, key ${API_KEY}` } } })
        const mission = yield* dueMission("ann")
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission }))
        const iterationId = iterationIdFor(mission.id, SCHEDULED)
        expect(outcome).toMatchObject({ _tag: "Written", iterationId, overallStatus: "failed", steps: 0, planProduced: false, failure: "LlmHttpError" })
        expect(yield* standIn.requests).toHaveLength(1)
        const rows = yield* runnerRows("ann", mission.id)
        expect(rows).toHaveLength(1)
        const data = rows[0]!.data as { iterations: Array<Record<string, unknown>>; nextRunAt: string }
        expect(data.iterations).toEqual([
          {
            id: iterationId,
            startedAt: expect.any(String),
            finishedAt: expect.any(String),
            plan: [],
            summary: "Planning failed: the language model refused the request (HTTP 400).",
            overallStatus: "failed",
            source: "server",
            errorDetails: { name: "LlmHttpError", message: "LLM answered HTTP 400", phase: "calling-llm" },
          },
        ])
        expect(Date.parse(data.nextRunAt)).toBeGreaterThan(Date.now() - 60_000)
        expect(JSON.stringify(rows)).not.toContain(API_KEY)
        const state = yield* replayedMission("ann", mission.id)
        expect(state.record?.nextRunAt).toBe(data.nextRunAt)
      }),
    ))

  it.effect("an answer rejected twice (garbage, then garbage after the repair turn) writes a failed iteration with PlanRejected", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const garbage = "Sure! Here is my plan: do stuff SECRET-RAW-OUTPUT"
        yield* standIn.enqueue({ body: completion(garbage) }, { body: completion(`${garbage} again`) })
        const mission = yield* dueMission("ann")
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission }))
        expect(outcome).toMatchObject({ _tag: "Written", overallStatus: "failed", planProduced: false, parseFailures: 2, failure: "PlanRejected" })
        const requests = yield* standIn.requests
        expect(requests).toHaveLength(2)
        // The repair turn quoted the parser's reason back to the model.
        expect(messagesOf(requests[1]).length).toBeGreaterThan(messagesOf(requests[0]).length)
        const rows = yield* runnerRows("ann", mission.id)
        expect(rows).toHaveLength(1)
        const iteration = (rows[0]!.data as { iterations: Array<Record<string, unknown>> }).iterations[0]!
        expect(iteration).toMatchObject({
          plan: [],
          overallStatus: "failed",
          source: "server",
          errorDetails: { name: "PlanRejected", phase: "parsing-response", message: expect.stringMatching(/^plan rejected: /) },
        })
        expect(iteration.summary).toMatch(/^Planning failed: the model's answer was rejected 2 times/)
        expect(JSON.stringify(rows)).not.toContain("SECRET-RAW-OUTPUT")
      }),
    ))

  it.effect("transient errors beyond MISSION_TIMEOUT_MS end in MissionTimeout with nothing written; the mission stays due and a retry succeeds", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        yield* standIn.setResponder(() => ({ status: 503 }))
        const shortDeadline = yield* makeMissionRunner({ instanceId: INSTANCE }).pipe(
          Effect.provideService(RunnerConfig, { ...RunnerConfig.defaults, missionTimeout: Duration.millis(1500) }),
        )
        const mission = yield* dueMission("ann")
        const started = Date.now()
        const result = yield* Effect.either(shortDeadline.run({ userId: "ann", mission }))
        const elapsed = Date.now() - started
        expect(Either.isLeft(result) && result.left._tag).toBe("MissionTimeout")
        expect(elapsed).toBeGreaterThanOrEqual(1400)
        expect(elapsed).toBeLessThan(10_000)
        expect((yield* standIn.requests).length).toBeGreaterThan(2)
        expect(yield* runnerRows("ann", mission.id)).toHaveLength(0)
        // The claim was given back: another instance may take the retry at once.
        const sql = yield* SqlClient.SqlClient
        const claims = yield* sql`SELECT 1 FROM mana_ai.run_claims WHERE user_id = 'ann' AND mission_id = ${mission.id}`
        expect(claims).toHaveLength(0)
        const store = yield* MissionStore
        yield* store.refresh
        expect((yield* store.due(new Date())).some((s) => s.missionId === mission.id)).toBe(true)

        yield* standIn.reset
        const retry = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission }))
        expect(retry).toMatchObject({ _tag: "Written", overallStatus: "awaiting-review" })
        expect(yield* runnerRows("ann", mission.id)).toHaveLength(1)
      }),
    ))

  it.effect("a claim held by another owner skips the run before any LLM request", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const mission = yield* dueMission("ann")
        const store = yield* MissionStore
        const key = { userId: "ann", missionId: mission.id, iterationId: iterationIdFor(mission.id, mission.nextRunAt) }
        expect(yield* store.claim(key, "another-instance", Duration.minutes(5))).toBe(true)
        const before = yield* counter(Metric.tagged(missionsSkippedTotal, "reason", "claimed-elsewhere"))
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission }))
        expect(outcome).toEqual({ _tag: "Skipped", reason: "claimed-elsewhere", planProduced: false, parseFailures: 0 })
        expect(yield* standIn.requests).toHaveLength(0)
        expect(yield* runnerRows("ann", mission.id)).toHaveLength(0)
        expect(yield* counter(Metric.tagged(missionsSkippedTotal, "reason", "claimed-elsewhere"))).toBe(before + 1)
      }),
    ))

  it.effect("the claim's transaction commits without waiting for the WAL flush; the write-back's waits", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const db = yield* TestDatabase
        const user = fresh("commit-user")
        // Triggers (the owner's) note the setting each write of this user's runs commits under.
        yield* Effect.promise(() =>
          db.ownerQuery(`
            CREATE TABLE IF NOT EXISTS public.commit_modes (table_name text, user_id text, mode text);
            GRANT INSERT ON public.commit_modes TO PUBLIC;
            CREATE OR REPLACE FUNCTION public.note_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO public.commit_modes VALUES (TG_TABLE_NAME, NEW.user_id, current_setting('synchronous_commit'));
              RETURN NEW;
            END $$;
            DROP TRIGGER IF EXISTS note_commit_mode ON mana_ai.run_claims;
            CREATE TRIGGER note_commit_mode AFTER INSERT OR UPDATE ON mana_ai.run_claims FOR EACH ROW EXECUTE FUNCTION public.note_commit_mode();
            DROP TRIGGER IF EXISTS note_commit_mode ON sync_changes;
            CREATE TRIGGER note_commit_mode AFTER INSERT ON sync_changes FOR EACH ROW EXECUTE FUNCTION public.note_commit_mode();`),
        )
        const mission = yield* dueMission(user)
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: user, mission }))
        expect(outcome._tag).toBe("Written")
        const modes = yield* Effect.promise(() =>
          db.ownerQuery("SELECT table_name, mode FROM public.commit_modes WHERE user_id = $1 ORDER BY table_name, mode", [user]),
        )
        yield* Effect.promise(() =>
          db.ownerQuery(`
            DROP TRIGGER note_commit_mode ON mana_ai.run_claims;
            DROP TRIGGER note_commit_mode ON sync_changes;`),
        )
        // The test's own inserts (as the owner) commit as the server's default does ("on").
        const claims = modes.filter((m) => m.table_name === "run_claims").map((m) => m.mode)
        expect(claims).toEqual(["off"])
        const written = modes.filter((m) => m.table_name === "sync_changes").map((m) => m.mode)
        expect(written.length).toBeGreaterThanOrEqual(3) // the goal, the mission, the runner's write-back
        expect(new Set(written)).toEqual(new Set(["on"]))
      }),
    ))

  it.effect("expired run claims are pruned after a run (at most once per interval); live claims stay", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const sql = yield* SqlClient.SqlClient
        const claimsOf = (user: string) =>
          Effect.map(
            sql<{ mission_id: string }>`SELECT mission_id FROM mana_ai.run_claims WHERE user_id = ${user} ORDER BY mission_id`,
            (rows) => rows.map((r) => r.mission_id),
          )
        const user = fresh("claims-user")
        // A crashed instance's claim an hour past its expiry, and one still held by a run under way elsewhere.
        yield* sql`
          INSERT INTO mana_ai.run_claims (user_id, mission_id, iteration_id, owner, expires_at)
          VALUES (${user}, 'a-expired', 'it-1', 'crashed-instance', now() - interval '1 hour'),
                 (${user}, 'b-live', 'it-1', 'another-instance', now() + interval '1 hour')`
        const runner = yield* makeMissionRunner({ instanceId: INSTANCE, claimPruneEvery: Duration.hours(1) })
        const first = yield* dueMission(user)
        expect((yield* runner.run({ userId: user, mission: first }))._tag).toBe("Written")
        // The expired claim is gone; the live one and this run's own (kept until it expires) stay.
        expect(yield* claimsOf(user)).toEqual([first.id, "b-live"].sort())

        // Within the interval a second run prunes nothing, even a claim that has expired meanwhile.
        yield* sql`UPDATE mana_ai.run_claims SET expires_at = now() - interval '1 second' WHERE user_id = ${user} AND mission_id = 'b-live'`
        const second = yield* dueMission(user)
        expect((yield* runner.run({ userId: user, mission: second }))._tag).toBe("Written")
        expect(yield* claimsOf(user)).toEqual([first.id, second.id, "b-live"].sort())
      }),
    ))

  it.effect("a mission paused or rescheduled after the snapshot was taken is skipped before any LLM request", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        const paused = yield* dueMission("ann")
        yield* insertChange({ user: "ann", id: paused.id, op: "update", data: { state: "paused" } })
        const moved = yield* dueMission("ann")
        yield* insertChange({ user: "ann", id: moved.id, op: "update", data: { nextRunAt: "2099-01-01T00:00:00.000Z" } })
        const runner = yield* MissionRunner
        expect(yield* runner.run({ userId: "ann", mission: paused })).toMatchObject({ _tag: "Skipped", reason: "not-active" })
        expect(yield* runner.run({ userId: "ann", mission: moved })).toMatchObject({ _tag: "Skipped", reason: "not-due" })
        expect(yield* standIn.requests).toHaveLength(0)
        expect(yield* runnerRows("ann", paused.id)).toHaveLength(0)
        expect(yield* runnerRows("ann", moved.id)).toHaveLength(0)
      }),
    ))

  it.effect("the inputs the snapshot names are read with the mission (no query of the resolvers' own); inputs changed since are read on their own", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        // The resolvers on a client that counts the statements they issue themselves.
        const sql = yield* SqlClient.SqlClient
        const used = { statements: 0 }
        const watched = new Proxy(sql, {
          apply: (target, self, args) => {
            used.statements++
            return Reflect.apply(target as never, self, args)
          },
        })
        const resolvers = yield* makeInputResolvers(shippedResolvers).pipe(Effect.provideService(SqlClient.SqlClient, watched))
        const runner = yield* makeMissionRunner({ instanceId: INSTANCE }).pipe(
          Effect.provideService(InputResolvers, InputResolvers.make(resolvers)),
        )

        const current = yield* dueMission("ann")
        expect(yield* runner.run({ userId: "ann", mission: current })).toMatchObject({ _tag: "Written" })
        expect(used.statements).toBe(0)
        const prompt = messagesOf((yield* standIn.requests)[0]).map((m) => m.content).join("\n")
        expect(prompt).toContain("Run 5k")
        expect(prompt).toContain("Progress: 3 / 10 per week")

        // The user pointed the mission at another goal after the snapshot: the run reads that one.
        const changed = yield* dueMission("ann")
        const otherGoal = fresh("goal")
        yield* insertChange({
          user: "ann",
          app: "companion",
          table: "companionGoals",
          id: otherGoal,
          data: { title: "Swim 2k", currentValue: 1, target: { value: 4 }, period: "month" },
        })
        yield* insertChange({
          user: "ann",
          id: changed.id,
          op: "update",
          data: { inputs: [{ module: "goals", table: "companionGoals", id: otherGoal }] },
        })
        yield* standIn.reset
        expect(yield* runner.run({ userId: "ann", mission: changed })).toMatchObject({ _tag: "Written" })
        expect(used.statements).toBeGreaterThan(0)
        const second = messagesOf((yield* standIn.requests)[0]).map((m) => m.content).join("\n")
        expect(second).toContain("Swim 2k")
        expect(second).toContain("Progress: 1 / 4 per month")
        expect(second).not.toContain("Run 5k")
      }),
    ))

  it.effect("a run interrupted while the LLM is answering (drain) writes nothing, aborts the request and gives its claim back", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        yield* standIn.enqueue({ delayMs: 5_000 })
        const mission = yield* dueMission("ann")
        const fiber = yield* Effect.fork(Effect.flatMap(MissionRunner, (r) => r.run({ userId: "ann", mission })))
        yield* standIn.inFlight.pipe(
          Effect.repeat({ until: (k) => k === 1, schedule: Schedule.spaced("10 millis") }),
          Effect.timeout("5 seconds"),
        )
        yield* Fiber.interrupt(fiber)
        expect(yield* runnerRows("ann", mission.id)).toHaveLength(0)
        const sql = yield* SqlClient.SqlClient
        expect(yield* sql`SELECT 1 FROM mana_ai.run_claims WHERE user_id = 'ann' AND mission_id = ${mission.id}`).toHaveLength(0)
        // The stand-in sees the connection closed by the client, not answered.
        yield* standIn.requests.pipe(
          Effect.repeat({ until: (rs) => rs[0]?.closedAt !== undefined, schedule: Schedule.spaced("10 millis") }),
          Effect.timeout("5 seconds"),
        )
        const [request] = yield* standIn.requests
        expect(request?.abortedByClient).toBe(true)
      }),
    ))

  it.effect("a run's token usage (repair turn included) is logged on its written-back line", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        yield* standIn.enqueue(
          { body: completion("no plan here", { prompt_tokens: 100, completion_tokens: 20, total_tokens: 120 }) },
          { body: completion(planAnswer(defaultPlan), { prompt_tokens: 150, completion_tokens: 30, total_tokens: 180 }) },
        )
        const mission = yield* dueMission("cay")
        const lines: Array<{ message: string; annotations: Record<string, unknown> }> = []
        const capture = Logger.make(({ message, annotations }) => {
          lines.push({ message: JSON.stringify(message), annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
        })
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "cay", mission })).pipe(
          Effect.provide(Logger.add(capture)),
        )
        expect(outcome).toMatchObject({ _tag: "Written", overallStatus: "awaiting-review", parseFailures: 1 })
        const written = lines.filter((l) => l.message.includes("iteration written back"))
        expect(written).toHaveLength(1)
        expect(written[0]!.annotations).toMatchObject({
          missionId: mission.id,
          llmAnswersWithUsage: 2,
          promptTokens: 250,
          completionTokens: 50,
          totalTokens: 300,
        })
      }),
    ))

  it.effect("every log line of a run carries userId and missionId, and none carries the API key", () =>
    live(
      Effect.gen(function* () {
        const standIn = yield* LlmStandIn
        yield* standIn.reset
        yield* standIn.enqueue({ status: 401, body: { error: `invalid key ${API_KEY}` } })
        const mission = yield* dueMission("bob")
        const lines: Array<{ message: string; annotations: Record<string, unknown> }> = []
        const capture = Logger.make(({ message, annotations }) => {
          lines.push({ message: JSON.stringify(message), annotations: Object.fromEntries(HashMap.toEntries(annotations)) })
        })
        const outcome = yield* Effect.flatMap(MissionRunner, (r) => r.run({ userId: "bob", mission })).pipe(
          Effect.provide(Logger.add(capture)),
        )
        expect(outcome).toMatchObject({ _tag: "Written", overallStatus: "failed", failure: "LlmHttpError" })
        expect(lines.length).toBeGreaterThanOrEqual(2)
        for (const line of lines) {
          expect(line.annotations).toMatchObject({ userId: "bob", missionId: mission.id })
          expect(JSON.stringify(line)).not.toContain(API_KEY)
        }
        expect(lines.some((l) => l.message.includes("planning failed for good") && l.annotations.phase === "calling-llm")).toBe(true)
      }),
    ))
})
