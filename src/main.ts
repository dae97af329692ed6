/**
 * The entry: `bun src/main.ts` (`npm start`). Two modules whose bodies must run before the rest of
 * the process is even resolved, then the process itself (`launch.ts`) by `import()`: a static
 * import's whole graph is resolved and loaded before any module body runs.
 */
// First: its body lowers the JIT's eagerness before any other module's body runs.
import "./layers/startupJit.js"
// Second: effect's FastCheck module (fast-check, which effect/Schema imports) resolves to a stub.
import "./layers/withoutFastCheck.js"

await import("./launch.js")
