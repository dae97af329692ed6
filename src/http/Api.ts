/**
 * The HTTP API (SPEC §9): health, readiness, metrics, and the service-key-gated /internal routes.
 */
import { createHash, timingSafeEqual } from "node:crypto"
import * as Headers from "@effect/platform/Headers"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServer from "@effect/platform/HttpServer"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { AUDIT_LIMIT_DEFAULT, AUDIT_LIMIT_MAX } from "../services/decryptAudit.js"
import { overview, pageRouter } from "./OperatorPage.js"
import { PROMETHEUS_CONTENT_TYPE, prometheusSnapshot } from "./prometheusText.js"
import { type ActorView, type ApiBackend, type BackendError, ServerState } from "./ServerState.js"

const SERVICE_NAME = "mana-ai"

const json = (status: number, body: unknown) => HttpServerResponse.unsafeJson(body, { status })

/** Every error answer has this shape. */
const problem = (status: number, error: string, reason: string) => json(status, { error, reason })

/**
 * Constant time in the key's content and length: both sides are hashed to equal-length digests
 * before timingSafeEqual, so neither a prefix match nor the length leaks through timing.
 */
export const serviceKeyMatches = (expected: Redacted.Redacted<string>, given: string | undefined): boolean => {
  const a = createHash("sha256").update(Redacted.value(expected)).digest()
  const b = createHash("sha256").update(given ?? "").digest()
  return timingSafeEqual(a, b) && given !== undefined
}

const requireServiceKey = HttpMiddleware.make((app) =>
  Effect.gen(function* () {
    const { settings } = yield* ServerState
    const request = yield* HttpServerRequest.HttpServerRequest
    return serviceKeyMatches(settings.serviceKey, request.headers["x-service-key"])
      ? yield* app
      : problem(401, "unauthorized", "missing or wrong X-Service-Key header")
  }),
)

const notReady = problem(503, "not-ready", "the runner is still starting: the database is not ready yet")

/** Runs `f` with the backend, or answers 503 while the process is starting. */
const withBackend = <E, R>(f: (backend: ApiBackend) => Effect.Effect<HttpServerResponse.HttpServerResponse, E, R>) =>
  Effect.flatMap(ServerState, (state) =>
    Effect.flatMap(state.backend, Option.match({ onNone: () => Effect.succeed(notReady), onSome: f })),
  )

const backendFailed = (error: BackendError) => Effect.succeed(problem(500, "backend-error", error.reason))

const UserIdParams = Schema.Struct({
  userId: Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256)),
})

const userIdParam = HttpRouter.schemaPathParams(UserIdParams)

// ---------------------------------------------------------------- public

const health = Effect.gen(function* () {
  const state = yield* ServerState
  const phase = yield* state.phase
  const backend = yield* state.backend
  const running =
    (yield* Ref.get(state.ticksRunning)) > 0 || (Option.isSome(backend) && (yield* backend.value.tickRunning))
  const actors = Option.isSome(backend) ? yield* Effect.either(backend.value.actors) : undefined
  const summary: Record<string, number> = { total: 0 }
  if (actors !== undefined && actors._tag === "Right") {
    summary.total = actors.right.length
    for (const actor of actors.right) summary[actor.state] = (summary[actor.state] ?? 0) + 1
  }
  const breaker = Option.isSome(backend) && backend.value.llmBreaker !== undefined ? yield* backend.value.llmBreaker : undefined
  const cluster = Option.isSome(backend) && backend.value.cluster !== undefined ? yield* backend.value.cluster : undefined
  return json(200, {
    ok: actors === undefined || actors._tag === "Right",
    service: SERVICE_NAME,
    version: state.settings.version,
    phase,
    tick: { enabled: state.settings.tickEnabled, running },
    actors: summary,
    ...(breaker === undefined ? {} : { llmBreaker: breaker }),
    ...(cluster === undefined ? {} : { cluster }),
  })
}).pipe(HttpMiddleware.withLoggerDisabled)

const ready = Effect.gen(function* () {
  const phase = yield* (yield* ServerState).phase
  return phase === "ready" ? json(200, { ready: true, phase }) : json(503, { ready: false, phase })
}).pipe(HttpMiddleware.withLoggerDisabled)

const metrics = Effect.map(prometheusSnapshot, (text) =>
  HttpServerResponse.text(text, { contentType: PROMETHEUS_CONTENT_TYPE }),
).pipe(HttpMiddleware.withLoggerDisabled)

// ---------------------------------------------------------------- internal

const tick = Effect.gen(function* () {
  const state = yield* ServerState
  if ((yield* state.phase) === "draining") {
    return problem(503, "draining", "the runner is shutting down: no new runs")
  }
  return yield* withBackend((backend) =>
    Effect.acquireUseRelease(
      Ref.update(state.ticksRunning, (n) => n + 1),
      () => backend.tick,
      () => Ref.update(state.ticksRunning, (n) => n - 1),
    ).pipe(
      Effect.map((report) => json(200, report)),
      Effect.catchTag("BackendError", backendFailed),
    ),
  )
})

/** Joins each user's token spend in the budget window (SPEC §14) onto the actors' rows. */
const withSpend = (backend: ApiBackend, list: ReadonlyArray<ActorView>) => {
  const spent = backend.spentInWindow
  if (spent === undefined) return Effect.succeed(list)
  return Effect.forEach(list, (row) => Effect.map(spent(row.userId), (tokens) => ({ ...row, tokensInWindow: tokens })), {
    concurrency: 4,
  })
}

