/**
 * Preloaded into a runner by bench/tools/discoveryMemory.ts (`BUN_OPTIONS=--preload …`): the heap's
 * size sampled every 50 ms (its peak), its size and capacity, written to HEAP_SAMPLER_OUT every 250 ms;
 * on SIGUSR2 a full collection and the live object counts by type to HEAP_SAMPLER_OUT.types.
 */
import { writeFileSync } from "node:fs"

// A variable specifier: the type checker has no declarations for Bun's own modules.
const specifier = "bun:jsc"
const jsc = (await import(specifier)) as {
  heapSize: () => number
  heapStats: () => { heapSize: number; heapCapacity: number; objectTypeCounts: Record<string, number> }
  memoryUsage: () => { current: number; peak: number; currentCommit: number; peakCommit: number }
  generateHeapSnapshotForDebugging: () => { nodes: Array<number | string>; nodeClassNames: Array<string> }
}
const out = `${process.env.HEAP_SAMPLER_OUT ?? "/tmp/heapSampler.json"}${process.env.HEAP_SAMPLER_BY_PID === undefined ? "" : `.${process.pid}`}`
let peakHeap = 0
let peakCap = 0
let n = 0
setInterval(() => {
  peakHeap = Math.max(peakHeap, jsc.heapSize())
  if (++n % 5 !== 0) return
  const s = jsc.heapStats()
  peakCap = Math.max(peakCap, s.heapCapacity)
  writeFileSync(out, JSON.stringify({ peakHeap, peakCap, heapSize: s.heapSize, heapCapacity: s.heapCapacity }))
}, 50).unref()

process.on("SIGUSR2", () => {
  if (process.env.HEAP_SAMPLER_NO_GC === undefined) (globalThis as unknown as { Bun: { gc: (force: boolean) => void } }).Bun.gc(true)
  const s = jsc.heapStats() as ReturnType<typeof jsc.heapStats> & { extraMemorySize: number; mimalloc?: unknown }
  const top = Object.entries(s.objectTypeCounts).sort((a, b) => b[1] - a[1]).slice(0, 40)
  writeFileSync(
    `${out}.types`,
    JSON.stringify({ heapSize: s.heapSize, heapCapacity: s.heapCapacity, extraMemorySize: s.extraMemorySize, mimalloc: jsc.memoryUsage(), top }),
  )
  // With HEAP_SAMPLER_MIMALLOC: mimalloc's statistics (bins by block size, pages, arenas) on standard
  // error, between marker lines (tickSmaps --stderr keeps them).
  if (process.env.HEAP_SAMPLER_MIMALLOC !== undefined) {
    process.stderr.write(`--- mimalloc after a full collection (heap ${s.heapSize} live, capacity ${s.heapCapacity})\n`)
    ;(globalThis as unknown as { Bun: { unsafe: { mimallocDump: () => void } } }).Bun.unsafe.mimallocDump()
  }
  // With HEAP_SAMPLER_CELLS: every live cell's address, class and size (a GC-debugging snapshot: nodes
  // of 7 fields, the address the 6th), so a reader can tell which cells are new since the last reading
  // and how full each 16 KB block is.
  if (process.env.HEAP_SAMPLER_CELLS !== undefined) {
    const snapshot = jsc.generateHeapSnapshotForDebugging()
    const cells: Array<[string, string, number]> = []
    for (let i = 0; i < snapshot.nodes.length; i += 7) {
      cells.push([snapshot.nodes[i + 5] as string, snapshot.nodeClassNames[snapshot.nodes[i + 2] as number]!, snapshot.nodes[i + 1] as number])
    }
    writeFileSync(`${out}.cells`, JSON.stringify(cells))
    if (process.env.HEAP_SAMPLER_CELLS === "snapshot") writeFileSync(`${out}.snapshot`, JSON.stringify(snapshot))
  }
})
