/**
 * Run by Bun (`test/layers/withoutFastCheck.test.ts`), from any working directory: main.ts's
 * stub first, then what the service imports that reaches effect's FastCheck module, and a call
 * that needs fast-check. Prints one JSON line: the fast-check modules loaded, and the error.
 */
import "../../src/layers/withoutFastCheck.js"
import { createRequire } from "node:module"

const Schema = await import("effect/Schema")
const Arbitrary = await import("effect/Arbitrary")
let error = ""
try {
  Arbitrary.make(Schema.String)
} catch (e) {
  error = e instanceof Error ? e.message : String(e)
}
const loaded = Object.keys(createRequire(import.meta.url).cache)
process.stdout.write(
  `${JSON.stringify({
    modules: loaded.length,
    schemaLoaded: loaded.some((p) => /[\\/]effect[\\/]dist[\\/]esm[\\/]Schema\.js$/.test(p)),
    fastCheck: loaded.filter((p) => /[\\/](fast-check|pure-rand)[\\/]/.test(p)),
    error,
  })}\n`,
)
