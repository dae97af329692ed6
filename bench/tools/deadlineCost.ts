/**
 * CPU of one deadline around a small piece of work: `Effect.timeoutFail` against
 * `primitives/Deadline.ts` `withDeadline`, alternated round by round in one process (A, B, A, B …)
 * so the machine's load falls on both alike. Each call wraps work that suspends once on a real
 * macrotask (as a run's SQL and HTTP do) and is met long before its 120 s deadline, `--inflight`
 * at once (64, as GLOBAL_CONCURRENCY in the bench); the bare work is measured too and subtracted.
 *
 *   bun bench/tools/deadlineCost.ts --calls=20000 --rounds=5
 */
import { Duration, Effect } from "effect"
import { withDeadline } from "../../src/primitives/Deadline.js"

const arg = (name: string, fallback: number) => Number(process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1] ?? fallback)
const calls = arg("calls", 20_000)
const rounds = arg("rounds", 5)
const inflight = arg("inflight", 64)
const deadline = Duration.seconds(120)

class Late {
  readonly _tag = "Late"
}

const work = Effect.async<number>((resume) => {
  setImmediate(() => resume(Effect.succeed(1)))
})

const variants = {
  bare: work,
  timeoutFail: work.pipe(Effect.timeoutFail({ duration: deadline, onTimeout: () => new Late() })),
  withDeadline: work.pipe(withDeadline({ duration: deadline, onTimeout: () => new Late() })),
} as const

const cpuPerCall = (effect: Effect.Effect<number, Late>) =>
  Effect.suspend(() => {
    ;(globalThis as { Bun?: { gc: (force: boolean) => void } }).Bun?.gc(true)
    const c0 = process.cpuUsage()
    return Effect.as(
      Effect.forEach(Array.from({ length: calls }), () => effect, { concurrency: inflight, discard: true }),
      undefined,
    ).pipe(
      Effect.map(() => {
        const c = process.cpuUsage(c0)
        return ((c.user + c.system) / calls) // µs per call
      }),
    )
  })

const main = Effect.gen(function* () {
  for (const v of Object.values(variants)) yield* cpuPerCall(v) // warm-up
  const rows: Array<Record<string, number>> = []
  for (let r = 0; r < rounds; r++) {
    const row: Record<string, number> = {}
    const order = r % 2 === 0 ? (["bare", "timeoutFail", "withDeadline"] as const) : (["bare", "withDeadline", "timeoutFail"] as const)
    for (const name of order) row[name] = yield* cpuPerCall(variants[name])
    rows.push(row)
    console.log(
      `round ${r + 1}: bare ${row.bare!.toFixed(1)} µs, timeoutFail +${(row.timeoutFail! - row.bare!).toFixed(1)} µs, withDeadline +${(row.withDeadline! - row.bare!).toFixed(1)} µs per call`,
    )
  }
  const mean = (k: string) => rows.reduce((s, r) => s + r[k]! - r.bare!, 0) / rows.length
  console.log(`mean over ${rounds} rounds (${calls} calls, ${inflight} in flight): timeoutFail +${mean("timeoutFail").toFixed(1)} µs, withDeadline +${mean("withDeadline").toFixed(1)} µs per call`)
})

Effect.runPromise(main)
