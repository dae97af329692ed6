/**
 * Runs the project's psql scripts (sql/*.sql) without psql: the embedded default and the PGlite
 * test path have no psql binary. Supports exactly what our scripts use: `:"var"` (identifier),
 * `:'var'` (literal) and backslash meta-command lines, which are dropped.
 */
import { readFileSync } from "node:fs"
import { appFile } from "../appRoot.js"
import type { SyncGeneration } from "../domain/eventLog.js"

const quoteIdent = (s: string) => `"${s.replaceAll('"', '""')}"`
const quoteLiteral = (s: string) => `'${s.replaceAll("'", "''")}'`

/** One of the app's `sql/` files (found from the app's root, `appRoot.ts`: from source and from the bundle alike). */
export const sqlFile = (name: string): string => readFileSync(appFile("sql", name), "utf8")

/** The DDL of one generation of sync_changes (SPEC §13): today's by default, the seed's for the tests. */
export const syncChangesSql = (generation: SyncGeneration = "field_meta"): string =>
  sqlFile(generation === "field_meta" ? "sync-changes.sql" : "sync-changes-field-timestamps.sql")

export const renderPsqlScript = (text: string, vars: Readonly<Record<string, string>> = {}): string =>
  text
    .split("\n")
    .filter((line) => !line.trimStart().startsWith("\\"))
    .join("\n")
    .replace(/:"([A-Za-z_][A-Za-z0-9_]*)"|:'([A-Za-z_][A-Za-z0-9_]*)'/g, (_match, ident?: string, lit?: string) => {
      const name = (ident ?? lit) as string
      const value = vars[name]
      if (value === undefined) throw new Error(`psql variable ${name} is not set`)
      return ident !== undefined ? quoteIdent(value) : quoteLiteral(value)
    })
