/**
 * The real service as operators run it: `bun src/main.ts` in a child process with the environment
 * the test chooses, stdout and stderr captured line by line, killed with the signal the test
 * chooses. As a scoped resource: closing the scope SIGKILLs a process still alive.
 *
 *   const svc = yield* spawnService({ env: { SYNC_DATABASE_URL: url, MANA_SERVICE_KEY: key, ... } })
 *   yield* svc.waitReady()                                 // GET /ready answers 200
 *   const tick = yield* svc.post("/internal/tick", { key })
 *   const exit = yield* svc.kill("SIGTERM")                // { code, signal }
 */
import { type ChildProcess, spawn } from "node:child_process"
import net from "node:net"
import path from "node:path"
import { Effect, type Scope } from "effect"

export const REPO_ROOT = path.resolve(import.meta.dirname, "../..")
export const BUN = path.join(REPO_ROOT, "node_modules/.bin/bun")

export interface ServiceExit {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface HttpAnswer {
  readonly status: number
  readonly text: string
  /** The body parsed as JSON, or undefined. */
  readonly json: unknown
  readonly headers: Readonly<Record<string, string>>
}

export interface ServiceProcess {
  readonly pid: number
  readonly port: number
  readonly baseUrl: string
  /** Every line so far, stdout and stderr interleaved in arrival order. */
  readonly lines: () => ReadonlyArray<{ readonly stream: "stdout" | "stderr"; readonly line: string }>
  /** Everything written so far (both streams), as one text. */
  readonly output: () => string
  /** Resolves with the first line matching; fails after timeoutMs with the output so far. */
  readonly waitForLine: (pattern: RegExp, timeoutMs?: number) => Effect.Effect<string>
  /** Polls GET /ready until 200. */
  readonly waitReady: (timeoutMs?: number) => Effect.Effect<void>
  readonly get: (pathname: string, options?: RequestOptions) => Effect.Effect<HttpAnswer>
  readonly post: (pathname: string, options?: RequestOptions) => Effect.Effect<HttpAnswer>
  readonly request: (method: string, pathname: string, options?: RequestOptions) => Effect.Effect<HttpAnswer>
  /** Sends the signal and waits for the exit (SIGKILL after `graceMs` more if it is still alive). */
  readonly kill: (signal: NodeJS.Signals, graceMs?: number) => Effect.Effect<ServiceExit>
  /** Resolves when the process exits by itself. */
  readonly exited: Effect.Effect<ServiceExit>
  readonly isAlive: () => boolean
}

export interface RequestOptions {
  /** Sent as X-Service-Key. */
  readonly key?: string
  readonly headers?: Readonly<Record<string, string>>
  readonly body?: unknown
  readonly timeoutMs?: number
}

export interface SpawnOptions {
  /** Added to a minimal base (PATH, HOME, TZ=UTC, LOG_FORMAT=json, TICK_ENABLED=false, PORT). */
  readonly env?: Readonly<Record<string, string | undefined>>
  /** Default: a free loopback port. */
  readonly port?: number
  /** Default: the repository root. */
  readonly cwd?: string
  /** Default: ["src/main.ts"]. */
  readonly args?: ReadonlyArray<string>
}

/** A port nobody listens on right now (the kernel's choice). */
export const freePort: Effect.Effect<number> = Effect.async<number>((resume) => {
  const s = net.createServer()
  s.listen(0, "127.0.0.1", () => {
    const { port } = s.address() as net.AddressInfo
    s.close(() => resume(Effect.succeed(port)))
  })
})

const sleep = (ms: number) => Effect.promise(() => new Promise((r) => setTimeout(r, ms)))

export const spawnService = (options: SpawnOptions = {}): Effect.Effect<ServiceProcess, never, Scope.Scope> =>
  Effect.gen(function* () {
    const port = options.port ?? (yield* freePort)
    const env: Record<string, string> = {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: process.env.HOME ?? "/tmp",
      TZ: "UTC",
      LOG_FORMAT: "json",
      TICK_ENABLED: "false",
      PORT: String(port),
    }
    for (const [k, v] of Object.entries(options.env ?? {})) {
      if (v === undefined) delete env[k]
      else env[k] = v
    }
    const lines: Array<{ stream: "stdout" | "stderr"; line: string }> = []
    let raw = ""
    let exit: ServiceExit | undefined
    const exitWaiters: Array<(e: ServiceExit) => void> = []
    const lineWaiters = new Set<{ pattern: RegExp; resolve: (l: string) => void }>()

    const child: ChildProcess = yield* Effect.acquireRelease(
      Effect.sync(() =>
        spawn(BUN, [...(options.args ?? ["src/main.ts"])], {
          cwd: options.cwd ?? REPO_ROOT,
          env,
          stdio: ["ignore", "pipe", "pipe"],
        }),
      ),
      (c) =>
        Effect.gen(function* () {
          if (exit !== undefined) return
          c.kill("SIGKILL")
          yield* Effect.async<void>((resume) => {
            if (exit !== undefined) return resume(Effect.void)
            exitWaiters.push(() => resume(Effect.void))
          }).pipe(Effect.timeout("10 seconds"), Effect.ignore)
        }),
    )

    const feed = (stream: "stdout" | "stderr") => {
      let partial = ""
      return (chunk: Buffer) => {
        const text = chunk.toString("utf8")
        raw += text
        partial += text
        const parts = partial.split("\n")
        partial = parts.pop() ?? ""
        for (const line of parts) {
          lines.push({ stream, line })
          for (const w of [...lineWaiters]) {
            if (w.pattern.test(line)) {
              lineWaiters.delete(w)
              w.resolve(line)
            }
          }
        }
      }
    }
    child.stdout?.on("data", feed("stdout"))
    child.stderr?.on("data", feed("stderr"))
    child.on("exit", (code, signal) => {
      exit = { code, signal }
      for (const w of exitWaiters.splice(0)) w(exit)
    })

    const output = () => raw
    const tail = () => raw.slice(-4000)

    const waitForLine = (pattern: RegExp, timeoutMs = 30_000) =>
      Effect.async<string>((resume) => {
        const found = lines.find((l) => pattern.test(l.line))
        if (found !== undefined) return resume(Effect.succeed(found.line))
        const w = { pattern, resolve: (l: string) => resume(Effect.succeed(l)) }
        lineWaiters.add(w)
        return Effect.sync(() => lineWaiters.delete(w))
      }).pipe(
        Effect.timeoutFail({ duration: timeoutMs, onTimeout: () => new Error(`no line matching ${pattern} within ${timeoutMs} ms; output:\n${tail()}`) }),
        Effect.orDie,
      )

    const exited = Effect.async<ServiceExit>((resume) => {
      if (exit !== undefined) return resume(Effect.succeed(exit))
      exitWaiters.push((e) => resume(Effect.succeed(e)))
    })

    const baseUrl = `http://127.0.0.1:${port}`

    const request = (method: string, pathname: string, o: RequestOptions = {}) =>
      Effect.promise(async (): Promise<HttpAnswer> => {
        const headers: Record<string, string> = { ...o.headers }
        if (o.key !== undefined) headers["x-service-key"] = o.key
        if (o.body !== undefined) headers["content-type"] = "application/json"
        const res = await fetch(`${baseUrl}${pathname}`, {
          method,
          headers,
          ...(o.body === undefined ? {} : { body: JSON.stringify(o.body) }),
          signal: AbortSignal.timeout(o.timeoutMs ?? 120_000),
        })
        const text = await res.text()
        let json: unknown
        try {
          json = JSON.parse(text)
        } catch {
          json = undefined
        }
        return { status: res.status, text, json, headers: Object.fromEntries(res.headers.entries()) }
      })

    const waitReady = (timeoutMs = 60_000) =>
      Effect.gen(function* () {
        const deadline = Date.now() + timeoutMs
        while (Date.now() < deadline) {
          if (exit !== undefined) return yield* Effect.dieMessage(`the service exited (${JSON.stringify(exit)}) before it was ready; output:\n${tail()}`)
          const ok = yield* request("GET", "/ready", { timeoutMs: 2000 }).pipe(
            Effect.map((a) => a.status === 200),
            Effect.catchAllDefect(() => Effect.succeed(false)),
          )
          if (ok) return
          yield* sleep(150)
        }
        return yield* Effect.dieMessage(`the service was not ready within ${timeoutMs} ms; output:\n${tail()}`)
      })

    const kill = (signal: NodeJS.Signals, graceMs = 30_000) =>
      Effect.gen(function* () {
        if (exit !== undefined) return exit
        child.kill(signal)
        const done = yield* exited.pipe(Effect.timeout(graceMs), Effect.option)
        if (done._tag === "Some") return done.value
        child.kill("SIGKILL")
        return yield* exited
      })

    return {
      pid: child.pid ?? -1,
      port,
      baseUrl,
      lines: () => [...lines],
      output,
      waitForLine,
      waitReady,
      get: (p, o) => request("GET", p, o),
      post: (p, o) => request("POST", p, o),
      request,
      kill,
      exited,
      isAlive: () => exit === undefined,
    } satisfies ServiceProcess
  })
