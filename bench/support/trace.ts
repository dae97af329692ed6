/**
 * `BENCH_TRACE=<file>`: a timeline of the runner's process while a workload runs, for finding what
 * slow runs wait for (not a figure; off by default). Every 5 ms a plain timer (not a fiber, so it
 * sees the event loop as libuv/Bun does) records how late it fired (event-loop drift), this
 * process's CPU (utime, stime), the main thread's on-CPU and run-queue wait from
 * `/proc/self/schedstat` (time the thread was runnable but another process held the core), the
 * JSC heap size, and every 50 ms the machine's busy ticks (`/proc/stat`) and the on-CPU and
 * run-queue time of the Postgres backends serving this database (found by their process title,
 * `postgres: <role> <database> …`, looked up again every second). The child writes it with its run
 * records and discovery passes, on their clock (`nowMs`: epoch ms from the performance clock).
 * Beside it, on a connection of its own, every 20 ms what the pool's sessions are doing
 * (`pg_stat_activity`: state and wait event of each `mana-ai` session of this database), so a run's
 * wait on Postgres shows as commit flushes (`IO:WALSync`), lock waits, or `Client:ClientRead` (the
 * session waits for this process).
 * `bench/tools/traceReport.ts <file>` reads it.
 */
import { readdirSync, readFileSync, writeFileSync } from "node:fs"
import pg from "pg"
import type { Recorder } from "./probes.js"
import { nowMs } from "./stats.js"

export interface TraceSample {
  /** performance clock (ms) */
  readonly t: number
  /** ms later than the 5 ms interval asked for */
  readonly drift: number
  /** this process's CPU since the previous sample (ms, all threads) */
  readonly cpuMs: number
  /** main thread: ms on a core and ms waiting on a run queue since the previous sample */
  readonly runMs: number
  readonly waitMs: number
  readonly heapMb: number
  /** machine: busy and total jiffies since the previous machine sample (every 10th sample; else 0) */
  readonly busyJ: number
  readonly totalJ: number
  /** this database's Postgres backends: ms on a core and ms on a run queue since the previous machine sample */
  readonly pgRunMs: number
  readonly pgWaitMs: number
}

const readSchedstat = (path = "/proc/self/schedstat"): [number, number] => {
  try {
    const [run, wait] = readFileSync(path, "utf8").trim().split(/\s+/).map(Number)
    return [(run ?? 0) / 1e6, (wait ?? 0) / 1e6]
  } catch {
    return [0, 0]
  }
}

const readMachine = (): [number, number] => {
  try {
    const v = readFileSync("/proc/stat", "utf8").split("\n")[0]!.trim().split(/\s+/).slice(1).map(Number)
    const total = v.reduce((a, b) => a + b, 0)
    return [total - (v[3] ?? 0) - (v[4] ?? 0), total]
  } catch {
    return [0, 0]
  }
}

/** Pids of the postgres backends whose title names `database`. */
const backendsOf = (database: string): Array<number> => {
  const out: Array<number> = []
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const title = readFileSync(`/proc/${entry}/cmdline`, "utf8")
      if (title.startsWith("postgres: ") && title.includes(` ${database} `)) out.push(Number(entry))
    } catch {
      // gone
    }
  }
  return out
}

export interface PgSample {
  readonly t: number
  /** "state|wait_event_type:wait_event" → sessions */
  readonly sessions: Record<string, number>
}

const pgSampler = (url: string) => {
  const samples: Array<PgSample> = []
  const client = new pg.Client({ connectionString: url, application_name: "bench-trace" })
  let stopped = false
  const loop = async () => {
    await client.connect()
    while (!stopped) {
      const t = nowMs()
      const r = await client.query<{ k: string; n: number }>(
        `SELECT state || '|' || coalesce(wait_event_type || ':' || wait_event, 'cpu') AS k, count(*)::int AS n
           FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'mana-ai' GROUP BY 1`,
      )
      samples.push({ t, sessions: Object.fromEntries(r.rows.map((x) => [x.k, x.n])) })
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    await client.end()
  }
  const done = loop().catch(() => undefined)
  return async () => {
    stopped = true
    await done
    return samples
  }
}

/**
 * Sessions Postgres established for this database so far (`pg_stat_database.sessions`, PG 14+): the
 * pool's connections, the tracer's own included. A connection the pool closed after its idle timeout
 * and opened again counts each time.
 */
export const sessionsOpened = async (url: string): Promise<number> => {
  const client = new pg.Client({ connectionString: url, application_name: "bench-trace" })
  await client.connect()
  try {
    const r = await client.query<{ n: string }>("SELECT sessions AS n FROM pg_stat_database WHERE datname = current_database()")
    return Number(r.rows[0]?.n ?? Number.NaN)
  } finally {
    await client.end()
  }
}

export const startTrace = async (
  database: string,
  runnerUrl: string,
): Promise<((recorder: Recorder, extra: Record<string, unknown>) => Promise<void>) | undefined> => {
  const path = process.env.BENCH_TRACE
  if (path === undefined || path === "") return undefined
  const stopPg = pgSampler(runnerUrl)
  const specifier = "bun:jsc"
  const jsc = (await import(specifier)) as { heapSize: () => number }
  const samples: Array<TraceSample> = []
  const INTERVAL = 5
  let prevT = nowMs()
  let prevCpu = process.cpuUsage()
  let [prevRun, prevWait] = readSchedstat()
  let [prevBusy, prevTotal] = readMachine()
  let n = 0
  let backends: Array<number> = []
  const pgPrev = new Map<number, [number, number]>()
  const timer = setInterval(() => {
    const t = nowMs()
    const cpu = process.cpuUsage()
    const [run, wait] = readSchedstat()
    let busyJ = 0
    let totalJ = 0
    let pgRunMs = 0
    let pgWaitMs = 0
    if (++n % 10 === 0) {
      const [busy, total] = readMachine()
      busyJ = busy - prevBusy
      totalJ = total - prevTotal
      prevBusy = busy
      prevTotal = total
      // A scan of /proc takes milliseconds on this thread: at 3 s, then every 10 s (the pool keeps its connections).
      if (n % 2000 === 600) backends = backendsOf(database)
      for (const pid of backends) {
        const now = readSchedstat(`/proc/${pid}/schedstat`)
        const before = pgPrev.get(pid)
        if (before !== undefined) {
          pgRunMs += now[0] - before[0]
          pgWaitMs += now[1] - before[1]
        }
        pgPrev.set(pid, now)
      }
    }
    samples.push({
      t,
      drift: t - prevT - INTERVAL,
      cpuMs: (cpu.user - prevCpu.user + cpu.system - prevCpu.system) / 1000,
      runMs: run - prevRun,
      waitMs: wait - prevWait,
      heapMb: jsc.heapSize() / 2 ** 20,
      busyJ,
      totalJ,
      pgRunMs,
      pgWaitMs,
    })
    prevT = t
    prevCpu = cpu
    prevRun = run
    prevWait = wait
  }, INTERVAL)
  return async (recorder, extra) => {
    clearInterval(timer)
    const pgSamples = await stopPg()
    const sessions = await sessionsOpened(runnerUrl).catch(() => Number.NaN)
    writeFileSync(path, JSON.stringify({ sessions, samples, pgSamples, runs: recorder.runs, refreshes: recorder.refreshes, ...extra }))
  }
}
