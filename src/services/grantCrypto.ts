/**
 * The key-dependent half of Mission Grants (SPEC §15), on WebCrypto (the same in Bun and Node):
 * import the runner's RSA key, unwrap a grant's mission data key, decrypt `enc:1:` values.
 * Keys are non-extractable CryptoKeys; no function here logs, and no error carries a key or a plaintext.
 */
import { webcrypto } from "node:crypto"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import {
  type DecryptFailureReason,
  MAX_PLAINTEXT_BYTES,
  MISSION_KEY_BYTES,
  isCiphertext,
  parseCiphertext,
} from "../domain/grant.js"

export type CryptoKey = webcrypto.CryptoKey
const subtle = webcrypto.subtle

/** One encrypted value could not be read; `reason` names why (never the value). */
export class DecryptFailed extends Data.TaggedError("DecryptFailed")<{
  readonly reason: DecryptFailureReason
  readonly field: string
}> {
  override get message() {
    return `field ${this.field} could not be decrypted: ${this.reason}`
  }
}

/** The unwrap failed: RSA-OAEP refused (`wrap-rejected`) or the key is not 32 bytes (`malformed`). */
export class UnwrapFailed extends Data.TaggedError("UnwrapFailed")<{
  readonly reason: "wrap-rejected" | "malformed"
  readonly detail: string
}> {}

/** The runner's key (PKCS#8 DER of an RSA key) as a decrypt-only RSA-OAEP/SHA-256 key. */
export const importRunnerKey = (pkcs8Der: Uint8Array): Effect.Effect<CryptoKey, Error> =>
  Effect.tryPromise({
    try: () => subtle.importKey("pkcs8", pkcs8Der, { name: "RSA-OAEP", hash: "SHA-256" }, false, ["decrypt"]),
    catch: () => new Error("the key is not an RSA key usable for RSA-OAEP with SHA-256"),
  })

/** RSA-OAEP (SHA-256, no label) → the 32-byte mission data key, imported as a non-extractable AES-GCM decrypt key. */
export const unwrapMissionKey = (runnerKey: CryptoKey, wrapped: Uint8Array): Effect.Effect<CryptoKey, UnwrapFailed> =>
  Effect.gen(function* () {
    const raw = yield* Effect.tryPromise({
      try: () => subtle.decrypt({ name: "RSA-OAEP" }, runnerKey, wrapped),
      catch: () => new UnwrapFailed({ reason: "wrap-rejected", detail: "RSA-OAEP refused the wrapped key (another public key, or tampered)" }),
    })
    const bytes = new Uint8Array(raw)
    try {
      if (bytes.length !== MISSION_KEY_BYTES) {
        return yield* new UnwrapFailed({ reason: "malformed", detail: `the unwrapped key has ${bytes.length} bytes, not ${MISSION_KEY_BYTES}` })
      }
      return yield* Effect.tryPromise({
        try: () => subtle.importKey("raw", bytes, { name: "AES-GCM" }, false, ["decrypt"]),
        catch: () => new UnwrapFailed({ reason: "malformed", detail: "the unwrapped key is not an AES-256 key" }),
      })
    } finally {
      // The raw bytes are not needed once imported; do not leave them in the heap longer than this.
      bytes.fill(0)
    }
  })

const utf8 = new TextDecoder("utf-8", { fatal: true })

/** One `enc:1:` value → its JSON value. */
export const decryptValue = (key: CryptoKey, value: string, field: string): Effect.Effect<unknown, DecryptFailed> =>
  Effect.gen(function* () {
    const parsed = parseCiphertext(value)
    if (Either.isLeft(parsed)) return yield* new DecryptFailed({ reason: parsed.left, field })
    const { iv, data } = parsed.right
    const plain = yield* Effect.tryPromise({
      try: () => subtle.decrypt({ name: "AES-GCM", iv, tagLength: 128 }, key, data),
      catch: () => new DecryptFailed({ reason: "ciphertext-tampered-or-wrong-key", field }),
    })
    if (plain.byteLength > MAX_PLAINTEXT_BYTES) return yield* new DecryptFailed({ reason: "ciphertext-too-large", field })
    let text: string
    try {
      text = utf8.decode(plain)
    } catch {
      return yield* new DecryptFailed({ reason: "plaintext-not-utf8", field })
    }
    try {
      return JSON.parse(text) as unknown
    } catch {
      return yield* new DecryptFailed({ reason: "plaintext-not-json", field })
    }
  })

/**
 * Every top-level `enc:1:` field of a record decrypted (the app encrypts whole field values). The
 * first failure fails the record: a half-decrypted record is not shown.
 */
export const decryptRecord = (
  key: CryptoKey,
  record: Readonly<Record<string, unknown>>,
): Effect.Effect<{ readonly record: Readonly<Record<string, unknown>>; readonly fields: number }, DecryptFailed> =>
  Effect.gen(function* () {
    const out: Record<string, unknown> = {}
    let fields = 0
    for (const [name, value] of Object.entries(record)) {
      if (isCiphertext(value)) {
        out[name] = yield* decryptValue(key, value, name)
        fields++
      } else out[name] = value
    }
    return { record: out, fields }
  })
