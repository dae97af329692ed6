/**
 * The operator page's server side: paging and ordering of the actor list, the bounded ring of
 * recent failures fed from the log, and GET /internal/overview and GET / on a real (Node) HTTP
 * server with a backend double standing in for the supervisor (the browser test in
 * test/e2e/operatorPage.test.ts runs the page against the real process).
 */
import { HttpClient, HttpClientRequest, type HttpClientResponse } from "@effect/platform"
import { NodeHttpServer } from "@effect/platform-node"
import { describe, expect, it } from "@effect/vitest"
import { Cause, Effect, Layer, Logger, Redacted } from "effect"
import { makeActorOrder, pageActors, pageCensus } from "../../src/http/actorPage.js"
import { ApiLive } from "../../src/http/Api.js"
import { failureLogger, makeRecentFailures } from "../../src/http/RecentFailures.js"
import { type ActorCensusView, type ActorView, type ApiBackend, ServerState } from "../../src/http/ServerState.js"

const KEY = "page-test-service-key-0123456789"

const actor = (userId: string, state: string, extra: Partial<ActorView> = {}): ActorView => ({
  userId,
  state,
  missions: [],
  inFlight: 0,
  restarts: 0,
  lastError: null,
  nextWakeAt: null,
  ...extra,
})

describe("pageActors", () => {
  const list = [
    actor("a", "idle"),
    actor("b", "running"),
    actor("c", "quarantined"),
    actor("d", "idle"),
    actor("e", "backing-off"),
    actor("f", "quarantined"),
    actor("g", "parked-somehow"),
  ]

  it("quarantined first, then backing-off, running, idle, any other state; by user id within", () => {
    const page = pageActors(list, { offset: 0, limit: 50 })
    expect(page.items.map((a) => a.userId)).toEqual(["c", "f", "e", "b", "a", "d", "g"])
    expect(page.total).toBe(7)
    expect(page.counts).toEqual({ idle: 2, running: 1, quarantined: 2, "backing-off": 1, "parked-somehow": 1 })
  })

  it("pages with offset and limit", () => {
    expect(pageActors(list, { offset: 2, limit: 3 }).items.map((a) => a.userId)).toEqual(["e", "b", "a"])
    const last = pageActors(list, { offset: 6, limit: 3 })
    expect(last.items.map((a) => a.userId)).toEqual(["g"])
    expect(pageActors(list, { offset: 50, limit: 3 }).items).toEqual([])
  })

  it("filters by state and by user id, counting every actor regardless", () => {
    const quarantined = pageActors(list, { offset: 0, limit: 50, state: "quarantined" })
    expect(quarantined.items.map((a) => a.userId)).toEqual(["c", "f"])
    expect(quarantined.total).toBe(2)
    expect(quarantined.counts.idle).toBe(2)
    const users = pageActors([actor("alice", "idle"), actor("malice", "running"), actor("bob", "idle")], { offset: 0, limit: 50, user: "lic" })
    expect(users.items.map((a) => a.userId)).toEqual(["malice", "alice"])
  })

  it("pages across state boundaries, and sums runs in flight and finds the detail user in the same pass", () => {
    const xs = [actor("a", "idle"), actor("b", "running", { inFlight: 2 }), actor("c", "quarantined"), actor("d", "running", { inFlight: 1 })]
    const page = pageActors(xs, { offset: 1, limit: 2, detail: "d" })
    expect(page.items.map((a) => a.userId)).toEqual(["b", "d"])
    expect(page.inFlight).toBe(3)
    expect(page.detail?.userId).toBe("d")
    expect(pageActors(xs, { offset: 0, limit: 1, detail: "zz" }).detail).toBeNull()
  })

  it("with ActorOrder: a list in any order comes out quarantined first, by user id within", () => {
    const shuffled = [actor("z", "idle"), actor("m", "idle"), actor("q", "quarantined"), actor("b", "idle")]
    const page = pageActors(makeActorOrder().byUserId(shuffled), { offset: 0, limit: 50 })
    expect(page.items.map((a) => a.userId)).toEqual(["q", "b", "m", "z"])
  })
})

