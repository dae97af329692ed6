import { describe, expect, it } from "@effect/vitest"
import { WakeHeap } from "../../src/primitives/WakeHeap.js"

describe("WakeHeap", () => {
  it("hands out due wake-ups earliest first and keeps later ones", () => {
    const heap = new WakeHeap<string>()
    for (const [at, who] of [[30, "c"], [10, "a"], [50, "e"], [20, "b"], [40, "d"]] as const) heap.add(at, who)
    expect(heap.takeDue(35).map((e) => e.target)).toEqual(["a", "b", "c"])
    expect(heap.peek()?.target).toBe("d")
    expect(heap.takeDue(100).map((e) => [e.at, e.target])).toEqual([[40, "d"], [50, "e"]])
    expect(heap.peek()).toBeUndefined()
  })

  it("a cancelled wake-up is never handed out, and the next live one is the earliest", () => {
    const heap = new WakeHeap<string>()
    const early = heap.add(5, "early")
    heap.add(9, "later")
    heap.cancel(early)
    expect(heap.peek()?.target).toBe("later")
    expect(heap.takeDue(100).map((e) => e.target)).toEqual(["later"])
  })

  it("taken entries are no longer live", () => {
    const heap = new WakeHeap<string>()
    const entry = heap.add(1, "x")
    expect(heap.takeDue(1)).toEqual([entry])
    expect(entry.live).toBe(false)
  })

  it("thousands of replaced wake-ups stay ordered through compaction", () => {
    const heap = new WakeHeap<number>()
    const current = new Map<number, ReturnType<typeof heap.add>>()
    // Each of 100 targets moves its wake-up 50 times (a pseudo-random order); only the last counts.
    let seed = 7
    const next = () => (seed = (seed * 48271) % 2147483647)
    for (let round = 0; round < 50; round++) {
      for (let target = 0; target < 100; target++) {
        const old = current.get(target)
        if (old !== undefined) heap.cancel(old)
        current.set(target, heap.add(next() % 100_000, target))
      }
    }
    const taken = heap.takeDue(Number.MAX_SAFE_INTEGER)
    expect(taken.map((e) => e.target).sort((a, b) => a - b)).toEqual([...current.keys()].sort((a, b) => a - b))
    expect(taken.map((e) => e.at)).toEqual([...current.values()].map((e) => e.at).sort((a, b) => a - b))
  })
})
