/**
 * The process-memory part's 1M reading (bench/measure/memory.ts) alone, from several checkouts in
 * turn, with the heap's peak and capacity (issue 16 item 5): one history template seeded once, a copy
 * of it per run, the runner started with `npm start` in each checkout (as the bench starts it) with
 * bench/tools/heapSampler.ts preloaded; RSS before the tick, 5 s and 15 s after; the runner's CPU
 * over the tick. Not part of `npm run bench`.
 *
 *     bun bench/tools/discoveryMemory.ts --order=A,B,B,A --A=/work/main --B=. [--rows=1000000] [--types=1]
 *         [--env='{"B":{"SOME_VARIABLE":"1"}}']
 */
import { readFileSync } from "node:fs"
import { fileURLToPath } from "node:url"
import { Effect } from "effect"
import { request } from "../../test/support/ManaProcess.js"
import { processTicks } from "../support/cpu.js"
import { startNpmRunner } from "../support/npmRunner.js"
import { makeHistoryTemplates } from "../support/historyTemplate.js"

const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, "").split(/=(.*)/s).slice(0, 2)))
const rows = Number(args.rows ?? 1_000_000)
const order = (args.order ?? "A,B,B,A").split(",")
const here = fileURLToPath(new URL("../..", import.meta.url))
const dirs: Record<string, string> = { A: args.A ?? "/work/main", B: args.B ?? here }
const extraEnv: Record<string, Record<string, string>> = JSON.parse(args.env ?? "{}")
const ownerUrl = process.env.BENCH_OWNER_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"
const sampler = fileURLToPath(new URL("./heapSampler.ts", import.meta.url))

const rssMb = (pid: number) =>
  Number((readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("VmRSS:")) ?? "").replace(/\D+/g, "")) / 1024
const load = () => readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")
const r1 = (x: number) => Math.round(x * 10) / 10
const mb = (bytes: number) => r1(bytes / 2 ** 20)

const one = (i: number, who: string, templates: Effect.Effect.Success<ReturnType<typeof makeHistoryTemplates>>) =>
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* templates.copy(rows)
      const out = `/tmp/discoveryMemory-${process.pid}-${i}.json`
      const { mana, pid, key } = yield* startNpmRunner({
        runnerUrl: db.runnerUrl,
        llmUrl: "http://127.0.0.1:9/v1",
        cwd: dirs[who] ?? who,
        env: { BUN_OPTIONS: `--preload ${sampler}`, HEAP_SAMPLER_OUT: out, ...(extraEnv[who] ?? {}) },
      })
      yield* Effect.sleep("5 seconds")
      const before = rssMb(pid)
      const load0 = load()
      const t0 = Date.now()
      const cpu0 = processTicks(String(pid))?.ticks ?? 0
      const tick = yield* Effect.promise(() => request(mana, "POST", "/internal/tick", key))
      const seconds = (Date.now() - t0) / 1000
      const cpu = ((processTicks(String(pid))?.ticks ?? 0) - cpu0) / 100
      yield* Effect.sleep("5 seconds")
      const after5 = rssMb(pid)
      const at5 = JSON.parse(readFileSync(out, "utf8"))
      yield* Effect.sleep("10 seconds")
      const after15 = rssMb(pid)
      const at15 = JSON.parse(readFileSync(out, "utf8"))
      console.log(
        JSON.stringify({
          run: i, who, status: tick.status, tickSeconds: r1(seconds), tickCpuSeconds: r1(cpu), load: `${load0} / ${load()}`,
          rssBeforeMb: r1(before), rssAfter5sMb: r1(after5), rssAfter15sMb: r1(after15),
          peakHeapMb: mb(at15.peakHeap), peakCapacityMb: mb(at15.peakCap),
          heapAt5sMb: mb(at5.heapSize), capacityAt5sMb: mb(at5.heapCapacity), heapAt15sMb: mb(at15.heapSize), capacityAt15sMb: mb(at15.heapCapacity),
        }),
      )
      if (args.types !== undefined) {
        process.kill(pid, "SIGUSR2")
        yield* Effect.sleep("3 seconds")
        console.log(readFileSync(`${out}.types`, "utf8"))
      }
    }),
  )

await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const templates = yield* makeHistoryTemplates(ownerUrl, (line) => Effect.sync(() => console.log(line)))
      for (const [i, who] of order.entries()) yield* one(i, who, templates)
    }),
  ),
)
process.exit(0)
