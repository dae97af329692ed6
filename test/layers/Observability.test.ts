import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { describe, expect, it } from "@effect/vitest"
import { Console, Effect, Option } from "effect"
import { ObservabilityLive, otlpTracesUrl } from "../../src/layers/Observability.js"

/** Runs `self` under the process's logging layer and returns what it printed. */
const captureLogs = (format: "json" | "logfmt" | "pretty", self: Effect.Effect<void>) =>
  Effect.gen(function* () {
    const printed: Array<string> = []
    const sink = (...args: ReadonlyArray<unknown>) => printed.push(args.map(String).join(" "))
    const base = yield* Console.consoleWith(Effect.succeed)
    const console: Console.Console = {
      ...base,
      unsafe: { ...base.unsafe, log: sink, error: sink, info: sink, warn: sink, debug: sink, trace: sink },
    }
    yield* self.pipe(
      Effect.provide(ObservabilityLive({ logFormat: format, logLevel: "info", otlpEndpoint: Option.none() }, "1.0.0")),
      Effect.withConsole(console),
    )
    return printed
  })

const aRun = Effect.logInfo("run finished").pipe(Effect.annotateLogs({ userId: "alice", missionId: "m-1" }))

describe("logs", () => {
  it.effect("json lines carry the run's userId and missionId", () =>
    Effect.gen(function* () {
      const [line] = yield* captureLogs("json", aRun)
      const parsed = JSON.parse(line as string)
      expect(parsed.message).toBe("run finished")
      expect(parsed.annotations).toEqual({ userId: "alice", missionId: "m-1" })
    }))

  it.effect("logfmt lines carry the annotations too", () =>
    Effect.gen(function* () {
      const [line] = yield* captureLogs("logfmt", aRun)
      expect(line).toContain("userId=alice")
      expect(line).toContain("missionId=m-1")
    }))

  it.effect("LOG_LEVEL filters: debug lines are dropped at info", () =>
    Effect.gen(function* () {
      const printed = yield* captureLogs("json", Effect.logDebug("noise").pipe(Effect.zipRight(Effect.logWarning("kept"))))
      expect(printed.map((l) => JSON.parse(l).message)).toEqual(["kept"])
    }))
})

describe("traces", () => {
  it("the traces URL follows the OTLP exporter convention", () => {
    expect(otlpTracesUrl("http://collector:4318")).toBe("http://collector:4318/v1/traces")
    expect(otlpTracesUrl("http://collector:4318/")).toBe("http://collector:4318/v1/traces")
  })

  it.live("spans reach an OTLP/HTTP endpoint with the service's name", () =>
    Effect.gen(function* () {
      const received: Array<{ url: string; body: string }> = []
      const server = createServer((req, res) => {
        let body = ""
        req.on("data", (chunk) => {
          body += chunk
        })
        req.on("end", () => {
          received.push({ url: req.url ?? "", body })
          res.writeHead(200, { "content-type": "application/json" }).end("{}")
        })
      })
      yield* Effect.acquireRelease(
        Effect.async<void>((resume) => {
          server.listen(0, "127.0.0.1", () => resume(Effect.void))
        }),
        () => Effect.async<void>((resume) => void server.close(() => resume(Effect.void))),
      )
      const endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
      // The tracer flushes what it holds when its layer's scope closes.
      yield* Effect.scoped(
        Effect.void.pipe(
          Effect.withSpan("MissionRunner.run", { attributes: { userId: "alice" } }),
          Effect.provide(ObservabilityLive({ logFormat: "json", logLevel: "none", otlpEndpoint: Option.some(endpoint) }, "1.2.3")),
        ),
      )
      const traces = received.filter((r) => r.url === "/v1/traces")
      expect(traces.length).toBeGreaterThan(0)
      const all = traces.map((t) => t.body).join("\n")
      expect(all).toContain("MissionRunner.run")
      expect(all).toContain("mana-ai")
    }).pipe(Effect.scoped))
})
