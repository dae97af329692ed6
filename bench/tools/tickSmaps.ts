/**
 * The runner's RSS by mapping after ticks of runs, as the process-memory part takes it: started with
 * `npm start` (the runner role, TICK_ENABLED=false, PLANNER_MODE=json) on a fresh bench database, LLM
 * stand-in at 200 ms; an empty tick, then `--ticks` rounds of `--runs` users × one mission made due
 * (inserted, then updated each round, as the part does) and one tick, each followed by 5 s and
 * /proc/<pid>/smaps summed by mapping (binary, anonymous by permission: rwxp is JIT code). With
 * `--heap`, the heap sampler is preloaded and its live object counts, after the full collection it
 * forces, follow each reading, with the heap's peak during the ticks and mimalloc's own figures
 * (`bun:jsc` memoryUsage). Each tick's line gives the runner's CPU per run over the tick and, from
 * /proc/<pid>/status, RssAnon, RssFile and VmHWM (the peak RSS so far). Not part of `npm run bench`.
 *
 * With `--trace=S`, the RSS every 250 ms for S seconds after each tick answered (instead of the 5 s wait).
 *
 * With `--heap --keep=P`, each tick's counts are kept in P-<tick>.json. With `--cells` as well, every
 * live cell's address, class and size in P-<tick>.cells.json (grouped by 16 KB block, they show which
 * survivors keep mostly empty heap blocks), and with `--cells=snapshot` the whole GC-debugging heap
 * snapshot (edges included) in P-<tick>.snapshot.json.
 *
 * With `--idle-reading`, the same readings for an empty tick first (tick 0: the idle process).
 *
 * With `--stderr=F`, the runner's standard error is written to F at the end (with
 * `--env='{"BUN_JSC_logGC":"1"}'`: every collection, its kind, duration and heap sizes).
 *
 * With `--every`, the three largest mappings after every tick, not only the last. With `--idle=S`, S
 * seconds of idle before the first round (the bench's idle reading waits 5 s: start-up's `Bun.shrink()`
 * then comes before the first tick, as there).
 *
 *     bun bench/tools/tickSmaps.ts [--runs=1000] [--ticks=1] [--heap] [--every] [--idle=S] [--trace=S] [--keep=P] [--cells[=snapshot]] [--stderr=F] [--idle-reading] [--env='{"X":"1"}']
 */
import { readFileSync, writeFileSync } from "node:fs"
import { Effect } from "effect"
import { request } from "../../test/support/ManaProcess.js"
import { makeBenchDatabase } from "../support/benchDatabase.js"
import { startLlmStandIn } from "../support/llmStandIn.js"
import { startNpmRunner } from "../support/npmRunner.js"
import { missionsDueAgain } from "../support/seed.js"
import { smapsByName } from "../support/smaps.js"

