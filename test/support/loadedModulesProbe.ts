/**
 * Preloaded into a Bun process under test (`BUN_OPTIONS="--preload <this file>"`): when the process
 * exits, writes the path of every module it loaded (Bun's `require.cache` holds ES modules too), one
 * a line, to `LOADED_MODULES_FILE`, then one line `setJITPolicy(<scale>) effect loaded: <yes|no>`
 * for each JIT policy the process set (`src/layers/startupJit.ts`), saying whether any of effect's
 * modules had run by then (effect's first module body creates `globalThis["effect/GlobalValue"]`).
 * `test/e2e/process.test.ts` reads it.
 */
import { writeFileSync } from "node:fs"
import { createRequire } from "node:module"

const file = process.env.LOADED_MODULES_FILE
if (file !== undefined && file !== "") {
  const cache = createRequire(import.meta.url).cache
  const policies: Array<string> = []
  const unsafe = (globalThis as { Bun?: { unsafe?: { setJITPolicy?: (scale: number) => void } } }).Bun?.unsafe
  const setJITPolicy = unsafe?.setJITPolicy
  if (unsafe !== undefined && setJITPolicy !== undefined) {
    unsafe.setJITPolicy = (scale: number) => {
      policies.push(`setJITPolicy(${scale}) effect loaded: ${"effect/GlobalValue" in globalThis ? "yes" : "no"}`)
      setJITPolicy(scale)
    }
  }
  process.on("exit", () => writeFileSync(file, [...Object.keys(cache), ...policies].join("\n")))
}
