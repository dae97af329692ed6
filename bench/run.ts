/**
 * `npm run bench`: measures mana-ai against the local Postgres server and an HTTP LLM stand-in with
 * a fixed latency, on data it seeds itself; prints each figure beside its target and writes
 * bench/results/latest.json. Every figure is a ratio or a distribution taken within this run.
 *
 *   bun bench/run.ts [--quick] [--only=throughput,stages,precision,discovery,memory,processMemory,page,fairShare,cluster] [--history=N] [--runs=N] [--rounds=N] [--users=N] [--missions=N] [--baseline=N] [--fair=at-once,spread] [--sizes=N,…] [--serial] [--out=path]
 *   BENCH_OWNER_URL (default postgres://postgres@127.0.0.1:5432/postgres): an owner on a loopback server.
 */
import { cpus, totalmem } from "node:os"
import { fileURLToPath } from "node:url"
import { BunRuntime } from "@effect/platform-bun"
import { Console, Effect, Logger, LogLevel } from "effect"
import { measureCluster } from "./measure/cluster.js"
import { measureDiscovery } from "./measure/discovery.js"
import { type FairArrangement, measureFairShare } from "./measure/fairShare.js"
import { measureMemory, measureProcessMemory, memoryChild } from "./measure/memory.js"
import { measurePage, pageChild } from "./measure/page.js"
import { measurePrecision } from "./measure/precision.js"
import { measureStages } from "./measure/stages.js"
import { measureThroughput } from "./measure/throughput.js"
import { workloadChild } from "./measure/workload.js"
import { startCpuWatch } from "./support/cpu.js"
import { startLlmStandIn } from "./support/llmStandIn.js"
import { DEFAULT_OWNER_URL } from "./support/benchDatabase.js"
import { makeHistoryTemplates } from "./support/historyTemplate.js"
import { type Figure, holds, renderTable, writeJson } from "./support/report.js"
import { serveChild } from "./support/child.js"
import { benchLog } from "./support/log.js"
import { benchStartedAt, nowMs, round } from "./support/stats.js"

const args = process.argv.slice(2)
const flag = (name: string) => args.includes(`--${name}`)
const option = (name: string) => args.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)

const quick = flag("quick")
const only = option("only")?.split(",")
const selected = (name: string) => only === undefined || only.includes(name)
const outPath = option("out") ?? fileURLToPath(new URL("./results/latest.json", import.meta.url))
const ownerUrl = process.env.BENCH_OWNER_URL ?? DEFAULT_OWNER_URL

const bunVersion = (process.versions as Record<string, string | undefined>).bun
/**
 * JavaScriptCore's optimizing FTL tier, as this process and what it starts run: `npm start` turns it
 * off (package.json, README "Set up"), and so does `npm run bench`; `bun bench/run.ts` alone keeps it on
 * for the parts that run in this process or its children (stages, throughput, precision, …).
 */
const ftl = process.env.BUN_JSC_useFTLJIT === "0" || process.env.BUN_JSC_useFTLJIT === "false" ? "off" : "on"
const runtime = `${bunVersion === undefined ? `node ${process.version}` : `bun ${bunVersion}`}, FTL ${ftl}${ftl === "on" ? " (npm start turns it off: run through npm run bench to measure as it runs)" : ""}`
const started = benchStartedAt()
const log = benchLog