const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, "").split(/=(.*)/s).slice(0, 2)))
const ownerUrl = process.env.BENCH_OWNER_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const runs = Number(args.runs ?? 1000)
const ticks = Number(args.ticks ?? 1)
/** The process's CPU (utime + stime) in ms, from /proc (clock ticks of 10 ms). */
const cpuMsOf = (pid: number): number => {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")
  return (Number(fields[11]) + Number(fields[12])) * 10
}
/** The process's RSS in KB, from /proc/<pid>/smaps_rollup. */
const rssKbOf = (pid: number): number => Number(/^Rss:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"))?.[1])
const heapOut = `/tmp/mana-ai-tickSmaps-${process.pid}`

await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const standIn = yield* startLlmStandIn(200)
      const db = yield* makeBenchDatabase(ownerUrl)
      const heapEnv = "heap" in args
        ? { BUN_OPTIONS: `--preload ${new URL("./heapSampler.ts", import.meta.url).pathname}`, HEAP_SAMPLER_OUT: heapOut, ...("cells" in args ? { HEAP_SAMPLER_CELLS: args.cells === "snapshot" ? "snapshot" : "1" } : {}) }
        : {}
      const { mana, pid, key } = yield* startNpmRunner({
        runnerUrl: db.runnerUrl,
        llmUrl: standIn.url,
        env: { ...heapEnv, ...JSON.parse(args.env ?? "{}") },
      })
      yield* Effect.promise(() => request(mana, "POST", "/internal/tick", key))
      // As the bench's process-memory part does: the idle reading's wait, so start-up's shrink comes first.
      if (args.idle !== undefined) yield* Effect.sleep(`${Number(args.idle)} seconds`)
      // --idle-reading: round 0 is an empty tick, so its readings are the idle process's.
      for (let round = ("idle-reading" in args) ? 0 : 1; round <= ticks; round++) {
        if (round > 0) yield* missionsDueAgain(db, "mem", "Memory mission", round, runs)
        const cpu0 = cpuMsOf(pid)
        const tick = yield* Effect.promise(() => request(mana, "POST", "/internal/tick", key))
        const tickCpuMs = cpuMsOf(pid) - cpu0
        if (args.trace !== undefined) {
          const trace: Array<string> = []
          for (let t = 0; t < Number(args.trace) * 4; t++) {
            yield* Effect.sleep("250 millis")
            trace.push((rssKbOf(pid) / 1024).toFixed(0))
          }
          console.log(`tick ${round}: RSS every 250 ms after the tick answered: ${trace.join(" ")}`)
        } else yield* Effect.sleep("5 seconds")
        const rss = rssKbOf(pid)
        const status = readFileSync(`/proc/${pid}/status`, "utf8")
        const kb = (field: string) => `${field} ${(Number(new RegExp(`^${field}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0) / 1024).toFixed(1)}`
        console.log(
          `tick ${round}: ${tick.body?.plansWrittenBack} plans written, runner CPU ${(tickCpuMs / Math.max(1, Number(tick.body?.plansWrittenBack ?? 0))).toFixed(2)} ms per run; RSS ${(rss / 1024).toFixed(1)} MB (${["RssAnon", "RssFile", "VmHWM"].map(kb).join(", ")} MB)`,
        )
        if (round === ticks || round === 0 || "every" in args) {
          for (const [name, e] of smapsByName(pid).slice(0, "every" in args ? 3 : 6)) console.log(`${(e.rss / 1024).toFixed(1).padStart(7)} MB rss ${(e.anon / 1024).toFixed(1).padStart(7)} MB anon ${String(e.count).padStart(5)} maps  ${name}`)
        }
        if ("heap" in args) {
          process.kill(pid, "SIGUSR2")
          yield* Effect.sleep("cells" in args ? "6 seconds" : "2 seconds")
          if (args.keep !== undefined) writeFileSync(`${args.keep}-${round}.json`, readFileSync(`${heapOut}.types`, "utf8"))
          if (args.keep !== undefined && "cells" in args) writeFileSync(`${args.keep}-${round}.cells.json`, readFileSync(`${heapOut}.cells`, "utf8"))
          if (args.keep !== undefined && args.cells === "snapshot") writeFileSync(`${args.keep}-${round}.snapshot.json`, readFileSync(`${heapOut}.snapshot`, "utf8"))
          const types = JSON.parse(readFileSync(`${heapOut}.types`, "utf8")) as {
            heapSize: number
            heapCapacity: number
            mimalloc?: { current: number; peak: number; currentCommit: number; peakCommit: number }
            top: ReadonlyArray<readonly [string, number]>
          }
          const m = (bytes: number | undefined) => ((bytes ?? 0) / 2 ** 20).toFixed(1)
          const peaks = JSON.parse(readFileSync(heapOut, "utf8")) as { peakHeap: number; peakCap: number }
          console.log(`  heap's peak so far: ${m(peaks.peakHeap)} MB, capacity's ${m(peaks.peakCap)} MB`)
          console.log(
            `  heap after a full collection: ${m(types.heapSize)} MB live, capacity ${m(types.heapCapacity)} MB; mimalloc current ${m(types.mimalloc?.current)} (peak ${m(types.mimalloc?.peak)}), committed ${m(types.mimalloc?.currentCommit)} (peak ${m(types.mimalloc?.peakCommit)}) MB`,
          )
          if (round === ticks || round === 0 || "every" in args) console.log(types.top.slice(0, 12).map(([t, n]) => `  ${n} ${t}`).join("\n"))
        }
      }
      if (args.stderr !== undefined) writeFileSync(args.stderr, mana.stderr())
    }),
  ),
)
process.exit(0)
