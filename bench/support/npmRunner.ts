/**
 * The runner as operators start it, for the bench's process measurements: `npm start` (so whatever
 * `npm start` runs and passes to Bun is measured too) as the runner role of `runnerUrl`, with
 * TICK_ENABLED=false (only the caller's ticks do work), PLANNER_MODE=json, LOG_LEVEL=warn and otherwise
 * defaults, but MEMORY_TRIM_CODE and BUN_JSC_useFTLJIT as the bench's environment sets them; `env` adds or
 * overrides variables. Killed when the scope closes (Bun first: SIGKILL does not
 * reach it through npm). Returns once `/ready` answers 200, with Bun's own pid and the service key.
 */
import { randomUUID } from "node:crypto"
import { Effect, Redacted, type Scope } from "effect"
import { eventually, type ManaProcess, request, startManaProcess } from "../../test/support/ManaProcess.js"
import { bunProcessUnder, killBunUnderNpm } from "./cpu.js"

export interface NpmRunner {
  readonly mana: ManaProcess
  /** The Bun process under npm (0 if none was found). */
  readonly pid: number
  readonly key: string
}

/** Variables of the runner's own that the bench passes on from its environment when set. */
const PASSED_ON = ["MEMORY_TRIM_CODE", "BUN_JSC_useFTLJIT"] as const

export const startNpmRunner = (options: {
  readonly runnerUrl: Redacted.Redacted<string>
  readonly llmUrl: string
  readonly cwd?: string
  readonly env?: Readonly<Record<string, string>>
}): Effect.Effect<NpmRunner, never, Scope.Scope> =>
  Effect.gen(function* () {
    const key = `bench-key-${randomUUID()}`
    const mana = yield* Effect.acquireRelease(
      Effect.promise(() =>
        startManaProcess({
          ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
          viaNpmStart: true,
          env: {
            SYNC_DATABASE_URL: Redacted.value(options.runnerUrl),
            MANA_LLM_URL: options.llmUrl,
            MANA_SERVICE_KEY: key,
            TICK_ENABLED: "false",
            PLANNER_MODE: "json",
            LOG_LEVEL: "warn",
            // The runner's memory trade-offs as the bench's environment sets them (README "Configuration"):
            // startManaProcess keeps every other variable of the runner's own out.
            ...Object.fromEntries(PASSED_ON.flatMap((k) => (process.env[k] === undefined ? [] : [[k, process.env[k]!]]))),
            ...options.env,
          },
        }),
      ),
      (p) => Effect.promise(() => killBunUnderNpm(p)),
    )
    yield* Effect.promise(() => eventually("the runner's /ready", 120_000, async () => (await request(mana, "GET", "/ready")).status === 200))
    return { mana, pid: bunProcessUnder(mana.child.pid ?? 0) ?? 0, key }
  })
