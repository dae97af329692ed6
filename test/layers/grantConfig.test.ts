/**
 * MANA_AI_PRIVATE_KEY_FILE / MANA_AI_PRIVATE_KEY_PEM (SPEC §10, §15): unset means grants off; set but
 * unreadable or not a PKCS#8 RSA-2048 key stops the start naming the variable, never quoting the key.
 * The last case spawns the real Bun process to see the exit code and the one stderr line.
 */
import { generateKeyPairSync } from "node:crypto"
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { describe, expect, it } from "@effect/vitest"
import { ConfigProvider, Effect, Either, Option, Redacted } from "effect"
import { loadStartupConfig } from "../../src/layers/startupConfig.js"
import { generateRunnerKeyPair } from "../support/grantFixtures.js"
import { startManaProcess } from "../support/ManaProcess.js"

const load = (env: Record<string, string>) =>
  Effect.runSync(Effect.either(loadStartupConfig).pipe(Effect.withConfigProvider(ConfigProvider.fromMap(new Map(Object.entries(env))))))

const runner = await generateRunnerKeyPair()
const dir = mkdtempSync(join(tmpdir(), "mana-grant-key-"))
const keyFile = join(dir, "runner.pem")
writeFileSync(keyFile, runner.privatePem, { mode: 0o600 })
const pemBody = runner.privatePem.split("\n")[5]!

const pkcs8 = (key: ReturnType<typeof generateKeyPairSync>["privateKey"]) => key.export({ type: "pkcs8", format: "pem" }).toString()
const ecKey = pkcs8(generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey)
const rsa1024 = pkcs8(generateKeyPairSync("rsa", { modulusLength: 1024 }).privateKey)
const pkcs1 = generateKeyPairSync("rsa", { modulusLength: 2048 }).privateKey.export({ type: "pkcs1", format: "pem" }).toString()

describe("the Mission Grant key", () => {
  it("unset or empty: grants are off", () => {
    for (const env of [{}, { MANA_AI_PRIVATE_KEY_FILE: "", MANA_AI_PRIVATE_KEY_PEM: "  " }]) {
      const out = load(env)
      expect(Either.isRight(out) && Option.isNone(out.right.grant.runnerKey)).toBe(true)
    }
  })

  it("a PKCS#8 RSA-2048 key from the file, from the PEM, and from a PEM with escaped newlines", () => {
    const cases: ReadonlyArray<[Record<string, string>, string]> = [
      [{ MANA_AI_PRIVATE_KEY_FILE: keyFile }, "MANA_AI_PRIVATE_KEY_FILE"],
      [{ MANA_AI_PRIVATE_KEY_PEM: runner.privatePem }, "MANA_AI_PRIVATE_KEY_PEM"],
      [{ MANA_AI_PRIVATE_KEY_PEM: runner.privatePem.replace(/\n/g, "\\n") }, "MANA_AI_PRIVATE_KEY_PEM"],
    ]
    for (const [env, source] of cases) {
      const out = load(env)
      if (Either.isLeft(out)) throw new Error(out.left.message)
      const key = Option.getOrThrow(out.right.grant.runnerKey)
      expect(key.source).toBe(source)
      // PKCS#8 DER of RSA-2048 is about 1.2 KB; it stays redacted when printed.
      expect(Redacted.value(key.pkcs8).length).toBeGreaterThan(1100)
      expect(String(key.pkcs8)).not.toContain(pemBody)
    }
  })

  const refused: ReadonlyArray<[string, Record<string, string>, RegExp]> = [
    ["a file that does not exist", { MANA_AI_PRIVATE_KEY_FILE: join(dir, "missing.pem") }, /MANA_AI_PRIVATE_KEY_FILE must name a readable file/],
    ["a file that holds no PEM", { MANA_AI_PRIVATE_KEY_FILE: join(dir) }, /MANA_AI_PRIVATE_KEY_FILE/],
    ["a PEM that is not a key", { MANA_AI_PRIVATE_KEY_PEM: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----" }, /MANA_AI_PRIVATE_KEY_PEM must hold .* does not parse/],
    ["text that is no PEM at all", { MANA_AI_PRIVATE_KEY_PEM: "hunter2" }, /MANA_AI_PRIVATE_KEY_PEM must hold .*no PKCS#8 PEM block/],
    ["an EC key", { MANA_AI_PRIVATE_KEY_PEM: ecKey }, /MANA_AI_PRIVATE_KEY_PEM must hold .*ec key, not RSA/],
    ["an RSA-1024 key", { MANA_AI_PRIVATE_KEY_PEM: rsa1024 }, /MANA_AI_PRIVATE_KEY_PEM must hold .*1024 bits, not 2048/],
    ["a PKCS#1 RSA key", { MANA_AI_PRIVATE_KEY_PEM: pkcs1 }, /MANA_AI_PRIVATE_KEY_PEM must hold .*no PKCS#8 PEM block/],
    ["both variables", { MANA_AI_PRIVATE_KEY_FILE: keyFile, MANA_AI_PRIVATE_KEY_PEM: runner.privatePem }, /both set: set only one/],
  ]
  for (const [name, env, expected] of refused) {
    it(`refuses ${name}, naming the variable and never quoting the key`, () => {
      const out = load(env)
      if (Either.isRight(out)) throw new Error("accepted")
      expect(out.left.message).toMatch(expected)
      expect(out.left.message).not.toContain(pemBody)
      expect(out.left.message).not.toContain("hunter2")
      for (const pem of [ecKey, rsa1024, pkcs1]) expect(out.left.message).not.toContain(pem.split("\n")[2]!)
    })
  }

  it("the real process stops with exit code 1 and one stderr line naming the variable", async () => {
    const bad = await startManaProcess({ env: { MANA_AI_PRIVATE_KEY_PEM: rsa1024 } })
    const exited = await bad.exited
    expect(exited.code).toBe(1)
    const lines = bad.stderr().trim().split("\n")
    expect(lines).toHaveLength(1)
    expect(lines[0]).toMatch(/MANA_AI_PRIVATE_KEY_PEM must hold a PKCS#8 PEM RSA-2048 private key.*1024 bits/)
    expect(bad.stderr() + bad.stdout()).not.toContain(rsa1024.split("\n")[2]!)
  }, 60_000)
})
