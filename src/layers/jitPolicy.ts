/**
 * JavaScriptCore's tier-up thresholds while the process starts and until it has work (issue 16 item 5).
 * Start-up code runs once, yet enough of it runs often enough (module bodies, schema and layer
 * construction, Effect's run loop) for JavaScriptCore to compile it with its optimizing tiers: JIT code
 * and metadata the idle process then carries, and the DFG and FTL compilers' own code, about 5 MB of
 * Bun's binary that an idle process otherwise never reads (`BUN_JSC_useDFGJIT=0` read alike). main.ts
 * raises the thresholds first thing (`startupJit.ts`, before any other module's body runs:
 * Bun.unsafe.setJITPolicy, STARTUP_JIT_SCALE times their normal value); they come back to normal once
 * the process serves (`startupDone`) and has work (`workBegins`: a run enters, or a discovery pass or
 * the first pass's read of stored missions applies a page), so the runs' code is compiled as always.
 * A process that serves with nothing to do (its timers, an empty tick, /metrics) stays in the lower
 * tiers. A process that never raised them (tests, bench tools composing the layers) is left alone.
 * In embedded mode PGlite starts inside the process and serves every query from it, so there the
 * factor drops to EMBEDDED_STARTUP_JIT_SCALE once the mode is known and the normal thresholds come
 * back when the process serves, work or not (at STARTUP_JIT_SCALE the embedded start took 5.9 s
 * against 5.0 s, four alternating starts each).
 * Outside Bun (the Node tests) it does nothing. Beside this, `npm start` runs Bun with the FTL tier off
 * (`BUN_JSC_useFTLJIT=0` unless the operator sets it; package.json, README "Configuration"): the runs'
 * hot code is then compiled by the DFG tier only, which holds 5–7 MB less after 1,000 runs.
 */
interface BunUnsafe {
  readonly unsafe?: { readonly setJITPolicy?: (scale: number) => void }
}

/**
 * The thresholds' factor until then. At 100 (the first value) start-up still made about 20 optimizing
 * compiles (Effect's run loop: `getFiberRef`, `shouldYield`, …), enough to read the compilers' code:
 * idle RSS 69.4 MB against 63.1 MB at this value (idleSmaps, two each).
 */
export const STARTUP_JIT_SCALE = 100_000

/** The factor while an embedded start-up runs (issue 16's first value for every start-up). */
export const EMBEDDED_STARTUP_JIT_SCALE = 100

/** The policy's state around a `setJITPolicy`; the process has one (below), tests make their own. */
export const makeJitPolicy = (setJitPolicy: ((scale: number) => void) | undefined) => {
  let raised = false
  let done = false
  let working = false
  const putBack = (): void => {
    if (raised && done && working) {
      raised = false
      setJitPolicy?.(1)
    }
  }
  return {
    /** main.ts's first step (through startupJit.ts). */
    raiseForStartup: (): void => {
      if (setJitPolicy === undefined) return
      raised = true
      setJitPolicy(STARTUP_JIT_SCALE)
    },
    /** Embedded mode: the milder factor for the rest of start-up, then the normal one as the process serves. */
    embeddedDatabaseStarts: (): void => {
      if (!raised) return
      setJitPolicy?.(EMBEDDED_STARTUP_JIT_SCALE)
      working = true
      putBack()
    },
    isStartupDone: (): boolean => done,
    startupDone: (): void => {
      done = true
      putBack()
    },
    workBegins: (): void => {
      if (working) return
      working = true
      putBack()
    },
  }
}

const policy = makeJitPolicy((globalThis as { Bun?: BunUnsafe }).Bun?.unsafe?.setJITPolicy)

/** main.ts's first step (through startupJit.ts). */
export const raiseForStartup = policy.raiseForStartup

/** Embedded mode is starting (launch.ts, once the configuration is read). */
export const embeddedDatabaseStarts = policy.embeddedDatabaseStarts

/** Whether the process serves (`startupDone` was called): `memoryTrim.ts` waits for it before its first collection. */
export const isStartupDone = policy.isStartupDone

/** The process serves; the normal thresholds come back now if work has begun. */
export const startupDone = policy.startupDone

/** Work arrived; the normal thresholds come back now if the process serves. Cheap after the first call. */
export const workBegins = policy.workBegins