/** A census as the supervisor gives one, over a list; it counts the statuses read one by one. */
const censusOf = (list: ReadonlyArray<ActorView>) => {
  const byId = new Map(list.map((a) => [a.userId, a]))
  const reads = { count: 0 }
  const census: ActorCensusView = {
    total: list.length,
    userIds: list.map((a) => a.userId).sort(),
    notIdle: list.filter((a) => a.state !== "idle"),
    status: (userId) => {
      reads.count++
      return byId.get(userId) ?? null
    },
  }
  return { census, reads }
}

describe("pageCensus", () => {
  const xs = [
    actor("k", "idle"),
    actor("b", "running", { inFlight: 2 }),
    actor("c", "quarantined"),
    actor("a", "idle"),
    actor("e", "backing-off"),
    actor("f", "quarantined"),
    actor("d", "idle"),
    actor("j", "running", { inFlight: 1 }),
    actor("h", "idle"),
  ]

  it("the same order as pageActors: quarantined, backing-off, running, idle; by user id within", () => {
    const page = pageCensus(censusOf(xs).census, { offset: 0, limit: 50, detail: "j" })
    expect(page.items.map((a) => a.userId)).toEqual(["c", "f", "e", "b", "j", "a", "d", "h", "k"])
    expect(page.counts).toEqual({ quarantined: 2, "backing-off": 1, running: 2, idle: 4 })
    expect(page.total).toBe(9)
    expect(page.inFlight).toBe(3)
    expect(page.detail?.userId).toBe("j")
  })

  it("agrees with pageActors on every offset, limit, state and user filter", () => {
    const sorted = makeActorOrder().byUserId(xs)
    const { census } = censusOf(xs)
    for (const state of [undefined, "idle", "running", "quarantined", "backing-off"])
      for (const user of [undefined, "", "a", "h", "zz"])
        for (let offset = 0; offset <= 10; offset++)
          for (const limit of [1, 2, 3, 50]) {
            const query = { offset, limit, state, user, detail: "d" }
            expect(pageCensus(census, query), JSON.stringify(query)).toEqual(pageActors(sorted, query))
          }
  })

  it("with 10,000 actors: a page reads only its own idle actors, wherever it is", () => {
    const { census, reads } = censusOf(manyActors)
    const deep = pageCensus(census, { offset: 5_000, limit: 12 })
    expect(reads.count).toBe(12)
    expect(deep).toEqual(pageActors(manyActors, { offset: 5_000, limit: 12 }))
    // Past the 110 busy: idle rank 4,890. Below user-04900 are 54 busy (49 running, 5 quarantined),
    // so 4,846 idle; then 04900-04902 and, past the running 04903, 04904 + 41 = 04945.
    expect(deep.items[0]?.userId).toBe("user-04945")
    reads.count = 0
    const first = pageCensus(census, { offset: 0, limit: 50 })
    expect(reads.count).toBe(0) // 10 quarantined and 100 running fill it
    expect(first.items).toHaveLength(50)
  })
})

describe("makeActorOrder", () => {
  const ids = (xs: ReadonlyArray<ActorView>) => xs.map((a) => a.userId)

  it("puts actors in user-id order, and keeps doing so as the same users come in any order or change state", () => {
    const order = makeActorOrder()
    expect(ids(order.byUserId([actor("c", "idle"), actor("a", "idle"), actor("b", "idle")]))).toEqual(["a", "b", "c"])
    const again = order.byUserId([actor("b", "running"), actor("c", "idle"), actor("a", "quarantined")])
    expect(ids(again)).toEqual(["a", "b", "c"])
    expect(again.map((a) => a.state)).toEqual(["quarantined", "running", "idle"])
  })

  it("sorts afresh when a user came, went, or was replaced by another", () => {
    const order = makeActorOrder()
    order.byUserId([actor("b", "idle"), actor("a", "idle")])
    expect(ids(order.byUserId([actor("b", "idle"), actor("c", "idle"), actor("a", "idle")]))).toEqual(["a", "b", "c"])
    expect(ids(order.byUserId([actor("c", "idle"), actor("a", "idle")]))).toEqual(["a", "c"])
    expect(ids(order.byUserId([actor("d", "idle"), actor("a", "idle")]))).toEqual(["a", "d"])
    expect(ids(order.byUserId([actor("a", "idle"), actor("a", "idle")]))).toEqual(["a", "a"])
    expect(ids(order.byUserId([]))).toEqual([])
  })
})

