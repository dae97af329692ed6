/**
 * The key for /internal/* in embedded mode (SPEC §10): MANA_SERVICE_KEY when set; otherwise a random
 * one kept in <data dir>/service-key (mode 0600) and reused by later starts. Only the path is printed.
 */
import { randomBytes } from "node:crypto"
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs"
import { join } from "node:path"
import * as Effect from "effect/Effect"
import * as Option from "effect/Option"
import * as Redacted from "effect/Redacted"
import { StartupError } from "./startupConfig.js"

const SERVICE_KEY_FILE = "service-key"

export interface ServiceKeySource {
  readonly key: Redacted.Redacted<string>
  /** Where the key is stored, or "MANA_SERVICE_KEY" when it came from the environment. */
  readonly from: string
}

const MIN_LENGTH = 16

export const embeddedServiceKey = (
  dataDir: string,
  configured: Option.Option<Redacted.Redacted<string>>,
): Effect.Effect<ServiceKeySource, StartupError> =>
  Option.match(configured, {
    onSome: (key) => Effect.succeed({ key, from: "MANA_SERVICE_KEY" }),
    onNone: () =>
      Effect.try({
        try: () => {
          const path = join(dataDir, SERVICE_KEY_FILE)
          if (existsSync(path)) {
            const stored = readFileSync(path, "utf8").trim()
            if (stored.length >= MIN_LENGTH) {
              chmodSync(path, 0o600)
              return { key: Redacted.make(stored), from: path, created: false }
            }
          }
          mkdirSync(dataDir, { recursive: true })
          const fresh = randomBytes(32).toString("base64url")
          writeFileSync(path, `${fresh}\n`, { mode: 0o600 })
          // writeFileSync's mode applies only when it creates the file; an old, short one is tightened here.
          chmodSync(path, 0o600)
          return { key: Redacted.make(fresh), from: path, created: true }
        },
        catch: (cause) =>
          new StartupError({
            message: `could not keep the service key under ${dataDir}: ${cause instanceof Error ? cause.message : String(cause)}`,
          }),
      }).pipe(
        Effect.tap((s) =>
          Effect.logInfo(
            s.created
              ? `Generated a service key for /internal/*; it is in ${s.from} (send it as X-Service-Key)`
              : `Service key for /internal/* is in ${s.from} (send it as X-Service-Key)`,
          ),
        ),
        Effect.map(({ key, from }) => ({ key, from })),
      ),
  })
