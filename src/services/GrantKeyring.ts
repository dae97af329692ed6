/**
 * The runner's Mission Grant key (SPEC §15): opens a mission's grant for one run. The checks run in
 * SPEC order (not-configured, expired, mission-mismatch, malformed, wrap-rejected); an open grant
 * yields the mission data key as a non-extractable CryptoKey that the caller holds for that run only.
 */
import * as Clock from "effect/Clock"
import * as Data from "effect/Data"
import * as Effect from "effect/Effect"
import * as Either from "effect/Either"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { type GrantSkipReason, checkGrantClaims } from "../domain/grant.js"
import { GrantConfig } from "./AppConfig.js"
import { type CryptoKey, importRunnerKey, unwrapMissionKey } from "./grantCrypto.js"

export type GrantOpening =
  | { readonly _tag: "Open"; readonly key: CryptoKey; readonly allowed: ReadonlySet<string> }
  | { readonly _tag: "Rejected"; readonly reason: GrantSkipReason; readonly detail: string }

export interface GrantKeyringShape {
  /** A key is configured: grants are on. */
  readonly configured: boolean
  /** Checks a present grant (not absent, not null) for one run of `missionId`. Never fails. */
  readonly open: (grant: unknown, missionId: string) => Effect.Effect<GrantOpening>
}

export class GrantKeyError extends Data.TaggedError("GrantKeyError")<{ readonly message: string }> {}

const rejected = (reason: GrantSkipReason, detail: string): GrantOpening => ({ _tag: "Rejected", reason, detail })

export const makeGrantKeyring = (runnerKey: Option.Option<CryptoKey>): GrantKeyringShape => ({
  configured: Option.isSome(runnerKey),
  open: Effect.fn("GrantKeyring.open")(function* (grant: unknown, missionId: string) {
    if (Option.isNone(runnerKey)) {
      return rejected("not-configured", "the mission has a grant but no MANA_AI_PRIVATE_KEY_FILE / MANA_AI_PRIVATE_KEY_PEM is configured")
    }
    const claims = checkGrantClaims(grant, missionId, yield* Clock.currentTimeMillis)
    if (Either.isLeft(claims)) return rejected(claims.left.reason, claims.left.detail)
    const key = yield* Effect.either(unwrapMissionKey(runnerKey.value, claims.right.wrappedKey))
    if (Either.isLeft(key)) return rejected(key.left.reason, key.left.detail)
    return { _tag: "Open", key: key.right, allowed: claims.right.allowed } satisfies GrantOpening
  }),
})

/** Reads GrantConfig; says once at start whether grants are on. */
export class GrantKeyring extends Effect.Service<GrantKeyring>()("mana-ai/GrantKeyring", {
  effect: Effect.gen(function* () {
    const config = yield* GrantConfig
    if (Option.isNone(config.runnerKey)) {
      yield* Effect.logInfo(
        "Mission Grants: off (neither MANA_AI_PRIVATE_KEY_FILE nor MANA_AI_PRIVATE_KEY_PEM is set); encrypted inputs stay unread",
      )
      return makeGrantKeyring(Option.none())
    }
    const { source, pkcs8 } = config.runnerKey.value
    const key = yield* importRunnerKey(Redacted.value(pkcs8)).pipe(
      Effect.mapError(() => new GrantKeyError({ message: `${source} must hold a PKCS#8 PEM RSA-2048 key usable for RSA-OAEP/SHA-256` })),
    )
    yield* Effect.logInfo(`Mission Grants: on (RSA key from ${source})`)
    return makeGrantKeyring(Option.some(key))
  }),
}) {}
