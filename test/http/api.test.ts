/**
 * The HTTP app on a real (Node) HTTP server, with a backend double standing in for the supervisor
 * and the store: what is tested here is the HTTP layer itself (auth, shapes, readiness, metrics).
 */
import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Context, Deferred, Effect, Fiber, Layer, Metric, Redacted, Ref, TestServices } from "effect"
import { ApiLive, serviceKeyMatches } from "../../src/http/Api.js"
import { type ActorView, type ApiBackend, BackendError, ServerState, type TickReport } from "../../src/http/ServerState.js"
import { testProcessLayer } from "../../src/layers/test.js"
import { plansWrittenBackTotal } from "../../src/services/metrics.js"
import { insertChanges, missionInsertRow } from "../support/seed.js"
import { TestDatabase, TestDatabaseLive } from "../support/TestDatabase.js"

const KEY = "test-service-key-0123456789"

const actorsList: ReadonlyArray<ActorView> = [
  { userId: "alice", state: "idle", missions: [{ missionId: "m1" }, { missionId: "m2" }], inFlight: 0, restarts: 0, lastError: null, nextWakeAt: "2030-01-01T00:00:00.000Z" },
  { userId: "bob", state: "running", missions: [{ missionId: "b1" }], inFlight: 1, restarts: 1, lastError: null, nextWakeAt: null },
  { userId: "carol", state: "quarantined", missions: [], inFlight: 0, restarts: 5, lastError: "boom", nextWakeAt: null },
]

const report: TickReport = {
  scannedAt: "2030-01-01T00:00:00.000Z",
  dueMissionCount: 2,
  plansProduced: 2,
  plansWrittenBack: 2,
  parseFailures: 0,
  errors: [],
}

/** A backend double whose tick waits on the current gate, so a test can catch a tick in flight. */
const makeBackend = (gate: Ref.Ref<Deferred.Deferred<void>>, restarted: Ref.Ref<ReadonlyArray<string>>): ApiBackend => ({
  tick: Ref.get(gate).pipe(Effect.flatMap(Deferred.await), Effect.as(report)),
  actors: Effect.succeed(actorsList),
  restart: (userId) =>
    Ref.update(restarted, (xs) => [...xs, userId]).pipe(Effect.as(actorsList.some((a) => a.userId === userId))),
  missions: (userId) =>
    userId === "broken"
      ? Effect.fail(new BackendError({ reason: "database unavailable" }))
      : Effect.succeed([
          {
            missionId: "m1",
            record: { id: "m1", title: "Run", iterations: [{ id: "i1", plan: [] }], customField: 1 },
            malformed: null,
          },
          { missionId: "m2", record: { id: "m2", title: 3 }, malformed: "title: expected string" },
        ]),
  tickRunning: Effect.succeed(false),
})

class Gate extends Context.Tag("test/Gate")<Gate, Ref.Ref<Deferred.Deferred<void>>>() {}

const TestServer = ApiLive.pipe(
  Layer.provideMerge(Layer.effect(Gate, Effect.flatMap(Deferred.make<void>(), Ref.make))),
  Layer.provideMerge(ServerState.layer({ serviceKey: Redacted.make(KEY), tickEnabled: true, version: "9.9.9" })),
  Layer.provideMerge(NodeHttpServer.layerTest),
)

const call = (method: "GET" | "POST", path: string, key?: string) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    let request = method === "GET" ? HttpClientRequest.get(path) : HttpClientRequest.post(path)
    if (key !== undefined) request = HttpClientRequest.setHeader(request, "X-Service-Key", key)
    return yield* client.execute(request)
  })

const bodyOf = (response: HttpClientResponse.HttpClientResponse) => response.json as Effect.Effect<any, unknown>

