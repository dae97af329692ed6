/**
 * Start-up code runs once, yet enough of it runs often enough (module bodies, schema and layer
 * construction, the first discovery) for JavaScriptCore to compile it: JIT code and its metadata
 * that the idle process then carries (issue 16 item 5). Imported first by main.ts, so it runs before
 * any other module's body: until the process is up, JavaScriptCore's tier-up thresholds are
 * STARTUP_JIT_SCALE times their normal value (Bun.unsafe.setJITPolicy); `startupDone` puts them
 * back, so the runs' code is compiled as always. Outside Bun (the Node tests) it does nothing.
 */
interface BunUnsafe {
  readonly unsafe?: { readonly setJITPolicy?: (scale: number) => void }
}

export const STARTUP_JIT_SCALE = 100

const setJitPolicy = (globalThis as { Bun?: BunUnsafe }).Bun?.unsafe?.setJITPolicy

setJitPolicy?.(STARTUP_JIT_SCALE)

let done = false

/** Whether the process serves (`startupDone` was called): `memoryTrim.ts` waits for it before its first collection. */
export const isStartupDone = (): boolean => done

/** The normal JIT policy again (once the process serves). */
export const startupDone = (): void => {
  done = true
  setJitPolicy?.(1)
}
