/**
 * Who used the machine's CPU during a measurement, from /proc (Linux): the whole machine's busy
 * share, this process (with its finished children), the LLM stand-in, and every postgres process
 * (other sessions' included).
 * Figures are in cores (1.0 = one core busy for the whole interval). Elsewhere: empty.
 */
import { readdirSync, readFileSync } from "node:fs"
import Pg from "pg"

interface Sample {
  readonly at: number
  readonly machineBusy: number
  readonly machineTotal: number
  readonly byGroup: ReadonlyMap<string, number>
}

const TICKS_PER_SECOND = 100

const readMachine = (): [busy: number, total: number] => {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0]!
  const v = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = (v[3] ?? 0) + (v[4] ?? 0)
  const total = v.reduce((a, b) => a + b, 0)
  return [total - idle, total]
}

export const processTicks = (pid: string): { comm: string; ticks: number } | undefined => {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, "utf8")
    const close = text.lastIndexOf(")")
    const comm = text.slice(text.indexOf("(") + 1, close)
    const fields = text.slice(close + 2).split(" ")
    // utime + stime + the reaped children's (cutime + cstime): a postgres backend that has exited still
    // counts, in the postmaster's, and a finished bench child in the bench's.
    return { comm, ticks: Number(fields[11]) + Number(fields[12]) + Number(fields[13]) + Number(fields[14]) }
  } catch {
    return undefined
  }
}

const sample = (groups: Readonly<Record<string, (pid: number, comm: string) => boolean>>): Sample | undefined => {
  try {
    const [machineBusy, machineTotal] = readMachine()
    const byGroup = new Map<string, number>()
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue
      const p = processTicks(entry)
      if (p === undefined) continue
      for (const [name, test] of Object.entries(groups)) {
        if (test(Number(entry), p.comm)) byGroup.set(name, (byGroup.get(name) ?? 0) + p.ticks)
      }
    }
    return { at: performance.now(), machineBusy, machineTotal, byGroup }
  } catch {
    return undefined
  }
}

export interface CpuReport {
  readonly seconds: number
  /** Busy share of all cores, times the core count: cores in use. */
  readonly machineCores: number
  readonly cores: Readonly<Record<string, number>>
}

export const startCpuWatch = (standInPid: number | undefined) => {
  const groups = {
    bench: (pid: number) => pid === process.pid,
    standIn: (pid: number) => pid === standInPid,
    postgres: (_: number, comm: string) => comm.startsWith("postgres"),
  }
  const first = sample(groups)
  return (): CpuReport | undefined => {
    const last = sample(groups)
    if (first === undefined || last === undefined) return undefined
    const seconds = (last.at - first.at) / 1000
    const cores = (ticks: number) => Number((ticks / TICKS_PER_SECOND / seconds).toFixed(2))
    const ncpu = (last.machineTotal - first.machineTotal) / TICKS_PER_SECOND / seconds
    return {
      seconds: Number(seconds.toFixed(1)),
      machineCores: Number((((last.machineBusy - first.machineBusy) / (last.machineTotal - first.machineTotal)) * ncpu).toFixed(2)),
      cores: Object.fromEntries(Object.keys(groups).map((g) => [g, cores((last.byGroup.get(g) ?? 0) - (first.byGroup.get(g) ?? 0))])),
    }
  }
}

/**
 * CPU seconds (utime + stime) of this process and of the postgres backends connected to one database
 * (pg_stat_activity's pids, read from /proc) over an effect: a measurement's own parties, apart from
 * whatever else loads the machine. The pids are read again every 250 ms, so a parallel worker that
 * lives through a sort is counted up to its last sample (what it used after that is missed).
 */
export const partyCpu = (listPids: () => Promise<ReadonlyArray<number>>) => {
  const ticksOf = (pids: ReadonlyArray<number>) => {
    const byPid = new Map<number, number>()
    for (const pid of pids) {
      const p = processTicks(String(pid))
      if (p !== undefined) byPid.set(pid, p.ticks)
    }
    return byPid
  }
  return async () => {
    const cpu0 = process.cpuUsage()
    const before = ticksOf(await listPids())
    const latest = new Map(before)
    let sampling = Promise.resolve()
    const sample = async () => {
      for (const [pid, t] of ticksOf(await listPids())) latest.set(pid, t)
    }
    const timer = setInterval(() => {
      sampling = sampling.then(sample, sample)
    }, 250)
    return async (): Promise<{ bunCpuSeconds: number; postgresCpuSeconds: number }> => {
      clearInterval(timer)
      await sampling
      const cpu = process.cpuUsage(cpu0)
      await sample()
      let ticks = 0
      for (const [pid, t] of latest) ticks += t - (before.get(pid) ?? 0)
      return {
        bunCpuSeconds: Number(((cpu.user + cpu.system) / 1e6).toFixed(2)),
        postgresCpuSeconds: Number((ticks / TICKS_PER_SECOND).toFixed(2)),
      }
    }
  }
}

/**
 * CPU seconds of the backends the role of `url` has on its database (pg_stat_activity as that role,
 * read every 250 ms by `partyCpu`), from now until the returned function is called: the runner's own
 * Postgres work, apart from other sessions on the server (the shared machine's other benches), which
 * `startCpuWatch`'s postgres figure includes. The watching connection's own backend is left out.
 */
export const startRoleBackendsCpu = async (url: string): Promise<() => Promise<number>> => {
  const client = new Pg.Client({ connectionString: url })
  await client.connect()
  const stop = await partyCpu(async () =>
    (
      await client.query(
        "SELECT pid FROM pg_stat_activity WHERE usename = current_user AND datname = current_database() AND pid <> pg_backend_pid()",
      )
    ).rows.map((r) => Number(r.pid)),
  )()
  return async () => {
    const { postgresCpuSeconds } = await stop()
    await client.end()
    return postgresCpuSeconds
  }
}

/** Bun under `npm start` (npm → sh → exec bun, or bun directly): the first descendant named bun. */
export const bunProcessUnder = (root: number): number | undefined => {
  const queue = [root]
  while (queue.length > 0) {
    const pid = queue.shift()!
    if (processTicks(String(pid))?.comm === "bun") return pid
    try {
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        const children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim()
        if (children !== "") queue.push(...children.split(/\s+/).map(Number))
      }
    } catch {}
  }
  return undefined
}

/** Ends a runner started with `npm start` (ManaProcess): SIGKILL does not reach Bun through npm, so Bun first, then npm. */
export const killBunUnderNpm = async (p: { readonly child: { readonly pid?: number | undefined }; stop: (signal: NodeJS.Signals, ms: number) => Promise<unknown> }) => {
  const bun = bunProcessUnder(p.child.pid ?? 0)
  if (bun !== undefined) {
    try {
      process.kill(bun, "SIGKILL")
    } catch {}
  }
  await p.stop("SIGKILL", 10_000).catch(() => undefined)
}