const actors = withBackend((backend) =>
  backend.actors.pipe(
    Effect.flatMap((list) => withSpend(backend, list)),
    Effect.map((list) => json(200, { actors: list })),
    Effect.catchTag("BackendError", backendFailed),
  ),
)

const restart = Effect.gen(function* () {
  const { userId } = yield* userIdParam
  return yield* withBackend((backend) =>
    backend.restart(userId).pipe(
      Effect.map((found) =>
        found
          ? json(200, { userId, restarted: true })
          : problem(404, "unknown-user", "the runner has no actor and no quarantine for that user"),
      ),
      Effect.catchTag("BackendError", backendFailed),
    ),
  )
})

const missions = Effect.gen(function* () {
  const { userId } = yield* userIdParam
  return yield* withBackend((backend) =>
    backend.missions(userId).pipe(
      Effect.map((list) =>
        json(200, {
          userId,
          missions: list.map((m) => m.record),
          malformed: list.flatMap((m) => (m.malformed === null ? [] : [{ missionId: m.missionId, reason: m.malformed }])),
        }),
      ),
      Effect.catchTag("BackendError", backendFailed),
    ),
  )
})

const AuditQueryParams = Schema.Struct({
  missionId: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256))),
  limit: Schema.optional(
    Schema.NumberFromString.pipe(Schema.int(), Schema.between(1, AUDIT_LIMIT_MAX), Schema.annotations({ message: () => `limit must be a whole number from 1 to ${AUDIT_LIMIT_MAX}` })),
  ),
})

/** GET /internal/audit/:userId?missionId=&limit= (SPEC §15): the user's decrypt audit, newest first. */
const audit = Effect.gen(function* () {
  const { userId } = yield* userIdParam
  const query = yield* HttpServerRequest.schemaSearchParams(AuditQueryParams)
  return yield* withBackend((backend) =>
    backend.audit === undefined
      ? Effect.succeed(problem(404, "not-found", "this runner keeps no decrypt audit"))
      : backend.audit(userId, { missionId: query.missionId, limit: query.limit ?? AUDIT_LIMIT_DEFAULT }).pipe(
          Effect.map((rows) => json(200, { userId, rows })),
          Effect.catchTag("BackendError", backendFailed),
        ),
  )
})
/** The operator page's poll (issue 18): process, one page of actors, recent failures. */
const overviewRoute = withBackend((backend) => overview(backend).pipe(Effect.catchTag("BackendError", backendFailed)))

const internal = HttpRouter.empty.pipe(
  HttpRouter.post("/tick", tick),
  HttpRouter.get("/actors", actors),
  HttpRouter.post("/actors/:userId/restart", restart),
  HttpRouter.get("/missions/:userId", missions),
  HttpRouter.get("/audit/:userId", audit),
  HttpRouter.get("/overview", overviewRoute),
  // Inside the gate, so an unknown /internal path says 401 to a caller without the key, not 404.
  HttpRouter.all("*", Effect.succeed(problem(404, "not-found", "no such internal route"))),
  HttpRouter.use(requireServiceKey),
)

const apiRouter = HttpRouter.empty.pipe(
  HttpRouter.get("/health", health),
  HttpRouter.get("/ready", ready),
  HttpRouter.get("/metrics", metrics),
  HttpRouter.mount("/internal", internal),
  HttpRouter.concat(pageRouter),
)

/** The router with every failure answered as JSON `{error, reason}`. */
const apiApp = apiRouter.pipe(
  Effect.catchTags({
    RouteNotFound: () => Effect.succeed(problem(404, "not-found", "no such route")),
    ParseError: (e) => Effect.succeed(problem(400, "bad-request", e.message)),
  }),
)

/** Serves the API on whatever HttpServer is provided (Bun in the process, Node in tests). */
/** Probes and scrapes every few seconds: neither logged nor traced. */
const quietUrls = new Set(["/health", "/ready", "/metrics"])

/** The operator page's answered poll every 2 s would drown the log; a refused one (401) is still logged. */
const isPagePoll = (url: string, exit: Exit.Exit<HttpServerResponse.HttpServerResponse, unknown>) =>
  url.startsWith("/internal/overview") && Exit.isSuccess(exit) && exit.value.status === 200

/**
 * Access log with the path only: a query string is never logged (only /internal/audit takes one,
 * and a client that puts the service key there must not get it written to the log).
 */
const accessLog = HttpMiddleware.make((httpApp) =>
  Effect.flatMap(HttpServerRequest.HttpServerRequest, (request) =>
    Effect.onExit(httpApp, (exit) =>
      quietUrls.has(request.url) || isPagePoll(request.url, exit) ? Effect.void : Effect.logInfo("Sent HTTP response").pipe(
        Effect.annotateLogs({
          "http.method": request.method,
          "http.path": request.url.split("?")[0] ?? "",
          "http.status": Exit.isSuccess(exit) ? exit.value.status : 500,
        }),
      ),
    ),
  ),
)

export const ApiLive: Layer.Layer<never, never, HttpServer.HttpServer | ServerState> = HttpServer.serve(
  apiApp,
  accessLog,
).pipe(
  HttpServer.withLogAddress,
  // Probes and scrapes every few seconds would drown the traces that matter; a span of a URL with a
  // query string would record the query (url.full), which may carry a misplaced key.
  HttpMiddleware.withTracerDisabledWhen((request) => quietUrls.has(request.url) || request.url.includes("?")),
  // The server span records request headers; without this the service key would be exported in clear.
  Layer.locallyWith(Headers.currentRedactedNames, (names) => [...names, "x-service-key"]),
)
