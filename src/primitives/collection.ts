/**
 * Garbage collections on demand, where the runtime offers them (Bun: JavaScriptCore's); nothing
 * elsewhere (the Node tests). Both are synchronous and stop the event loop for their length. For the
 * few places that know a large amount of garbage has just been made and long-lived objects are about
 * to be allocated beside it (issue 16 item 5): JavaScriptCore does not compact, so a block holding one
 * survivor stays in RSS, and its own pace lets long-lived objects spread over many blocks.
 */
interface Jsc {
  readonly edenGC: () => void
}

interface BunGc {
  readonly gc: (force: boolean) => void
}

const bunJsc = (): Jsc | undefined => {
  if ((globalThis as { Bun?: BunGc }).Bun === undefined) return undefined
  // A variable specifier: the type checker has no declarations for Bun's own modules.
  const specifier = "bun:jsc"
  return require(specifier) as Jsc
}

let jsc: Jsc | undefined | null = null
const runtime = (): Jsc | undefined => {
  if (jsc === null) jsc = bunJsc()
  return jsc
}

/** An eden collection: only the objects allocated since the last collection (about 10–15 ms after a page of
 * 2,000 stored missions, measured). */
export const edenCollection = (): void => runtime()?.edenGC()

/**
 * A full collection (`Bun.gc(true)`, as src/layers/memoryTrim.ts collects): every object, about 80 ms
 * for a heap of 20–35 MB on the loaded 2-core machine.
 */
export const fullCollection = (): void => {
  ;(globalThis as { Bun?: BunGc }).Bun?.gc(true)
}
