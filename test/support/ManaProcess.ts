/**
 * The real resident process for end-to-end tests: `node_modules/.bin/bun src/main.ts` as a child
 * process with its own environment, its stdout/stderr collected, JSON log lines parsed.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createServer } from "node:net"
import { fileURLToPath } from "node:url"

export const REPO_ROOT = fileURLToPath(new URL("../..", import.meta.url))
export const BUN = fileURLToPath(new URL("../../node_modules/.bin/bun", import.meta.url))
export const MAIN = fileURLToPath(new URL("../../src/main.ts", import.meta.url))

/** Every variable the process reads: none leaks in from the test runner's own environment. */
const OWN_VARIABLES = [
  "PORT", "SYNC_DATABASE_URL", "DB_POOL_MAX", "MANA_LLM_URL", "MANA_LLM_API_KEY", "LLM_MODEL", "LLM_TEMPERATURE",
  "MANA_SERVICE_KEY", "TICK_INTERVAL_MS", "TICK_ENABLED", "USER_CONCURRENCY", "GLOBAL_CONCURRENCY",
  "MISSION_TIMEOUT_MS", "LLM_TIMEOUT_MS", "ACTOR_IDLE_TTL_MS", "RESTART_MAX", "RESTART_WINDOW_MS",
  "SHUTDOWN_GRACE_MS", "DEFAULT_TIMEZONE", "TOOLS_FILE", "PLANNER_REPAIR_ATTEMPTS", "LOG_LEVEL", "LOG_FORMAT",
  "PLANNER_MODE", "PLANNER_MAX_ROUNDS",
  "OTEL_EXPORTER_OTLP_ENDPOINT", "MANA_AI_DATA_DIR", "MANA_AI_PRIVATE_KEY_FILE", "MANA_AI_PRIVATE_KEY_PEM",
  "DISCOVERY_LOOKBACK_MS", "DISCOVERY_RECONCILE_INTERVAL_MS", "RUNNER_ADDRESS", "CLUSTER_SHARDS",
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
  readonly cwd?: string
  readonly port?: number
  /** `npm start` (as operators run it: the script execs Bun) instead of Bun directly. */
  readonly viaNpmStart?: boolean
}): Promise<ManaProcess> => {
  const port = options.port ?? (await freePort())
  const env: Record<string, string> = {}
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !OWN_VARIABLES.includes(k)) env[k] = v
  }
  Object.assign(env, { LOG_FORMAT: "json", PORT: String(port), ...options.env })
  const child =
    options.viaNpmStart === true
      ? spawn("npm", ["start", "--silent"], { cwd: options.cwd ?? REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] })
      : spawn(BUN, [MAIN], { cwd: options.cwd ?? REPO_ROOT, env, stdio: ["ignore", "pipe", "pipe"] })
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
