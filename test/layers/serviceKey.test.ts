import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { Effect, Option, Redacted } from "effect"
import { embeddedServiceKey } from "../../src/layers/serviceKey.js"

const withTempDir = <A>(f: (dir: string) => Effect.Effect<A, unknown>) =>
  Effect.acquireUseRelease(
    Effect.sync(() => mkdtempSync(join(tmpdir(), "mana-ai-key-"))),
    (dir) => f(join(dir, "data")),
    (dir) => Effect.sync(() => rmSync(dir, { recursive: true, force: true })),
  )

describe("embedded service key", () => {
  it.effect("unset: a random key is written to <data>/service-key with mode 0600 and reused by the next start", () =>
    withTempDir((dir) =>
      Effect.gen(function* () {
        const first = yield* embeddedServiceKey(dir, Option.none())
        const path = join(dir, "service-key")
        expect(first.from).toBe(path)
        expect(statSync(path).mode & 0o777).toBe(0o600)
        expect(Redacted.value(first.key).length).toBeGreaterThanOrEqual(32)
        expect(readFileSync(path, "utf8").trim()).toBe(Redacted.value(first.key))
        const second = yield* embeddedServiceKey(dir, Option.none())
        expect(Redacted.value(second.key)).toBe(Redacted.value(first.key))
      }),
    ))

  it.effect("a stored key too short to trust is replaced", () =>
    withTempDir((dir) =>
      Effect.gen(function* () {
        yield* embeddedServiceKey(dir, Option.none())
        const path = join(dir, "service-key")
        writeFileSync(path, "short\n", { mode: 0o644 })
        const replaced = yield* embeddedServiceKey(dir, Option.none())
        expect(Redacted.value(replaced.key)).not.toBe("short")
        expect(statSync(path).mode & 0o777).toBe(0o600)
      }),
    ))

  it.effect("MANA_SERVICE_KEY set: used as it is, nothing written", () =>
    withTempDir((dir) =>
      Effect.gen(function* () {
        const key = Redacted.make("configured-key-0123456789")
        const source = yield* embeddedServiceKey(dir, Option.some(key))
        expect(source).toEqual({ key, from: "MANA_SERVICE_KEY" })
        expect(existsSync(join(dir, "service-key"))).toBe(false)
      }),
    ))
})
