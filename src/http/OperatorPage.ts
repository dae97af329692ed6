/**
 * The operator page (issue 18): `GET /` serves a plain HTML/CSS/JS page from the package (no CDN, no
 * build step), and `GET /internal/overview` is the one JSON read it polls every 2 s, behind the same
 * service key as every /internal route. The page itself is public and holds no data and no key: it
 * asks for the key, keeps it in the tab's sessionStorage and sends it only as `X-Service-Key`.
 */
import { readFileSync } from "node:fs"
import * as HttpMiddleware from "@effect/platform/HttpMiddleware"
import * as HttpRouter from "@effect/platform/HttpRouter"
import * as HttpServerRequest from "@effect/platform/HttpServerRequest"
import * as HttpServerResponse from "@effect/platform/HttpServerResponse"
import * as Clock from "effect/Clock"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Ref from "effect/Ref"
import * as Schema from "effect/Schema"
import { appFile } from "../appRoot.js"
import { pageActors, pageCensus } from "./actorPage.js"
import { captureFailures } from "./RecentFailures.js"
import type { ApiBackend } from "./ServerState.js"
import { ServerState } from "./ServerState.js"

const asset = (name: string): string => readFileSync(appFile("src", "http", "page", name), "utf8")

/** Read once when the module loads: the files ship in the package, in `src/http/page/` (found from the app's root, `appRoot.ts`, so from the bundle too). */
const ASSETS = {
  html: asset("index.html"),
  js: asset("app.js"),
  css: asset("app.css"),
} as const

/**
 * Only this origin's own files; no inline script or style, so an actor's error text or a mission
 * title can never run as code even if it reached the DOM unescaped (the page writes text nodes only).
 */
const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
} as const

const serve = (body: string, contentType: string) =>
  Effect.succeed(HttpServerResponse.text(body, { contentType, headers: SECURITY_HEADERS })).pipe(
    HttpMiddleware.withLoggerDisabled,
  )

/** Public: the page and its two assets. */
export const pageRouter = HttpRouter.empty.pipe(
  HttpRouter.get("/", serve(ASSETS.html, "text/html; charset=utf-8")),
  HttpRouter.get("/page/app.js", serve(ASSETS.js, "text/javascript; charset=utf-8")),
  HttpRouter.get("/page/app.css", serve(ASSETS.css, "text/css; charset=utf-8")),
)

const MAX_PAGE_SIZE = 200
const DEFAULT_PAGE_SIZE = 50
const FAILURES_SHOWN = 30

const IntFromString = (min: number, max: number) =>
  Schema.NumberFromString.pipe(Schema.int(), Schema.between(min, max))

const OverviewQuery = Schema.Struct({
  offset: Schema.optional(IntFromString(0, Number.MAX_SAFE_INTEGER)),
  limit: Schema.optional(IntFromString(1, MAX_PAGE_SIZE)),
  state: Schema.optional(Schema.String.pipe(Schema.maxLength(64))),
  user: Schema.optional(Schema.String.pipe(Schema.maxLength(256))),
  /** The user whose detail the page shows: its actor and its own recent failures. */
  detail: Schema.optional(Schema.String.pipe(Schema.minLength(1), Schema.maxLength(256))),
})

const optionalRead = <A>(read: Effect.Effect<A> | undefined): Effect.Effect<A | null> =>
  read === undefined ? Effect.succeed(null) : read

/**
 * GET /internal/overview: the process, one page of actors, recent failures, and the detail user's
 * actor. `breaker`, `tokensInWindow` (and `llmRequestsInFlight` where the backend lacks it) are
 * null until the process tracks them; the page shows null as "n/a".
 */
export const overview = (backend: ApiBackend) =>
  Effect.gen(function* () {
    const state = yield* ServerState
    const query = yield* HttpServerRequest.schemaSearchParams(OverviewQuery)
    const pageQuery = {
      offset: query.offset ?? 0,
      limit: query.limit ?? DEFAULT_PAGE_SIZE,
      state: query.state === "" ? undefined : query.state,
      user: query.user,
      detail: query.detail,
    }
    // With a census the poll reads the page's actors and the few busy ones, not all 10,000 (issue 18 item 4).
    const { page, actorCount } =
      backend.actorCensus === undefined
        ? yield* Effect.map(backend.actorsUnordered ?? backend.actors, (list) => {
            const all = state.actorOrder.byUserId(list)
            return { page: pageActors(all, pageQuery), actorCount: all.length }
          })
        : yield* Effect.map(backend.actorCensus, (census) => ({
            page: pageCensus(census, pageQuery),
            actorCount: census.total,
          }))
    const tickRunning = (yield* Ref.get(state.ticksRunning)) > 0 || (yield* backend.tickRunning)
    const detail =
      query.detail === undefined
        ? null
        : { userId: query.detail, actor: page.detail, failures: state.failures.recent(FAILURES_SHOWN, query.detail) }
    return HttpServerResponse.unsafeJson({
      at: new Date(yield* Clock.currentTimeMillis).toISOString(),
      process: {
        service: "mana-ai",
        version: state.settings.version,
        phase: yield* state.phase,
        tick: { enabled: state.settings.tickEnabled, running: tickRunning },
        breaker: yield* optionalRead(backend.breaker),
        runsInFlight: page.inFlight,
        llmRequestsInFlight: yield* optionalRead(backend.llmRequestsInFlight),
        tokensInWindow: yield* optionalRead(backend.tokensInWindow),
        actors: { total: actorCount, ...page.counts },
      },
      actors: { total: page.total, offset: page.offset, limit: page.limit, items: page.items },
      failures: { total: state.failures.total(), items: state.failures.recent(FAILURES_SHOWN) },
      detail,
    })
  })

/** Feeds ServerState's recent failures from the log: everything built after this layer logs into it too. */
export const FailureCaptureLive = Layer.unwrapEffect(Effect.map(ServerState, (state) => captureFailures(state.failures)))
