/**
 * The JIT policy's state (issue 16 item 5): the thresholds raised at start come back to normal only once
 * the process serves and has work, whichever comes first, and once; a process that never raised them
 * (tests, bench tools composing the layers) is left alone. The running process: `test/e2e/process.test.ts`.
 */
import { describe, expect, it } from "vitest"
import { EMBEDDED_STARTUP_JIT_SCALE, makeJitPolicy, STARTUP_JIT_SCALE } from "../../src/layers/jitPolicy.js"

const recorded = () => {
  const calls: Array<number> = []
  return { calls, policy: makeJitPolicy((scale) => calls.push(scale)) }
}

describe("the JIT policy", () => {
  it("stays raised while the process serves with nothing to do; work puts it back, once", () => {
    const { calls, policy } = recorded()
    policy.raiseForStartup()
    expect(calls).toEqual([STARTUP_JIT_SCALE])
    policy.startupDone()
    expect(policy.isStartupDone()).toBe(true)
    expect(calls).toEqual([STARTUP_JIT_SCALE])
    policy.workBegins()
    expect(calls).toEqual([STARTUP_JIT_SCALE, 1])
    policy.workBegins()
    policy.startupDone()
    expect(calls).toEqual([STARTUP_JIT_SCALE, 1])
  })

  it("work during start-up (the first discovery) waits for the process to serve", () => {
    const { calls, policy } = recorded()
    policy.raiseForStartup()
    policy.workBegins()
    expect(calls).toEqual([STARTUP_JIT_SCALE])
    expect(policy.isStartupDone()).toBe(false)
    policy.startupDone()
    expect(calls).toEqual([STARTUP_JIT_SCALE, 1])
  })

  it("embedded mode: the milder factor once the mode is known, the normal one as the process serves", () => {
    const { calls, policy } = recorded()
    policy.raiseForStartup()
    policy.embeddedDatabaseStarts()
    expect(calls).toEqual([STARTUP_JIT_SCALE, EMBEDDED_STARTUP_JIT_SCALE])
    policy.startupDone()
    expect(calls).toEqual([STARTUP_JIT_SCALE, EMBEDDED_STARTUP_JIT_SCALE, 1])
    policy.workBegins()
    expect(calls).toEqual([STARTUP_JIT_SCALE, EMBEDDED_STARTUP_JIT_SCALE, 1])
  })

  it("never raised: serving and work change nothing", () => {
    const { calls, policy } = recorded()
    policy.embeddedDatabaseStarts()
    policy.startupDone()
    policy.workBegins()
    expect(calls).toEqual([])
    expect(policy.isStartupDone()).toBe(true)
  })

  it("without Bun's setJITPolicy (Node) it does nothing", () => {
    const policy = makeJitPolicy(undefined)
    policy.raiseForStartup()
    policy.startupDone()
    policy.workBegins()
    expect(policy.isStartupDone()).toBe(true)
  })
})
