/**
 * The runner's idle RSS, mapping by mapping: started as the bench starts it (`npm start`, the runner
 * role on a fresh bench database, TICK_ENABLED=false), one empty tick, 5 s, then /proc/<pid>/smaps
 * summed by mapping name (binary, heap, anonymous, stacks …). Not part of `npm run bench`.
 *
 *     bun bench/tools/idleSmaps.ts [--cwd=DIR] [--env='{"X":"1"}'] [--hold=SECONDS]
 */
import { readFileSync } from "node:fs"
import { Effect } from "effect"
import { request } from "../../test/support/ManaProcess.js"
import { makeBenchDatabase } from "../support/benchDatabase.js"
import { startNpmRunner } from "../support/npmRunner.js"
import { smapsByName } from "../support/smaps.js"

const args: Record<string, string> = Object.fromEntries(process.argv.slice(2).map((a) => a.replace(/^--/, "").split(/=(.*)/s).slice(0, 2)))
const ownerUrl = process.env.BENCH_OWNER_URL ?? "postgres://postgres@127.0.0.1:5432/postgres"

await Effect.runPromise(
  Effect.scoped(
    Effect.gen(function* () {
      const db = yield* makeBenchDatabase(ownerUrl)
      const { mana, pid, key } = yield* startNpmRunner({
        runnerUrl: db.runnerUrl,
        llmUrl: "http://127.0.0.1:9/v1",
        ...(args.cwd === undefined ? {} : { cwd: args.cwd }),
        env: JSON.parse(args.env ?? "{}"),
      })
      yield* Effect.promise(() => request(mana, "POST", "/internal/tick", key))
      yield* Effect.sleep("5 seconds")
      const rollup = readFileSync(`/proc/${pid}/smaps_rollup`, "utf8")
      console.log(rollup.split("\n").filter((l) => /^(Rss|Pss|Anonymous|Private_Clean|Private_Dirty|Shared_Clean|Shared_Dirty|Pss_File|Pss_Anon):/.test(l)).join("\n"))
      for (const [name, e] of smapsByName(pid).slice(0, 25)) console.log(`${(e.rss / 1024).toFixed(1).padStart(7)} MB rss ${(e.anon / 1024).toFixed(1).padStart(7)} MB anon ${String(e.count).padStart(5)} maps  ${name}`)
      const threads = readFileSync(`/proc/${pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Threads:"))
      console.log(threads)
      if (args.hold !== undefined) {
        console.log(`pid ${pid}, holding ${args.hold} s`)
        yield* Effect.sleep(`${Number(args.hold)} seconds`)
      }
    }),
  ),
)
process.exit(0)
