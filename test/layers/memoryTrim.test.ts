import { describe, expect, it } from "vitest"
import { makeQuietCollection, makeTrimmer, QUIET_GROWTH_BYTES, STILL_CHANGE_BYTES } from "../../src/layers/memoryTrim.js"

const MB = 2 ** 20

/** A heap whose size the test sets; a collection brings it back to the live size. */
const fakeHeap = (live: number) => {
  const heap = { size: live, live, collections: 0 }
  const trimmer = makeTrimmer(
    () => heap.size,
    () => {
      heap.collections++
      heap.size = heap.live
    },
  )
  return { heap, check: trimmer }
}

describe("the memory trimmer (issue 16 item 5)", () => {
  it("collects once the runs are over and the heap holds their garbage", () => {
    const { heap, check } = fakeHeap(30 * MB)
    // A tick's runs: the heap grows while runs are under way; nothing is collected meanwhile.
    for (const size of [60, 110, 170]) {
      heap.size = size * MB
      expect(check(true)).toBe(false)
    }
    // Runs waiting on the LLM: the heap is still, but a collection would stop their event loop.
    expect(check(true)).toBe(false)
    expect(check(true)).toBe(false)
    expect(heap.collections).toBe(0)
    // The runs are over, the heap is still: the garbage goes.
    expect(check(false)).toBe(true)
    expect(heap.collections).toBe(1)
    expect(heap.size).toBe(30 * MB)
    // Quiet and nothing new: no further collection.
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(false)
    expect(heap.collections).toBe(1)
  })

  it("a collection deferred to the event loop (Bun.shrink) is asked for once; the floor it leaves is read at the next check", () => {
    const heap = { size: 30 * MB, collections: 0, pending: false }
    const check = makeTrimmer(
      () => heap.size,
      () => {
        heap.collections++
        heap.pending = true
      },
    )
    heap.size = 170 * MB
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(true)
    // Not yet run: the heap is as big as before, and no second collection is asked for.
    expect(check(false)).toBe(false)
    expect(heap.collections).toBe(1)
    // It ran: the lower size becomes the floor, so a little growth after it is left alone…
    heap.size = 30 * MB
    expect(check(false)).toBe(false)
    heap.size = 30 * MB + QUIET_GROWTH_BYTES / 2
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(false)
    expect(heap.collections).toBe(1)
    // …and the garbage of the next busy spell is collected again.
    heap.size = 90 * MB
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(true)
    expect(heap.collections).toBe(2)
  })

  it("waits while the heap is still changing (a discovery pass, a request) even with no run under way", () => {
    const { heap, check } = fakeHeap(30 * MB)
    heap.size = 80 * MB
    expect(check(false)).toBe(false)
    heap.size = 80 * MB + 2 * STILL_CHANGE_BYTES
    expect(check(false)).toBe(false)
    // Still now.
    expect(check(false)).toBe(true)
  })

  it("a heap that shrank since the last check (JSC's own collector at work) counts as still", () => {
    const { heap, check } = fakeHeap(30 * MB)
    heap.size = 120 * MB
    expect(check(false)).toBe(false)
    heap.size = 100 * MB
    expect(check(false)).toBe(true)
    expect(heap.size).toBe(30 * MB)
  })

  it("leaves a little garbage alone: an idle process's timers do not cause a collection every check", () => {
    const { heap, check } = fakeHeap(30 * MB)
    heap.size = 30 * MB + QUIET_GROWTH_BYTES / 2
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(false)
    expect(heap.collections).toBe(0)
  })

  it("with firstAtOnce, the first collection (start-up's) needs no growth, only a quiet, still heap; later ones do", () => {
    const heap = { size: 30 * MB, collections: 0 }
    const check = makeTrimmer(
      () => heap.size,
      () => {
        heap.collections++
      },
      QUIET_GROWTH_BYTES,
      true,
    )
    // Start-up (busy) and a heap still changing: not yet.
    expect(check(true)).toBe(false)
    heap.size = 30 * MB + 2 * STILL_CHANGE_BYTES
    expect(check(false)).toBe(false)
    // Quiet and still, with less garbage than QUIET_GROWTH: the first collection all the same.
    expect(check(false)).toBe(true)
    heap.size = 30 * MB + QUIET_GROWTH_BYTES / 2
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(false)
    expect(heap.collections).toBe(1)
  })

  it("a live set that grew (more actors) becomes the new floor after its collection", () => {
    const { heap, check } = fakeHeap(30 * MB)
    heap.live = 60 * MB
    heap.size = 90 * MB
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(true)
    expect(heap.size).toBe(60 * MB)
    // The 60 MB that stayed live is the floor now: no collection for it.
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(false)
    expect(check(false)).toBe(false)
    expect(heap.collections).toBe(1)
  })
})

describe("what a quiet spell's collection calls (MEMORY_TRIM_CODE)", () => {
  /** A Bun whose calls the test counts; `withShrink: false` is a Bun without `shrink`. */
  const fakeBun = (withShrink = true) => {
    const calls: Array<string> = []
    const bun = {
      gc: (force: boolean) => void calls.push(force ? "gc(true)" : "gc(false)"),
      ...(withShrink ? { shrink: () => void calls.push("shrink") } : {}),
    }
    return { bun, calls }
  }

  it("by default every quiet spell drops the compiled code too (Bun.shrink), not only start-up's", () => {
    const { bun, calls } = fakeBun()
    const collect = makeQuietCollection(bun, true)
    expect([collect(), collect(), collect()]).toEqual(["shrink", "shrink", "shrink"])
    expect(calls).toEqual(["shrink", "shrink", "shrink"])
  })

  it("with MEMORY_TRIM_CODE=false only start-up's spell shrinks; later ones collect and keep the code", () => {
    const { bun, calls } = fakeBun()
    const collect = makeQuietCollection(bun, false)
    expect([collect(), collect(), collect()]).toEqual(["shrink", "collect", "collect"])
    expect(calls).toEqual(["shrink", "gc(true)", "gc(true)"])
  })

  it("a Bun without shrink gets a full collection every time", () => {
    const { bun, calls } = fakeBun(false)
    const collect = makeQuietCollection(bun, true)
    expect([collect(), collect()]).toEqual(["collect", "collect"])
    expect(calls).toEqual(["gc(true)", "gc(true)"])
  })
})
