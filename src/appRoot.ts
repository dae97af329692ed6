/**
 * Where the files the process reads at run time are: `sql/*.sql` (embedded mode's tables),
 * `src/http/page/` (the operator page) and `package.json` (the version). They are found from the
 * app's root, the nearest directory at or above the running code's own file whose `package.json`
 * is named `mana-ai`. The running code's file is this module (`src/appRoot.ts`) when the process
 * runs from source (`bun src/main.ts`, the Node tests) and the bundle (`dist/main.js`) when it is
 * started with `npm start`: walking up finds the same root from either, however deep the file sits.
 * Read once, when first asked.
 */
import { existsSync, readFileSync } from "node:fs"
import { dirname, join } from "node:path"
import { fileURLToPath } from "node:url"

const APP_NAME = "mana-ai"

interface PackageJson {
  readonly name?: unknown
  readonly version?: unknown
}

const readPackageJson = (dir: string): PackageJson | undefined => {
  const path = join(dir, "package.json")
  if (!existsSync(path)) return undefined
  try {
    return JSON.parse(readFileSync(path, "utf8")) as PackageJson
  } catch {
    return undefined
  }
}

let found: { readonly dir: string; readonly packageJson: PackageJson } | undefined

const findRoot = (): { readonly dir: string; readonly packageJson: PackageJson } => {
  if (found !== undefined) return found
  const start = dirname(fileURLToPath(import.meta.url))
  for (let dir = start; ; dir = dirname(dir)) {
    const packageJson = readPackageJson(dir)
    if (packageJson?.name === APP_NAME) {
      found = { dir, packageJson }
      return found
    }
    if (dirname(dir) === dir) throw new Error(`no ${APP_NAME} package.json at or above ${start}: the app's files are not beside its code`)
  }
}

/** The app's root directory (where its package.json is). */
export const appRoot = (): string => findRoot().dir

/** A file of the app, by its path from the root: `appFile("sql", "sync-changes.sql")`. */
export const appFile = (...segments: ReadonlyArray<string>): string => join(findRoot().dir, ...segments)

/** package.json's version: the one thing /health reports about the build. */
export const appVersion = (): string => {
  const version = findRoot().packageJson.version
  return typeof version === "string" ? version : "unknown"
}
