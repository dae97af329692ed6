/**
 * Mission Grant (SPEC §15), the pure part: the grant's shape, the checks that need no key (in SPEC
 * order), the ciphertext format, and which encrypted modules exist and how they render. The RSA
 * unwrap and AES-GCM decryption live in services/grantCrypto.ts.
 */
import * as Either from "effect/Either"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { parseInstant } from "./replay.js"

/** Why a grant is not used for a run, in the order they are checked (the first failure is the reason). */
const GRANT_SKIP_REASONS = ["not-configured", "expired", "mission-mismatch", "malformed", "wrap-rejected"] as const
export type GrantSkipReason = (typeof GRANT_SKIP_REASONS)[number]

export interface GrantRejection {
  readonly reason: GrantSkipReason
  /** For the log: names what failed, never a key or a value of the grant beyond its ids. */
  readonly detail: string
}

const MissionGrant = Schema.Struct({
  wrappedKey: Schema.String,
  derivation: Schema.Struct({
    version: Schema.Literal("v1"),
    missionId: Schema.String,
    tables: Schema.Array(Schema.String),
    recordIds: Schema.Array(Schema.String),
  }),
  issuedAt: Schema.optional(Schema.String),
  expiresAt: Schema.String,
})
export type MissionGrant = typeof MissionGrant.Type

/** A grant whose claims passed: what the key-dependent steps need. */
export interface GrantClaims {
  readonly wrappedKey: Uint8Array
  /** `<table>:<id>` of every record the grant covers. */
  readonly allowed: ReadonlySet<string>
  readonly tables: ReadonlyArray<string>
  readonly expiresAt: string
}

/** `grant` absent or `null` (revoked by the app): no grant at all, which is not a failure. */
export const hasGrant = (raw: unknown): boolean => raw !== undefined && raw !== null

const field = (u: unknown, key: string): unknown =>
  typeof u === "object" && u !== null && !Array.isArray(u) ? (u as Record<string, unknown>)[key] : undefined

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/

/** Standard base64 with padding, strictly (Buffer.from alone skips characters it does not know). */
const decodeBase64 = (s: string): Uint8Array | undefined =>
  s.length > 0 && BASE64.test(s) ? new Uint8Array(Buffer.from(s, "base64")) : undefined

const decodeGrant = Schema.decodeUnknownEither(MissionGrant)

/**
 * The checks that need no key, in SPEC order after `not-configured` (which the caller decides):
 * `expired`, `mission-mismatch`, then `malformed` (the grant's shape, the wrapped key's base64).
 * Read leniently so each reason is judged on its own field whatever else is wrong.
 */
export const checkGrantClaims = (raw: unknown, missionId: string, nowMs: number): Either.Either<GrantClaims, GrantRejection> => {
  const expiresAt = field(raw, "expiresAt")
  const expiresMs = parseInstant(expiresAt)
  if (expiresMs === undefined) return Either.left({ reason: "expired", detail: "the grant's expiresAt is missing or not a date-time" })
  if (expiresMs < nowMs) return Either.left({ reason: "expired", detail: `the grant expired at ${String(expiresAt)}` })
  const grantMission = field(field(raw, "derivation"), "missionId")
  if (grantMission !== missionId) {
    return Either.left({ reason: "mission-mismatch", detail: "the grant's derivation.missionId is not this mission's id" })
  }
  const decoded = decodeGrant(raw)
  if (Either.isLeft(decoded)) {
    return Either.left({
      reason: "malformed",
      // Paths only: a formatter's message quotes the actual value, which may be the wrapped key.
      detail: `the grant does not have the expected shape at ${[
        ...new Set(ParseResult.ArrayFormatter.formatErrorSync(decoded.left).map((e) => e.path.join(".") || "(the grant)")),
      ].join(", ")}`,
    })
  }
  const grant = decoded.right
  const wrappedKey = decodeBase64(grant.wrappedKey)
  if (wrappedKey === undefined) return Either.left({ reason: "malformed", detail: "the grant's wrappedKey is not base64" })
  return Either.right({
    wrappedKey,
    allowed: new Set(grant.derivation.recordIds),
    tables: grant.derivation.tables,
    expiresAt: grant.expiresAt,
  })
}

/** The mission data key is AES-256: an unwrapped key of any other length is `malformed`. */
export const MISSION_KEY_BYTES = 32

// ---------------------------------------------------------------- ciphertext

export const CIPHERTEXT_PREFIX = "enc:1:"
const IV_BYTES = 12
const TAG_BYTES = 16
/** Plaintext beyond this is refused before decryption: a mission input is cut to ≤ 2,000 characters anyway. */
export const MAX_PLAINTEXT_BYTES = 1024 * 1024

/** Why one encrypted value could not be read; the audit row's reason. */
export type DecryptFailureReason =
  | "ciphertext-malformed"
  | "ciphertext-too-large"
  | "ciphertext-tampered-or-wrong-key"
  | "plaintext-not-utf8"
  | "plaintext-not-json"