describe("recent failures", () => {
  const entry = (n: number, userId: string | null = "u") => ({
    at: `2030-01-01T00:00:0${n}.000Z`,
    level: "WARN",
    userId,
    missionId: null,
    message: `failure ${n}`,
    reason: null,
  })

  it("keeps the last `capacity` entries, newest first, and counts every one", () => {
    const ring = makeRecentFailures(3)
    for (let n = 1; n <= 5; n++) ring.record(entry(n, n % 2 === 0 ? "even" : "odd"))
    expect(ring.recent(10).map((e) => e.message)).toEqual(["failure 5", "failure 4", "failure 3"])
    expect(ring.recent(2).map((e) => e.message)).toEqual(["failure 5", "failure 4"])
    expect(ring.recent(10, "odd").map((e) => e.message)).toEqual(["failure 5", "failure 3"])
    expect(ring.total()).toBe(5)
  })

  it.effect("is fed by the log: warnings and errors with their user, mission and reason; failed iterations; not other info lines", () =>
    Effect.gen(function* () {
      const ring = makeRecentFailures()
      const logged = Effect.gen(function* () {
        yield* Effect.logInfo("Sent HTTP response")
        yield* Effect.logInfo("mission run wrote an iteration").pipe(Effect.annotateLogs({ missionId: "ok", overallStatus: "awaiting-review" }))
        yield* Effect.logWarning("mission run failed; it stays due and backs off").pipe(
          Effect.annotateLogs({ userId: "alice", missionId: "m1", error: "LlmTimeout" }),
        )
        yield* Effect.logInfo("mission run wrote an iteration").pipe(
          Effect.annotateLogs({ userId: "bob", missionId: "m2", overallStatus: "failed" }),
        )
        yield* Effect.logError("user quarantined: actor failed too often").pipe(
          Effect.annotateLogs({ userId: "carol", reason: "ActorCrashed: boom" }),
        )
        yield* Effect.logError("discovery pass failed", new Error("connection refused"))
        yield* Effect.logError("GET /internal/missions failed", Cause.fail(new SyntaxError("bad row")))
      })
      yield* logged.pipe(Effect.provide(Logger.replace(Logger.defaultLogger, failureLogger(ring))))
      expect(ring.recent(10)).toEqual([
        { at: expect.any(String), level: "ERROR", userId: null, missionId: null, message: "GET /internal/missions failed", reason: "SyntaxError: bad row" },
        { at: expect.any(String), level: "ERROR", userId: null, missionId: null, message: "discovery pass failed", reason: "Error: connection refused" },
        { at: expect.any(String), level: "ERROR", userId: "carol", missionId: null, message: "user quarantined: actor failed too often", reason: "ActorCrashed: boom" },
        { at: expect.any(String), level: "INFO", userId: "bob", missionId: "m2", message: "mission run wrote an iteration", reason: null },
        { at: expect.any(String), level: "WARN", userId: "alice", missionId: "m1", message: "mission run failed; it stays due and backs off", reason: "LlmTimeout" },
      ])
    }))
})

// ---------------------------------------------------------------- over HTTP

/** 10,000 actors, every 1,000th quarantined, as the supervisor lists them (by user id). */
const manyActors: ReadonlyArray<ActorView> = Array.from({ length: 10_000 }, (_, i) => {
  const userId = `user-${String(i).padStart(5, "0")}`
  return actor(userId, i % 1000 === 7 ? "quarantined" : i % 100 === 3 ? "running" : "idle", { inFlight: i % 100 === 3 ? 1 : 0 })
})

const backend = (extra: Partial<ApiBackend> = {}): ApiBackend => ({
  tick: Effect.die("not used"),
  actors: Effect.succeed(manyActors),
  restart: () => Effect.succeed(true),
  missions: () => Effect.succeed([]),
  tickRunning: Effect.succeed(false),
  ...extra,
})

const TestServer = ApiLive.pipe(
  Layer.provideMerge(ServerState.layer({ serviceKey: Redacted.make(KEY), tickEnabled: true, version: "9.9.9" })),
  Layer.provideMerge(NodeHttpServer.layerTest),
)

