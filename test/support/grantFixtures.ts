/**
 * Mission Grant fixtures built the way the app and mana-auth build them (SPEC §15): the mission data
 * key by HKDF-SHA256 from the user's master key, values encrypted with AES-256-GCM, the key wrapped
 * with RSA-OAEP/SHA-256 for a fresh RSA-2048 key pair. The runner itself never derives keys.
 */
import { webcrypto } from "node:crypto"

const subtle = webcrypto.subtle
const b64 = (bytes: Uint8Array | ArrayBuffer): string => Buffer.from(bytes instanceof ArrayBuffer ? new Uint8Array(bytes) : bytes).toString("base64")

/** SPEC §15's master key: bytes 01 02 … 20. */
export const specMasterKey = (): Uint8Array => Uint8Array.from({ length: 32 }, (_, i) => i + 1)

export const hex = (bytes: Uint8Array): string => Buffer.from(bytes).toString("hex")

/** HKDF-SHA256(ikm = master key, salt = UTF-8 of the mission id, info = the v1 scope string), 32 bytes. */
export const deriveMissionKey = async (
  masterKey: Uint8Array,
  missionId: string,
  tables: ReadonlyArray<string>,
  recordIds: ReadonlyArray<string>,
): Promise<Uint8Array> => {
  const info = `mana-ai-mission-grant:v1:tables=${[...tables].sort().join(",")}:ids=${[...recordIds].sort().join(",")}`
  const ikm = await subtle.importKey("raw", masterKey, "HKDF", false, ["deriveBits"])
  const bits = await subtle.deriveBits(
    { name: "HKDF", hash: "SHA-256", salt: new TextEncoder().encode(missionId), info: new TextEncoder().encode(info) },
    ikm,
    256,
  )
  return new Uint8Array(bits)
}

/** `enc:1:<iv>.<ct+tag>` of the JSON of `value` under `key`; a random IV unless one is given. */
export const encryptValue = async (key: Uint8Array, value: unknown, iv?: Uint8Array): Promise<string> =>
  encryptBytes(key, new TextEncoder().encode(JSON.stringify(value)), iv)

export const encryptBytes = async (key: Uint8Array, plain: Uint8Array, iv?: Uint8Array): Promise<string> => {
  const nonce = iv ?? webcrypto.getRandomValues(new Uint8Array(12))
  const aes = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"])
  const ct = await subtle.encrypt({ name: "AES-GCM", iv: nonce }, aes, plain)
  return `enc:1:${b64(nonce)}.${b64(ct)}`
}

export interface RunnerKeyPair {
  /** PKCS#8 PEM, as MANA_AI_PRIVATE_KEY_PEM or the file of MANA_AI_PRIVATE_KEY_FILE holds it. */
  readonly privatePem: string
  readonly publicKey: webcrypto.CryptoKey
}

const pem = (label: string, der: ArrayBuffer): string =>
  `-----BEGIN ${label}-----\n${b64(der).match(/.{1,64}/g)!.join("\n")}\n-----END ${label}-----\n`

export const generateRunnerKeyPair = async (modulusLength = 2048): Promise<RunnerKeyPair> => {
  const pair = await subtle.generateKey(
    { name: "RSA-OAEP", modulusLength, publicExponent: new Uint8Array([1, 0, 1]), hash: "SHA-256" },
    true,
    ["encrypt", "decrypt"],
  )
  return { privatePem: pem("PRIVATE KEY", await subtle.exportKey("pkcs8", pair.privateKey)), publicKey: pair.publicKey }
}

/** RSA-OAEP/SHA-256, no label, base64: the grant's wrappedKey. */
export const wrapKey = async (publicKey: webcrypto.CryptoKey, missionKey: Uint8Array): Promise<string> =>
  b64(await subtle.encrypt({ name: "RSA-OAEP" }, publicKey, missionKey))

export interface GrantFixture {
  readonly grant: Record<string, unknown>
  readonly missionKey: Uint8Array
}

/** A grant as mana-auth mints it for `missionId` over `recordIds` (`<table>:<id>`). */
export const makeGrant = async (options: {
  readonly publicKey: webcrypto.CryptoKey
  readonly masterKey?: Uint8Array
  readonly missionId: string
  readonly recordIds: ReadonlyArray<string>
  readonly expiresAt?: string
  readonly derivationMissionId?: string
}): Promise<GrantFixture> => {
  const tables = [...new Set(options.recordIds.map((r) => r.slice(0, r.indexOf(":"))))].sort()
  const recordIds = [...options.recordIds].sort()
  const missionKey = await deriveMissionKey(options.masterKey ?? specMasterKey(), options.missionId, tables, recordIds)
  return {
    missionKey,
    grant: {
      wrappedKey: await wrapKey(options.publicKey, missionKey),
      derivation: { version: "v1", missionId: options.derivationMissionId ?? options.missionId, tables, recordIds },
      issuedAt: "2026-01-01T00:00:00.000Z",
      expiresAt: options.expiresAt ?? "2099-01-01T00:00:00.000Z",
    },
  }
}