/** One sample's value from Prometheus text (the series must be there). */
const sampleOf = (text: string, series: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `))
  if (line === undefined) throw new Error(`no sample ${series} in /metrics`)
  return Number(line.slice(series.length + 1))
}

describe("service key comparison", () => {
  it("accepts only the exact key", () => {
    const key = Redacted.make(KEY)
    expect(serviceKeyMatches(key, KEY)).toBe(true)
    expect(serviceKeyMatches(key, undefined)).toBe(false)
    expect(serviceKeyMatches(key, "")).toBe(false)
    expect(serviceKeyMatches(key, `${KEY}x`)).toBe(false)
    expect(serviceKeyMatches(key, KEY.slice(0, -1))).toBe(false)
    expect(serviceKeyMatches(key, KEY.toUpperCase())).toBe(false)
  })
})

it.layer(TestServer, { timeout: 30_000 })("HTTP API", (it) => {
  it.effect("before start-up finishes: /health answers, /ready is 503, /internal is 503 with the key", () =>
    Effect.gen(function* () {
      const health = yield* call("GET", "/health")
      expect(health.status).toBe(200)
      expect(yield* bodyOf(health)).toEqual({
        ok: true,
        service: "mana-ai",
        version: "9.9.9",
        phase: "starting",
        tick: { enabled: true, running: false },
        actors: { total: 0 },
      })
      const ready = yield* call("GET", "/ready")
      expect(ready.status).toBe(503)
      const actors = yield* call("GET", "/internal/actors", KEY)
      expect(actors.status).toBe(503)
      expect(yield* bodyOf(actors)).toMatchObject({ error: "not-ready" })
    }))

  it.effect("/ready turns 200 once ready and 503 again while draining; /health keeps answering", () =>
    Effect.gen(function* () {
      const state = yield* ServerState
      yield* state.provideBackend(makeBackend(yield* Gate, yield* Ref.make<ReadonlyArray<string>>([])))
      yield* state.setPhase("ready")
      expect((yield* call("GET", "/ready")).status).toBe(200)
      yield* state.setPhase("draining")
      const draining = yield* call("GET", "/ready")
      expect(draining.status).toBe(503)
      expect(yield* bodyOf(draining)).toEqual({ ready: false, phase: "draining" })
      const tick = yield* call("POST", "/internal/tick", KEY)
      expect(tick.status).toBe(503)
      expect(yield* bodyOf(tick)).toMatchObject({ error: "draining" })
      expect((yield* call("GET", "/health")).status).toBe(200)
      yield* state.setPhase("ready")
    }))

  it.effect("every /internal route answers 401 JSON without the key and with a wrong one", () =>
    Effect.gen(function* () {
      const routes: ReadonlyArray<readonly ["GET" | "POST", string]> = [
        ["POST", "/internal/tick"],
        ["GET", "/internal/actors"],
        ["POST", "/internal/actors/alice/restart"],
        ["GET", "/internal/missions/alice"],
        ["GET", "/internal/nothing-here"],
      ]
      for (const [method, path] of routes) {
        for (const key of [undefined, "", "wrong-key-wrong-key-wrong", `${KEY}x`, KEY.slice(1)]) {
          const response = yield* call(method, path, key)
          expect(response.status, `${method} ${path} with ${key}`).toBe(401)
          expect(yield* bodyOf(response)).toEqual({ error: "unauthorized", reason: "missing or wrong X-Service-Key header" })
        }
      }
    }))

  it.effect("with the right key: actors, missions, restart, and the summary in /health", () =>
    Effect.gen(function* () {
      const actors = yield* call("GET", "/internal/actors", KEY)
      expect(actors.status).toBe(200)
      expect(yield* bodyOf(actors)).toEqual({ actors: actorsList })

      const missions = yield* call("GET", "/internal/missions/alice", KEY)
      expect(missions.status).toBe(200)
      const body = yield* bodyOf(missions)
      expect(body.userId).toBe("alice")
      expect(body.missions[0]).toEqual({ id: "m1", title: "Run", iterations: [{ id: "i1", plan: [] }], customField: 1 })
      expect(body.malformed).toEqual([{ missionId: "m2", reason: "title: expected string" }])

      const failing = yield* call("GET", "/internal/missions/broken", KEY)
      expect(failing.status).toBe(500)
      expect(yield* bodyOf(failing)).toEqual({ error: "backend-error", reason: "database unavailable" })

      expect((yield* call("POST", "/internal/actors/carol/restart", KEY)).status).toBe(200)
      const unknown = yield* call("POST", "/internal/actors/nobody/restart", KEY)
      expect(unknown.status).toBe(404)
      expect(yield* bodyOf(unknown)).toMatchObject({ error: "unknown-user" })

      const health = yield* bodyOf(yield* call("GET", "/health"))
      expect(health.actors).toEqual({ total: 3, idle: 1, running: 1, quarantined: 1 })
      expect(health.phase).toBe("ready")

      const notFound = yield* call("GET", "/nope")
      expect(notFound.status).toBe(404)
      expect(yield* bodyOf(notFound)).toEqual({ error: "not-found", reason: "no such route" })
    }))

  it.effect("a tick under way shows as tick.running in /health and its report comes back when it ends", () =>
    Effect.gen(function* () {
      const state = yield* ServerState
      const gate = yield* Deferred.make<void>()
      yield* Ref.set(yield* Gate, gate)
      const tick = yield* call("POST", "/internal/tick", KEY).pipe(Effect.fork)
      // Real time: the request travels through a real socket.
      while ((yield* Ref.get(state.ticksRunning)) === 0) yield* TestServices.provideLive(Effect.sleep("10 millis"))
      expect((yield* bodyOf(yield* call("GET", "/health"))).tick).toEqual({ enabled: true, running: true })
      yield* Deferred.succeed(gate, undefined)
      const response = yield* Fiber.join(tick)
      expect(response.status).toBe(200)
      expect(yield* bodyOf(response)).toEqual(report)
      expect(yield* Ref.get(state.ticksRunning)).toBe(0)
    }))

  it.effect("/metrics is Prometheus text with mana_ai_ series", () =>
    Effect.gen(function* () {
      yield* Metric.incrementBy(plansWrittenBackTotal, 2)
      const response = yield* call("GET", "/metrics")
      expect(response.status).toBe(200)
      expect(response.headers["content-type"]).toContain("text/plain; version=0.0.4")
      const text = yield* response.text
      expect(text).toContain("# TYPE mana_ai_plans_written_back_total counter")
      // The served value is the registry's, not a fixed or rendered-away one: two more, two more shown.
      const before = sampleOf(text, "mana_ai_plans_written_back_total")
      yield* Metric.incrementBy(plansWrittenBackTotal, 2)
      expect(sampleOf(yield* (yield* call("GET", "/metrics")).text, "mana_ai_plans_written_back_total")).toBe(before + 2)
    }))
})

// ---------------------------------------------------------------- the real composition

const RealProcess = Layer.unwrapEffect(
  Effect.map(TestDatabase, (db) =>
    testProcessLayer({
      databaseUrl: db.runnerUrl,
      serviceKey: Redacted.make(KEY),
      env: { TICK_ENABLED: "false", DB_POOL_MAX: "4", SHUTDOWN_GRACE_MS: "1000" },
    }),
  ),
).pipe(Layer.provideMerge(TestDatabaseLive))

it.layer(RealProcess, { timeout: 60_000 })("HTTP API on the real supervisor and database", (it) => {
  it.effect("ready after start; a tick writes the due mission, which /internal/missions shows with its iteration", () =>
    Effect.gen(function* () {
      expect((yield* call("GET", "/ready")).status).toBe(200)
      // Due and not due whatever the clock says: it.layer's services may run on the TestClock (at 1970).
      yield* insertChanges([
        missionInsertRow("api-user", "api-due", { nextRunAt: "1969-12-31T00:00:00.000Z" }),
        missionInsertRow("api-user", "api-later", { nextRunAt: "2999-01-01T00:00:00.000Z" }),
      ])
      expect((yield* call("POST", "/internal/tick", "wrong-key-wrong-key-wrong")).status).toBe(401)
      const tick = yield* call("POST", "/internal/tick", KEY)
      expect(tick.status).toBe(200)
      expect(yield* bodyOf(tick)).toMatchObject({ dueMissionCount: 1, plansWrittenBack: 1, errors: [] })

      const missions = yield* bodyOf(yield* call("GET", "/internal/missions/api-user", KEY))
      const byId = new Map<string, any>(missions.missions.map((m: any) => [m.id, m]))
      expect(byId.get("api-due").iterations).toHaveLength(1)
      expect(byId.get("api-due").iterations[0].summary).toMatch(/^Offline planner:/)
      expect(byId.get("api-later").iterations).toHaveLength(0)
      expect(missions.malformed).toEqual([])

      const actors = yield* bodyOf(yield* call("GET", "/internal/actors", KEY))
      expect(actors.actors.map((a: { userId: string }) => a.userId)).toEqual(["api-user"])
      const health = yield* bodyOf(yield* call("GET", "/health"))
      expect(health).toMatchObject({ ok: true, version: "test", phase: "ready", tick: { enabled: false, running: false } })
      expect(health.actors.total).toBe(1)
      expect(yield* (yield* call("GET", "/metrics")).text).toMatch(/^mana_ai_plans_written_back_total [1-9]/m)
    }))

  it.effect("each discovery pass is counted once in /metrics: rows read by the store, one duration sample", () =>
    Effect.gen(function* () {
      const metrics = Effect.flatMap(call("GET", "/metrics"), (r) => r.text)
      // A first tick takes in whatever earlier tests left in the log (their write-backs included).
      yield* call("POST", "/internal/tick", KEY)
      const before = yield* metrics
      // Three rows, none due: the tick's one discovery pass reads exactly these.
      yield* insertChanges([
        missionInsertRow("metrics-user", "m-a", { nextRunAt: "2999-01-01T00:00:00.000Z" }),
        missionInsertRow("metrics-user", "m-b", { nextRunAt: "2999-01-01T00:00:00.000Z" }),
        missionInsertRow("metrics-other", "m-c", { nextRunAt: "2999-01-01T00:00:00.000Z" }),
      ])
      expect(yield* bodyOf(yield* call("POST", "/internal/tick", KEY))).toMatchObject({ dueMissionCount: 0, errors: [] })
      const after = yield* metrics
      expect(sampleOf(after, "mana_ai_discovery_rows_read_total") - sampleOf(before, "mana_ai_discovery_rows_read_total")).toBe(3)
      expect(sampleOf(after, "mana_ai_discovery_duration_seconds_count") - sampleOf(before, "mana_ai_discovery_duration_seconds_count")).toBe(1)
      expect(sampleOf(after, "mana_ai_ticks_total") - sampleOf(before, "mana_ai_ticks_total")).toBe(1)
    }))
})