const get = (path: string, key?: string) =>
  Effect.gen(function* () {
    const client = yield* HttpClient.HttpClient
    const request = HttpClientRequest.get(path)
    return yield* client.execute(key === undefined ? request : HttpClientRequest.setHeader(request, "X-Service-Key", key))
  })

const bodyOf = (response: HttpClientResponse.HttpClientResponse) => response.json as Effect.Effect<any, unknown>

it.layer(TestServer, { timeout: 30_000 })("operator page over HTTP", (it) => {
  it.effect("GET / serves the page from the package: HTML with a strict CSP, no data, no key; the assets too", () =>
    Effect.gen(function* () {
      const page = yield* get("/")
      expect(page.status).toBe(200)
      expect(page.headers["content-type"]).toBe("text/html; charset=utf-8")
      expect(page.headers["content-security-policy"]).toContain("script-src 'self'")
      expect(page.headers["cache-control"]).toBe("no-store")
      const html = yield* page.text
      expect(html).toContain('<script type="module" src="/page/app.js"></script>')
      expect(html).not.toContain(KEY)
      const js = yield* get("/page/app.js")
      expect(js.headers["content-type"]).toBe("text/javascript; charset=utf-8")
      expect(yield* js.text).toContain('"X-Service-Key"')
      expect((yield* get("/page/app.css")).headers["content-type"]).toBe("text/css; charset=utf-8")
    }))

  it.effect("GET /internal/overview: 401 without the key or with a wrong one, 503 before start-up finished", () =>
    Effect.gen(function* () {
      for (const key of [undefined, "", "wrong-key-wrong-key-wrong", `${KEY}x`]) {
        const response = yield* get("/internal/overview", key)
        expect(response.status).toBe(401)
        expect(yield* bodyOf(response)).toEqual({ error: "unauthorized", reason: "missing or wrong X-Service-Key header" })
      }
      expect((yield* get("/internal/overview", KEY)).status).toBe(503)
    }))

  it.effect("with 10,000 actors: one page, quarantined first, counts of all, n/a fields as null", () =>
    Effect.gen(function* () {
      const state = yield* ServerState
      yield* state.provideBackend(backend())
      yield* state.setPhase("ready")
      state.failures.record({ at: "2030-01-01T00:00:00.000Z", level: "ERROR", userId: "user-00007", missionId: null, message: "user quarantined", reason: "boom" })
      state.failures.record({ at: "2030-01-01T00:00:01.000Z", level: "WARN", userId: "user-00008", missionId: "m", message: "mission run failed", reason: "LlmTimeout" })

      const body = yield* bodyOf(yield* get("/internal/overview?offset=0&limit=12&detail=user-00007", KEY))
      expect(body.process).toEqual({
        service: "mana-ai",
        version: "9.9.9",
        phase: "ready",
        tick: { enabled: true, running: false },
        breaker: null,
        runsInFlight: 100,
        llmRequestsInFlight: null,
        tokensInWindow: null,
        actors: { total: 10_000, quarantined: 10, running: 100, idle: 9_890 },
      })
      expect(body.actors.total).toBe(10_000)
      expect(body.actors.items.map((a: ActorView) => a.userId)).toEqual([
        "user-00007", "user-01007", "user-02007", "user-03007", "user-04007", "user-05007", "user-06007", "user-07007",
        "user-08007", "user-09007", "user-00003", "user-00103",
      ])
      expect(body.failures.total).toBe(2)
      expect(body.failures.items.map((f: { userId: string }) => f.userId)).toEqual(["user-00008", "user-00007"])
      expect(body.detail.actor.userId).toBe("user-00007")
      expect(body.detail.failures).toEqual([
        { at: "2030-01-01T00:00:00.000Z", level: "ERROR", userId: "user-00007", missionId: null, message: "user quarantined", reason: "boom" },
      ])

      const second = yield* bodyOf(yield* get("/internal/overview?offset=9990&limit=50&state=idle", KEY))
      expect(second.actors.total).toBe(9_890)
      expect(second.actors.items).toHaveLength(0)
      const users = yield* bodyOf(yield* get("/internal/overview?limit=3&user=0999", KEY))
      expect(users.actors.items.map((a: ActorView) => a.userId)).toEqual(["user-00999", "user-09990", "user-09991"])
      expect((yield* bodyOf(yield* get("/internal/overview?detail=nobody", KEY))).detail).toEqual({ userId: "nobody", actor: null, failures: [] })
    }))

  it.effect("with a census instead of a list: the same page and counts of 10,000 actors", () =>
    Effect.gen(function* () {
      const state = yield* ServerState
      yield* state.provideBackend(backend({ actors: Effect.die("not read"), actorCensus: Effect.succeed(censusOf(manyActors).census) }))
      yield* state.setPhase("ready")
      const body = yield* bodyOf(yield* get("/internal/overview?offset=0&limit=12&detail=user-00007", KEY))
      expect(body.process.actors).toEqual({ total: 10_000, quarantined: 10, running: 100, idle: 9_890 })
      expect(body.process.runsInFlight).toBe(100)
      expect(body.actors.items.map((a: ActorView) => a.userId)).toEqual([
        "user-00007", "user-01007", "user-02007", "user-03007", "user-04007", "user-05007", "user-06007", "user-07007",
        "user-08007", "user-09007", "user-00003", "user-00103",
      ])
      expect(body.detail.actor.userId).toBe("user-00007")
      const idle = yield* bodyOf(yield* get("/internal/overview?offset=9888&limit=50&state=idle", KEY))
      expect(idle.actors.total).toBe(9_890)
      expect(idle.actors.items.map((a: ActorView) => a.userId)).toEqual(["user-09998", "user-09999"])
      const users = yield* bodyOf(yield* get("/internal/overview?limit=3&user=0999", KEY))
      expect(users.actors.items.map((a: ActorView) => a.userId)).toEqual(["user-00999", "user-09990", "user-09991"])
    }))

  it.effect("a bad query is a 400 with the reason; the page size is capped at 200", () =>
    Effect.gen(function* () {
      for (const query of ["limit=201", "limit=0", "offset=-1", "limit=ten", "offset=1.5"]) {
        const response = yield* get(`/internal/overview?${query}`, KEY)
        expect(response.status, query).toBe(400)
        expect(yield* bodyOf(response)).toMatchObject({ error: "bad-request" })
      }
    }))
})

