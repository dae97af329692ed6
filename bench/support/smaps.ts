/**
 * A process's resident memory by mapping name, from /proc/<pid>/smaps (Linux): the binary, the heap,
 * anonymous memory, stacks…, largest first (bench/tools/idleSmaps.ts, tickSmaps.ts).
 */
import { readFileSync } from "node:fs"

export const smapsByName = (pid: number) => {
  const out = new Map<string, { rss: number; anon: number; count: number }>()
  let name = ""
  for (const line of readFileSync(`/proc/${pid}/smaps`, "utf8").split("\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (head !== null) {
      // Anonymous mappings by permission: rwxp is JavaScriptCore's JIT code.
      name = head[2] === "" ? `[anon ${head[1]}]` : (head[2] ?? "")
      const e = out.get(name) ?? { rss: 0, anon: 0, count: 0 }
      e.count++
      out.set(name, e)
      continue
    }
    const m = /^(Rss|Anonymous):\s+(\d+) kB/.exec(line)
    if (m !== null) {
      const e = out.get(name)
      if (e !== undefined) {
        if (m[1] === "Rss") e.rss += Number(m[2])
        else e.anon += Number(m[2])
      }
    }
  }
  return [...out.entries()].sort((a, b) => b[1].rss - a[1].rss)
}
