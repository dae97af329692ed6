/**
 * effect's FastCheck module is a stub in the Bun process (issue 16 item 5, src/layers/withoutFastCheck.ts):
 * the stub names everything fast-check exports, each name fails loudly when called, and a Bun
 * process that imports the stub first loads effect/Schema without a single fast-check module, from
 * any working directory. (That the running service loads none: test/e2e/process.test.ts.)
 */
import { execFileSync } from "node:child_process"
import { mkdtempSync, rmSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { fileURLToPath } from "node:url"
import * as fc from "fast-check"
import { describe, expect, it } from "vitest"
import { FAST_CHECK_EXPORTS, fastCheckStubExports, unavailableMessage } from "../../src/layers/fastCheckStub.js"
import { isEffectFastCheckImport } from "../../src/layers/withoutFastCheck.js"
import { BUN } from "../support/ManaProcess.js"

const PROBE = fileURLToPath(new URL("../support/fastCheckStubProbe.ts", import.meta.url))

describe("effect's FastCheck module stubbed in the Bun process", () => {
  it("names every export of the installed fast-check", () => {
    expect([...FAST_CHECK_EXPORTS].sort()).toEqual(Object.keys(fc).filter((k) => k !== "default").sort())
  })

  it("each name throws, called or constructed, naming itself and why", () => {
    const stub = fastCheckStubExports() as Record<string, new () => unknown>
    expect(Object.keys(stub)).toEqual([...FAST_CHECK_EXPORTS])
    expect(() => (stub.integer as unknown as () => unknown)()).toThrow(unavailableMessage("integer"))
    expect(() => new stub.Arbitrary!()).toThrow("fast-check.Arbitrary: fast-check is not loaded in the mana-ai process")
  })

  it("answers only effect's own import of ./FastCheck.js", () => {
    expect(isEffectFastCheckImport("./FastCheck.js", "/app/node_modules/effect/dist/esm/Schema.js")).toBe(true)
    expect(isEffectFastCheckImport("./FastCheck.js", "/app/node_modules/effect/dist/cjs/Arbitrary.js")).toBe(true)
    expect(isEffectFastCheckImport("./FastCheck.js", "/app/src/domain/FastCheck.ts")).toBe(false)
    expect(isEffectFastCheckImport("./FastCheck.js", "/app/node_modules/other/dist/esm/x.js")).toBe(false)
    expect(isEffectFastCheckImport("./Schema.js", "/app/node_modules/effect/dist/esm/Arbitrary.js")).toBe(false)
  })

  it("in Bun, from another working directory: effect/Schema loads no fast-check module, and an arbitrary fails loudly", () => {
    const cwd = mkdtempSync(join(tmpdir(), "mana-no-fast-check-"))
    try {
      const out = execFileSync(BUN, [PROBE], { cwd, encoding: "utf8", timeout: 60_000 })
      const result = JSON.parse(out.trim().split("\n").at(-1)!) as {
        modules: number
        schemaLoaded: boolean
        fastCheck: ReadonlyArray<string>
        error: string
      }
      expect(result.schemaLoaded).toBe(true)
      expect(result.fastCheck).toEqual([])
      expect(result.error).toBe(unavailableMessage("string"))
    } finally {
      rmSync(cwd, { recursive: true, force: true })
    }
  }, 90_000)
})