/** A server whose backend has what the process does not track yet (issue 18: they slot in). */
const FilledServer = ApiLive.pipe(
  Layer.provideMerge(
    Layer.effectDiscard(
      Effect.gen(function* () {
        const state = yield* ServerState
        yield* state.provideBackend(
          backend({
            // In no order, as the supervisor's statusUnordered gives them.
            actorsUnordered: Effect.succeed([...manyActors].reverse()),
            llmRequestsInFlight: Effect.succeed(3),
            breaker: Effect.succeed({ state: "open", consecutiveFailures: 10 }),
            tokensInWindow: Effect.succeed({ spent: 1234, budget: 100_000, windowHours: 24 }),
          }),
        )
        yield* state.setPhase("ready")
      }),
    ),
  ),
  Layer.provideMerge(ServerState.layer({ serviceKey: Redacted.make(KEY), tickEnabled: false, version: "1" })),
  Layer.provideMerge(NodeHttpServer.layerTest),
)

it.layer(FilledServer, { timeout: 30_000 })("operator page over HTTP, with breaker and tokens", (it) => {
  it.effect("actors in any order come out ordered; breaker, tokens and LLM requests in flight slot in when the backend has them", () =>
    Effect.gen(function* () {
      const body = yield* bodyOf(yield* get("/internal/overview?limit=3", KEY))
      expect(body.actors.items.map((a: ActorView) => a.userId)).toEqual(["user-00007", "user-01007", "user-02007"])
      const later = yield* bodyOf(yield* get("/internal/overview?limit=2&state=idle", KEY))
      expect(later.actors.items.map((a: ActorView) => a.userId)).toEqual(["user-00000", "user-00001"])
      expect(body.process).toMatchObject({
        llmRequestsInFlight: 3,
        breaker: { state: "open", consecutiveFailures: 10 },
        tokensInWindow: { spent: 1234, budget: 100_000, windowHours: 24 },
      })
    }))
})
