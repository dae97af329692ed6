/**
 * Preloaded into a Bun process under test (`BUN_OPTIONS="--preload <this file>"`): when the process
 * exits, writes the path of every module it loaded (Bun's `require.cache` holds ES modules too), one
 * a line, to `LOADED_MODULES_FILE`. `test/e2e/process.test.ts` reads it.
 */
import { writeFileSync } from "node:fs"
import { createRequire } from "node:module"

const file = process.env.LOADED_MODULES_FILE
if (file !== undefined && file !== "") {
  const cache = createRequire(import.meta.url).cache
  process.on("exit", () => writeFileSync(file, Object.keys(cache).join("\n")))
}
