/**
 * The real resident process for end-to-end tests: what `npm start` runs, `node_modules/.bin/bun
 * dist/main.js` (the bundle, built first by `scripts/bundle.ts` unless it is up to date), as a child
 * process with its own environment, its stdout/stderr collected, JSON log lines parsed.
 * `entry: "source"` runs `bun src/main.ts` instead; `viaNpmStart` runs `npm start` itself.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url))
export const BUN = fileURLToPath(new URL("../../node_modules/.bin/bun", import.meta.url))
export const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url))
export const BUNDLE = fileURLToPath(new URL("../../dist/main.js", import.meta.url))
export const BUNDLE_SCRIPT = fileURLToPath(new URL("../../scripts/bundle.ts", import.meta.url))

let bundleChecked = false

/**
 * What `npm start` does before it runs the bundle: `bun scripts/bundle.ts` builds dist/main.js unless
 * it is up to date. Once per test process; test files running at once may both build (each writes
 * under a temporary name and renames, so none runs a half-written bundle).
 */
export const ensureBundle = (): void => {
  if (bundleChecked) return
  const env = { ...process.env }
  delete env.BUN_OPTIONS
  const result = spawnSync(BUN, [BUNDLE_SCRIPT], { cwd: REPO_ROOT, env, encoding: "utf8" })
  if (result.status !== 0) throw new Error(`bun scripts/bundle.ts failed (${result.status ?? result.signal}): ${result.stderr}`)
  bundleChecked = true
}

/** Every variable the process reads: none leaks in from the test runner's own environment. */
const OWN_VARIABLES = [
  "BUN_JSC_useFTLJIT", "PORT", "SYNC_DATABASE_URL", "DB_POOL_MAX", "MANA_LLM_URL", "MANA_LLM_API_KEY", "LLM_MODEL", "LLM_TEMPERATURE",
  "MANA_SERVICE_KEY", "TICK_INTERVAL_MS", "TICK_ENABLED", "USER_CONCURRENCY", "GLOBAL_CONCURRENCY",
  "MISSION_TIMEOUT_MS", "LLM_TIMEOUT_MS", "ACTOR_IDLE_TTL_MS", "RESTART_MAX", "RESTART_WINDOW_MS",
  "SHUTDOWN_GRACE_MS", "DEFAULT_TIMEZONE", "TOOLS_FILE", "PLANNER_REPAIR_ATTEMPTS", "LOG_LEVEL", "LOG_FORMAT",
  "PLANNER_MODE", "PLANNER_MAX_ROUNDS",
  "OTEL_EXPORTER_OTLP_ENDPOINT", "MANA_AI_DATA_DIR", "MANA_AI_PRIVATE_KEY_FILE", "MANA_AI_PRIVATE_KEY_PEM",
  "DISCOVERY_LOOKBACK_MS", "DISCOVERY_RECONCILE_INTERVAL_MS", "RUNNER_ADDRESS", "CLUSTER_SHARDS", "MEMORY_TRIM_CODE",
]

export const freePort = (): Promise<number> =>
  new Promise((resolve, reject) => {
    const server = createServer()
    server.once("error", reject)
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })

export interface Exited {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

export interface ManaProcess {
  readonly baseUrl: string
  readonly child: ChildProcess
  readonly stdout: () => string
  readonly stderr: () => string
  /** stdout's JSON log lines (LOG_FORMAT=json). */
  readonly logs: () => ReadonlyArray<{ readonly message: unknown; readonly annotations?: Record<string, unknown> }>
  readonly exited: Promise<Exited>
  /** Sends `signal` and waits for the exit; rejects when it takes longer than `withinMs`. */
  readonly stop: (signal: NodeJS.Signals, withinMs: number) => Promise<Exited & { readonly tookMs: number }>
}

export const startManaProcess = async (options: {
  readonly env: Readonly<Record<string, string>>
  readonly cwd?: string | undefined
  readonly port?: number
  /** `npm start` (as operators run it: the script execs Bun) instead of Bun directly. */
  readonly viaNpmStart?: boolean
  /** Without npm: the bundle `npm start` runs (default) or the source (`bun src/main.ts`). */
  readonly entry?: "bundle" | "source"
}): Promise<ManaProcess> => {
  const port = options.port ?? (await freePort())
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !OWN_VARIABLES.includes(k)) env[k] = v
  }
  Object.assign(env, { LOG_FORMAT: "json", PORT: String(port), ...options.env })
  if (options.viaNpmStart !== true && options.entry !== "source") ensureBundle()
  const child =
    options.viaNpmStart === true
      ? spawn("npm", ["start", "--silent"], { cwd: options.cwd ?? REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] })
      : spawn(BUN, [options.entry === "source" ? MAIN : BUNDLE], {
          cwd: options.cwd ?? REPO_ROOT,
          env,
          stdio: ["ignore", "pipe", "pipe"],
        })
  let out = ""
  let err = ""
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    out += chunk
  })
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    err += chunk
  })
  const exited = new Promise<Exited>((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })))
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    child,
    stdout: () => out,
    stderr: () => err,
    logs: () =>
      out.split("\n").flatMap((line) => {
        try {
          return line.startsWith("{") ? [JSON.parse(line)] : []
        } catch {
          return []
        }
      }),
    exited,
    stop: async (signal, withinMs) => {
      const started = Date.now()
      child.kill(signal)
      const timer = new Promise<"timeout">((resolve) => setTimeout(() => resolve("timeout"), withinMs).unref())
      const result = await Promise.race([exited, timer])
      if (result === "timeout") {
        child.kill("SIGKILL")
        throw new Error(`the process did not exit within ${withinMs} ms of ${signal}`)
      }
      return { ...result, tookMs: Date.now() - started }
    },
  }
}

/** Polls `check` until it is true; rejects with `what` after `timeoutMs`. */
export const eventually = async (what: string, timeoutMs: number, check: () => Promise<boolean>, everyMs = 200) => {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check().catch(() => false)) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, everyMs))
  }
}

export const request = async (
  process: Pick<ManaProcess, "baseUrl">,
  method: "GET" | "POST",
  path: string,
  key?: string,
): Promise<{ status: number; body: any; text: string }> => {
  const response = await fetch(`${process.baseUrl}${path}`, {
    method,
    headers: key === undefined ? {} : { "X-Service-Key": key },
  })
  const text = await response.text()
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch {
    body = undefined
  }
  return { status: response.status, body, text }
}

/** The value of one unlabelled series in Prometheus text (0 when absent). */
export const metricValue = (text: string, name: string): number => {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `))
  return line === undefined ? 0 : Number(line.slice(name.length + 1))
}
