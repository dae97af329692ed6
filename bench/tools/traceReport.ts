/**
 * Reads a `BENCH_TRACE` timeline (bench/support/trace.ts) and says what the slow runs waited for:
 *
 *   BENCH_TRACE=/tmp/trace.json bun bench/run.ts --only=precision --out=/tmp/p.json
 *   bun bench/tools/traceReport.ts /tmp/trace.json [--top=20] [--gc=/tmp/stderr-stamped.log]
 *
 * For each written run, its overhead (t1 − t0 − llmMs) is split over the trace's 5 ms samples that
 * fall outside its LLM calls: how much of it the event loop was late (drift: the thread was busy or
 * not on a core), how much of that the main thread waited on a run queue (another process held the
 * core), how much CPU this process used, whether the heap shrank (a collection), and how many other
 * runs started within 50 ms of it. Then the stalls: every sample later than 20 ms, with the same split.
 */
import { readFileSync } from "node:fs"
import type { RunRecord } from "../support/probes.js"
import type { PgSample, TraceSample } from "../support/trace.js"

const args = process.argv.slice(2)
const file = args.find((a) => !a.startsWith("--"))
if (file === undefined) throw new Error("usage: traceReport.ts <trace.json> [--top=N]")
const top = Number(args.find((a) => a.startsWith("--top="))?.slice(6) ?? 20)
const trace = JSON.parse(readFileSync(file, "utf8")) as {
  sessions?: number
  pgSamples?: Array<PgSample>
  samples: Array<TraceSample>
  runs: Array<RunRecord>
  refreshes: Array<{ t0: number; t1: number; rows: number }>
}
const { samples, refreshes } = trace
const runs = trace.runs.filter((r) => r.outcome.startsWith("Written") && r.llmCalls > 0)

const pct = (xs: ReadonlyArray<number>, p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? Number.NaN : s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}
const r1 = (x: number) => Math.round(x * 10) / 10

/** First sample index with t >= at (binary search). */
const firstAt = (at: number) => {
  let lo = 0
  let hi = samples.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (samples[mid]!.t < at) lo = mid + 1
    else hi = mid
  }
  return lo
}

interface Split {
  drift: number
  wait: number
  cpu: number
  maxDrift: number
  heapDrop: number
  pgRun: number
  pgWait: number
  busyJ: number
  totalJ: number
}
/** Sums over samples whose interval ends inside [a, b]. */
const splitOf = (a: number, b: number): Split => {
  const out: Split = { drift: 0, wait: 0, cpu: 0, maxDrift: 0, heapDrop: 0, pgRun: 0, pgWait: 0, busyJ: 0, totalJ: 0 }
  for (let i = firstAt(a); i < samples.length && samples[i]!.t <= b; i++) {
    const s = samples[i]!
    out.drift += Math.max(0, s.drift)
    out.wait += s.waitMs
    out.cpu += s.cpuMs
    out.maxDrift = Math.max(out.maxDrift, s.drift)
    out.pgRun += s.pgRunMs
    out.pgWait += s.pgWaitMs
    out.busyJ += s.busyJ
    out.totalJ += s.totalJ
    if (i > 0) out.heapDrop = Math.max(out.heapDrop, samples[i - 1]!.heapMb - s.heapMb)
  }
  return out
}
const add = (x: Split, y: Split): Split => ({
  drift: x.drift + y.drift,
  wait: x.wait + y.wait,
  cpu: x.cpu + y.cpu,
  maxDrift: Math.max(x.maxDrift, y.maxDrift),
  heapDrop: Math.max(x.heapDrop, y.heapDrop),
  pgRun: x.pgRun + y.pgRun,
  pgWait: x.pgWait + y.pgWait,
  busyJ: x.busyJ + y.busyJ,
  totalJ: x.totalJ + y.totalJ,
})

const starts = runs.map((r) => r.t0).sort((a, b) => a - b)
const inFlightAt = (t: number) => trace.runs.filter((r) => r.t0 <= t && r.t1 > t).length
const startsNear = (t: number) => starts.filter((s) => Math.abs(s - t) <= 50).length - 1
const inDiscovery = (a: number, b: number) => refreshes.some((p) => p.t0 < b && p.t1 > a)

const rows = runs.map((r) => {
  const overhead = r.t1 - r.t0 - r.llmMs
  const before = splitOf(r.t0, r.llmFirstAt)
  const after = splitOf(r.llmLastEnd, r.t1)
  return { r, overhead, before: r.llmFirstAt - r.t0, after: r.t1 - r.llmLastEnd, split: add(before, after) }
})
rows.sort((a, b) => b.overhead - a.overhead)

console.log(`${runs.length} written runs; overhead p50 ${r1(pct(rows.map((x) => x.overhead), 50))} p90 ${r1(pct(rows.map((x) => x.overhead), 90))} p99 ${r1(pct(rows.map((x) => x.overhead), 99))} max ${r1(rows[0]?.overhead ?? Number.NaN)} ms`)
console.log(`samples ${samples.length}; drift p50 ${r1(pct(samples.map((s) => s.drift), 50))} p99 ${r1(pct(samples.map((s) => s.drift), 99))} max ${r1(Math.max(...samples.map((s) => s.drift)))} ms`)
const totalWait = samples.reduce((a, s) => a + s.waitMs, 0)
const totalRun = samples.reduce((a, s) => a + s.runMs, 0)
console.log(`postgres backends of this database over the trace: on CPU ${r1(samples.reduce((a, s) => a + s.pgRunMs, 0) / 1000)} s, on a run queue ${r1(samples.reduce((a, s) => a + s.pgWaitMs, 0) / 1000)} s; machine busy ${r1((samples.reduce((a, s) => a + s.busyJ, 0) / Math.max(1, samples.reduce((a, s) => a + s.totalJ, 0))) * 100)}%`)
console.log(`main thread over the trace: on CPU ${r1(totalRun / 1000)} s, waiting on a run queue ${r1(totalWait / 1000)} s`)

