/**
 * Sums a CPU profile's samples between two instants (issue 16): where the main thread's time went in
 * the measured window of `profileRun.ts`, leaving out the seeding and the warm-up. Self time by
 * function and by where its code comes from (Effect, @effect/sql, pg, this repository, the runtime),
 * and inclusive time for the functions that hold most, each per run.
 *
 *   bun --cpu-prof --cpu-prof-dir=/tmp/prof bench/tools/profileRun.ts --runs=3000 2> /tmp/prof/err
 *   bun bench/tools/profileWindow.ts /tmp/prof/*.cpuprofile --from=T0 --to=T1 --runs=3000 [--top=40]
 *
 * T0 and T1 are the epoch ms profileRun prints on stderr ("measuring … at T0", "measured at T1").
 * Samples are wall-clock ticks of the main thread: time spent inside a system call counts too.
 */
import { readFileSync } from "node:fs"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}
interface Profile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1]
const file = process.argv.slice(2).find((a) => !a.startsWith("--"))
if (file === undefined) throw new Error("usage: profileWindow.ts FILE.cpuprofile --from=EPOCH_MS --to=EPOCH_MS --runs=N")
const fromUs = Number(arg("from") ?? 0) * 1000
const toUs = arg("to") === undefined ? Number.POSITIVE_INFINITY : Number(arg("to")) * 1000
const runs = Number(arg("runs") ?? 1)
const top = Number(arg("top") ?? 40)

const profile = JSON.parse(readFileSync(file, "utf8")) as Profile
const byId = new Map(profile.nodes.map((n) => [n.id, n]))
const parent = new Map<number, number>()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

const origin = (url: string): string => {
  if (url === "") return "runtime (native, GC, idle)"
  if (url.includes("/effect/")) return "effect"
  if (url.includes("@effect/sql")) return "@effect/sql"
  if (url.includes("@effect/")) return "@effect/* other"
  if (/node_modules\/(pg|pg-protocol|pg-pool|pg-types)\//.test(url)) return "pg"
  if (url.includes("node_modules")) return "other dependencies"
  if (url.includes("/src/")) return "src (ours)"
  if (url.includes("/bench/")) return "bench"
  return `builtin ${url.split("/").pop()}`
}
const label = (n: ProfileNode) => `${n.callFrame.functionName || "(anonymous)"} ${n.callFrame.url.replace(/.*node_modules\//, "").replace(/.*\/(src|bench)\//, "$1/")}:${n.callFrame.lineNumber + 1}`

const self = new Map<string, number>()
const inclusive = new Map<string, number>()
const byOrigin = new Map<string, number>()
let windowUs = 0
let t = profile.startTime
for (let i = 0; i < profile.samples.length; i++) {
  const dt = profile.timeDeltas[i] ?? 0
  t += dt
  if (t < fromUs || t > toUs) continue
  windowUs += dt
  const leaf = byId.get(profile.samples[i]!)
  if (leaf === undefined) continue
  self.set(label(leaf), (self.get(label(leaf)) ?? 0) + dt)
  byOrigin.set(origin(leaf.callFrame.url), (byOrigin.get(origin(leaf.callFrame.url)) ?? 0) + dt)
  // Inclusive: every distinct frame on the stack once.
  const seen = new Set<string>()
  for (let id: number | undefined = leaf.id; id !== undefined; id = parent.get(id)) {
    const key = label(byId.get(id)!)
    if (seen.has(key)) continue
    seen.add(key)
    inclusive.set(key, (inclusive.get(key) ?? 0) + dt)
  }
}

const perRun = (us: number) => (us / 1000 / runs).toFixed(4)
const print = (title: string, m: Map<string, number>, n: number) => {
  console.log(`\n${title} (ms per run)`)
  for (const [k, v] of [...m].sort((a, b) => b[1] - a[1]).slice(0, n)) console.log(`${perRun(v).padStart(9)}  ${k}`)
}
console.log(`window ${(windowUs / 1000).toFixed(1)} ms over ${runs} runs: ${perRun(windowUs)} ms per run`)
print("self time by origin", byOrigin, 20)
print("self time by function", self, top)
print("inclusive time by function", inclusive, top)
