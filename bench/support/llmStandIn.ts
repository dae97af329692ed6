/**
 * Starts bench/support/llmStandInServer.ts as a child process for the scope's lifetime and talks
 * to its control endpoints. Only this child is ever stopped, by its own pid.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Effect, type Scope } from "effect"

export interface StandInStats {
  readonly requests: number
  readonly inFlight: number
  readonly maxInFlight: number
  readonly latencyMs: number
}

export interface BenchLlmStandIn {
  readonly url: string
  readonly pid: number | undefined
  /** Sets the fixed latency and resets the counters. */
  readonly configure: (latencyMs: number) => Effect.Effect<void>
  readonly stats: Effect.Effect<StandInStats>
}

const script = fileURLToPath(new URL("./llmStandInServer.ts", import.meta.url))

export const startLlmStandIn = (latencyMs: number): Effect.Effect<BenchLlmStandIn, never, Scope.Scope> =>
  Effect.gen(function* () {
    const child = yield* Effect.acquireRelease(
      Effect.sync(() => spawn(process.execPath, [script, String(latencyMs)], { stdio: ["ignore", "pipe", "inherit"] })),
      (c) =>
        Effect.async<void>((resume) => {
          if (c.exitCode !== null || c.signalCode !== null) return resume(Effect.void)
          c.once("exit", () => resume(Effect.void))
          c.kill("SIGTERM")
        }),
    )
    const port = yield* Effect.async<number>((resume) => {
      let text = ""
      child.stdout!.on("data", (b: Buffer) => {
        text += b.toString("utf8")
        const m = /LISTENING (\d+)/.exec(text)
        if (m) resume(Effect.succeed(Number(m[1])))
      })
      child.once("exit", (code) => resume(Effect.dieMessage(`LLM stand-in exited early (${code})`)))
    }).pipe(Effect.timeoutFail({ duration: "20 seconds", onTimeout: () => new Error("LLM stand-in did not start") }), Effect.orDie)
    return connectLlmStandIn(`http://127.0.0.1:${port}`, child.pid)
  })

/** The control side of a stand-in already running (e.g. from a measurement's child process). */
export const connectLlmStandIn = (url: string, pid: number | undefined): BenchLlmStandIn => ({
  url,
  pid,
  configure: (ms) =>
    Effect.promise(() =>
      fetch(`${url}/__config`, { method: "POST", body: JSON.stringify({ latencyMs: ms }) }).then((r) => r.arrayBuffer()),
    ).pipe(Effect.asVoid),
  stats: Effect.promise(() => fetch(`${url}/__stats`).then((r) => r.json() as Promise<StandInStats>)),
})