const main = Effect.gen(function* () {
  const figures: Array<Figure> = []
  /** Each part's wall time (seconds), in the order run: where a full run's time goes. */
  const partSeconds: Record<string, number> = {}
  const part = <E, R>(name: string, measure: Effect.Effect<ReadonlyArray<Figure>, E, R>) =>
    Effect.gen(function* () {
      const t0 = nowMs()
      figures.push(...(yield* measure))
      partSeconds[name] = round((nowMs() - t0) / 1000, 1)
      yield* log(`part ${name} took ${partSeconds[name]} s`)
    })
  yield* log(`mode ${quick ? "quick" : "full"}; runtime ${runtime}`)

  const standIn = yield* startLlmStandIn(200)
  yield* log(`LLM stand-in at ${standIn.url}`)
  const cpuWatch = startCpuWatch(standIn.pid)
  // Mission history seeded once per size for the whole run: discovery and the process-memory reading
  // each read their own copy of the 1M rows (support/historyTemplate.ts).
  const histories = yield* makeHistoryTemplates(ownerUrl, log)

  if (selected("throughput")) {
    yield* part(
      "throughput",
      measureThroughput({ ownerUrl, standIn, users: Number(option("users") ?? (quick ? 200 : 1000)), baselineSample: Number(option("baseline") ?? (quick ? 10 : 12)), log }),
    )
  }

  if (selected("throughput") || selected("stages")) {
    yield* part("stages", measureStages({ ownerUrl, standIn, missions: quick ? 500 : 1000, log }))
  }

  if (selected("precision")) {
    yield* part(
      "precision",
      measurePrecision({
        ownerUrl,
        standIn,
        missions: Number(option("missions") ?? (quick ? 400 : 2000)),
        users: Number(option("users") ?? (quick ? 100 : 500)),
        spreadMs: quick ? 20_000 : 60_000,
        leadMs: quick ? 8_000 : 15_000,
        log,
      }),
    )
  }

  // The per-actor memory reading and the operator page measure their own child process (heap and RSS;
  // its CPU time): they run beside the process-memory ticks that are no figure (2 … 9), and are over
  // before its last tick (bench/README.md, "Where a full run's time goes"). `--serial`: one after another.
  const memoryPart = part(
    "memory",
    measureMemory({
      ownerUrl,
      standIn,
      actors: quick ? 1_000 : 10_000,
      startDeadline: quick ? "40 seconds" : "90 seconds",
      log,
    }),
  )
  const pagePart = part(
    "page",
    measurePage({
      ownerUrl,
      standIn,
      actors: quick ? 1_000 : 10_000,
      windowSeconds: quick ? 10 : 20,
      idleWindowSeconds: 10,
      rounds: quick ? 2 : 3,
      startDeadline: quick ? "40 seconds" : "90 seconds",
      log,
    }),
  )
  const besideTicks = [...(selected("memory") ? [memoryPart] : []), ...(selected("page") ? [pagePart] : [])]
  const processMemory = selected("memory") || selected("processMemory")
  if (!processMemory || flag("serial")) yield* Effect.all(besideTicks, { discard: true })
  const discoverySizes = option("sizes")?.split(",").map(Number) ?? (quick ? [2_000, 20_000] : [10_000, 100_000, 1_000_000])
  // Discovery's histories, seeded beside those ticks too when discovery runs (the largest also by processMemory).
  const seedHistories = selected("discovery") && !flag("serial") ? [Effect.forEach(discoverySizes, histories.prepare, { discard: true })] : []

  if (processMemory) {
    yield* part(
      "processMemory",
      measureProcessMemory({
        ownerUrl,
        standIn,
        runsPerRound: Number(option("runs") ?? (quick ? 200 : 1000)),
        rounds: Number(option("rounds") ?? (quick ? 5 : 10)),
        historyRows: Number(option("history") ?? (quick ? 100_000 : 1_000_000)),
        histories,
        ...(flag("serial") ? {} : { beside: Effect.all([Effect.all(besideTicks, { discard: true }), ...seedHistories], { concurrency: "unbounded", discard: true }) }),
        log,
      }),
    )
  }

  if (selected("discovery")) {
    yield* part(
      "discovery",
      measureDiscovery({
        ownerUrl,
        histories,
        sizes: discoverySizes,
        samples: quick ? 10 : 30,
        log,
      }),
    )
  }

  if (selected("fairShare")) {
    const arrangements = (option("fair")?.split(",") ?? ["at-once", "spread"]) as Array<FairArrangement>
    yield* part("fairShare", measureFairShare({ ownerUrl, standIn, arrangements, log }))
  }

  if (selected("cluster")) {
    yield* part("cluster", measureCluster({ ownerUrl, standIn, users: quick ? 300 : 1000, kills: quick ? 3 : 5, log }))
  }

  const cpu = cpuWatch()
  // Other sessions share this machine: what they used is context for every latency above.
  const others = cpu === undefined ? undefined : round(cpu.machineCores - (cpu.cores.bench ?? 0) - (cpu.cores.standIn ?? 0) - (cpu.cores.postgres ?? 0), 2)
  const table = renderTable(figures)
  yield* Console.log(`\n${table}\n`)
  if (cpu !== undefined) {
    yield* Console.log(
      `CPU over the run (${cpus().length} cores): bench ${cpu.cores.bench}, LLM stand-in ${cpu.cores.standIn}, postgres (all sessions) ${cpu.cores.postgres}, other processes ${others} cores on average\n`,
    )
  }
  yield* Console.log(
    `Wall time by part: ${Object.entries(partSeconds).map(([name, seconds]) => `${name} ${seconds} s`).join(", ")}; whole run ${round((nowMs() - started) / 1000, 1)} s\n`,
  )
  const missed = figures.filter((f) => holds(f) === false)
  writeJson(outPath, {
    finishedAt: new Date().toISOString(),
    mode: quick ? "quick" : "full",
    durationSeconds: round((nowMs() - started) / 1000, 1),
    partSeconds,
    // Parts that ran beside processMemory's ticks 2 … 9 (their seconds overlap its own).
    partsBesideProcessMemory: processMemory && !flag("serial") ? [...(selected("memory") ? ["memory"] : []), ...(selected("page") ? ["page"] : [])] : [],
    machine: { cpus: cpus().length, memoryMb: Math.round(totalmem() / 2 ** 20), runtime },
    cpuCoresOverRun: cpu === undefined ? null : { ...cpu, otherProcesses: others },
    figures,
    missedTargets: missed.map((f) => f.id),
  })
  yield* log(`wrote ${outPath}; ${missed.length === 0 ? "every target holds" : `${missed.length} target(s) missed: ${missed.map((f) => f.id).join(", ")}`}`)
  // The tracer off, as the process runs without OTEL_EXPORTER_OTLP_ENDPOINT (ObservabilityLive).
}).pipe(Effect.scoped, Logger.withMinimumLogLevel(LogLevel.Warning), Effect.withTracerEnabled(false))

/** A measurement's child process (see support/child.ts): the runner under load, or the memory reading. */
const childTasks = {
  workload: serveChild(workloadChild),
  memory: serveChild(memoryChild),
  page: serveChild(pageChild),
} as const
const childTask = option("child")

BunRuntime.runMain(
  childTask === undefined
    ? main
    : (childTasks[childTask as keyof typeof childTasks] ?? Effect.dieMessage(`unknown bench child task ${childTask}`)).pipe(
        Logger.withMinimumLogLevel(LogLevel.Warning),
        Effect.withTracerEnabled(false),
      ),
)