export const isCiphertext = (u: unknown): u is string => typeof u === "string" && u.startsWith(CIPHERTEXT_PREFIX)

export interface Ciphertext {
  readonly iv: Uint8Array
  /** The ciphertext with the 16-byte GCM tag appended. */
  readonly data: Uint8Array
}

/** `enc:1:<base64 IV>.<base64 ciphertext+tag>`, split at the first `.`. */
export const parseCiphertext = (value: string): Either.Either<Ciphertext, DecryptFailureReason> => {
  if (!value.startsWith(CIPHERTEXT_PREFIX)) return Either.left("ciphertext-malformed")
  const body = value.slice(CIPHERTEXT_PREFIX.length)
  const dot = body.indexOf(".")
  if (dot < 0) return Either.left("ciphertext-malformed")
  // base64 of MAX_PLAINTEXT_BYTES + tag, checked before decoding anything that large.
  if (body.length - dot - 1 > Math.ceil((MAX_PLAINTEXT_BYTES + TAG_BYTES) / 3) * 4) return Either.left("ciphertext-too-large")
  const iv = decodeBase64(body.slice(0, dot))
  const data = decodeBase64(body.slice(dot + 1))
  if (iv === undefined || data === undefined || iv.length !== IV_BYTES || data.length < TAG_BYTES) {
    return Either.left("ciphertext-malformed")
  }
  return Either.right({ iv, data })
}

// ---------------------------------------------------------------- encrypted modules

export interface EncryptedModule {
  /** The app whose records the module reads (the input's `table` names the table). */
  readonly appId: string
  /** Content in the prompt is cut at this many characters. */
  readonly limit: number
  /** Used when the record has no readable title. */
  readonly label: string
  readonly content: (record: Readonly<Record<string, unknown>>) => string
}

const str = (u: unknown): string | undefined => (typeof u === "string" && u.trim() !== "" && !u.startsWith(CIPHERTEXT_PREFIX) ? u.trim() : undefined)

const anyText = (u: unknown): string => {
  if (u === undefined || u === null) return ""
  const s = str(u)
  if (s !== undefined) return s
  if (typeof u === "string") return ""
  return JSON.stringify(u)
}

const joined = (parts: ReadonlyArray<string | undefined>): string => parts.filter((p) => p !== undefined && p !== "").join(" ")

const labelled = (value: unknown, f: (s: string) => string): string | undefined => {
  const s = str(value)
  return s === undefined ? undefined : f(s)
}

const taskContent = (r: Readonly<Record<string, unknown>>) =>
  joined([
    labelled(r.status, (s) => `[${s}]`),
    str(r.title) ?? "(untitled task)",
    labelled(r.description, (s) => `— ${s}`),
    labelled(r.dueDate, (s) => `(due ${s})`),
  ])

/** SPEC §15: the six encrypted modules and their app ids, with the prompt's cut per module. */
const ENCRYPTED_MODULES: Readonly<Record<string, EncryptedModule>> = {
  notes: { appId: "notes", limit: 500, label: "Note", content: (r) => anyText(r.content) },
  tasks: { appId: "todo", limit: 500, label: "Task", content: taskContent },
  todo: { appId: "todo", limit: 500, label: "Task", content: taskContent },
  calendar: {
    appId: "calendar",
    limit: 500,
    label: "Event",
    content: (r) =>
      joined([str(r.title) ?? "(untitled event)", labelled(r.startDate, (s) => `@ ${s}`), labelled(r.location, (s) => `in ${s}`)]),
  },
  journal: { appId: "journal", limit: 500, label: "Journal entry", content: (r) => anyText(r.content) },
  kontext: { appId: "kontext", limit: 1_500, label: "Context", content: (r) => anyText(r.content) },
  profile: {
    appId: "profile",
    limit: 2_000,
    label: "Profile",
    content: (r) => {
      const { id: _id, createdAt: _c, updatedAt: _u, deletedAt: _d, ...rest } = r
      return anyText(rest)
    },
  },
}

export const encryptedModule = (module: string): EncryptedModule | undefined =>
  Object.hasOwn(ENCRYPTED_MODULES, module) ? ENCRYPTED_MODULES[module] : undefined

/** The grant's name for an input: `<table>:<id>`. */
export const grantScopeKey = (input: { readonly table: string; readonly id: string }): string => `${input.table}:${input.id}`

export const cut = (s: string, max: number): string => (s.length > max ? `${s.slice(0, max)}…` : s)

/** A decrypted record as the prompt shows it: title and content, content cut at the module's limit. */
export const renderEncrypted = (
  mod: EncryptedModule,
  record: Readonly<Record<string, unknown>>,
): { readonly title: string; readonly content: string } => ({
  title: cut(str(record.title) ?? mod.label, 300),
  content: cut(mod.content(record), mod.limit),
})