console.log(`\nslowest ${top} runs (ms): overhead = before + after (+ between calls); over those windows: loop drift, of it run-queue wait, process CPU, max single drift, heap drop MB; runs in flight at start, other starts within 50 ms, overlaps discovery`)
for (const x of rows.slice(0, top)) {
  const s = x.split
  console.log(
    [
      `t=${r1((x.r.t0 - samples[0]!.t) / 1000)}s`,
      `oh ${r1(x.overhead)}`,
      `= ${r1(x.before)} + ${r1(x.after)}`,
      `drift ${r1(s.drift)}`,
      `wait ${r1(s.wait)}`,
      `cpu ${r1(s.cpu)}`,
      `maxDrift ${r1(s.maxDrift)}`,
      `heapDrop ${r1(s.heapDrop)}`,
      `pg run ${r1(s.pgRun)} wait ${r1(s.pgWait)}`,
      `machine ${s.totalJ > 0 ? r1((s.busyJ / s.totalJ) * 100) : "?"}%`,
      `inFlight ${inFlightAt(x.r.t0)}`,
      `near ${startsNear(x.r.t0)}`,
      inDiscovery(x.r.t0, x.r.t1) ? "DISCOVERY" : "",
    ].join("  "),
  )
}
const slow = rows.slice(0, Math.max(1, Math.ceil(rows.length / 100)))
const sum = (f: (x: (typeof rows)[number]) => number) => slow.reduce((a, x) => a + f(x), 0)
console.log(
  `\nslowest 1% (${slow.length} runs): overhead ${r1(sum((x) => x.overhead))} ms in all; loop drift in their windows ${r1(sum((x) => x.split.drift))}, run-queue wait ${r1(sum((x) => x.split.wait))}, process CPU ${r1(sum((x) => x.split.cpu))}, postgres backends on CPU ${r1(sum((x) => x.split.pgRun))} and on a run queue ${r1(sum((x) => x.split.pgWait))}; with a heap drop > 5 MB: ${slow.filter((x) => x.split.heapDrop > 5).length}`,
)
const fast = rows.slice(Math.floor(rows.length / 4), Math.floor((rows.length * 3) / 4))
console.log(
  `middle half (${fast.length} runs): mean overhead ${r1(fast.reduce((a, x) => a + x.overhead, 0) / fast.length)} ms, mean drift in windows ${r1(fast.reduce((a, x) => a + x.split.drift, 0) / fast.length)}`,
)

console.log(`\nstalls: samples later than 20 ms (t, drift, run-queue wait, process CPU in that interval, heap before → after MB, machine busy share of the 50 ms around)`)
const stalls = samples.map((s, i) => ({ s, i })).filter(({ s }) => s.drift > 20)
for (const { s, i } of stalls.slice(0, 200)) {
  const prev = samples[i - 1]
  let busy = 0
  let total = 0
  for (let j = i; j < Math.min(samples.length, i + 10); j++) {
    busy += samples[j]!.busyJ
    total += samples[j]!.totalJ
  }
  console.log(
    `t=${r1((s.t - samples[0]!.t) / 1000)}s drift ${r1(s.drift)} wait ${r1(s.waitMs)} cpu ${r1(s.cpuMs)} run ${r1(s.runMs)} heap ${r1(prev?.heapMb ?? 0)} → ${r1(s.heapMb)} machine ${total > 0 ? r1((busy / total) * 100) : "?"}%${inDiscovery(s.t - s.drift - 5, s.t) ? " DISCOVERY" : ""}`,
  )
}
console.log(`${stalls.length} stalls; sum of their drift ${r1(stalls.reduce((a, x) => a + x.s.drift, 0))} ms, of run-queue wait ${r1(stalls.reduce((a, x) => a + x.s.waitMs, 0))} ms, of CPU ${r1(stalls.reduce((a, x) => a + x.s.cpuMs, 0))} ms`)

// What the runner's Postgres sessions were doing: over the whole trace, and while the slowest 1 % ran.
const pgSamples = trace.pgSamples ?? []
const mix = (within: (t: number) => boolean) => {
  const counts = new Map<string, number>()
  let n = 0
  for (const p of pgSamples) {
    if (!within(p.t)) continue
    n++
    for (const [k, v] of Object.entries(p.sessions)) counts.set(k, (counts.get(k) ?? 0) + v)
  }
  return [...counts].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, v]) => `${k} ${(v / Math.max(1, n)).toFixed(2)}`)
}
if (pgSamples.length > 0) {
  console.log(`\npostgres sessions of the runner (mean count per pg_stat_activity sample; ${pgSamples.length} samples; ${trace.sessions ?? "?"} sessions opened):`)
  console.log(`  whole trace: ${mix(() => true).join(", ")}`)
  console.log(`  slowest 1 %: ${mix((t) => slow.some((x) => x.r.t0 <= t && t <= x.r.t1)).join(", ")}`)
}
