/**
 * What `.ci/run` runs: every test file exactly once across its test commands (test/faults-fast was
 * run twice, by `npm test` and again by the fault suite). Each command is resolved through
 * package.json and listed by vitest itself, so a change to a config, a script or .ci/run is seen.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"

const root = join(import.meta.dirname, "..", "..")
const scripts: Record<string, string> = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).scripts

/** `npm test -- --x 'y'` → ["test", ["--x", "y"]]; `npm run check` and `npm ci` are not test commands. */
const testCommands = (): ReadonlyArray<{ readonly line: string; readonly args: ReadonlyArray<string> }> =>
  readFileSync(join(root, ".ci", "run"), "utf8")
    .split("\n")
    .map((line) => line.trim())
    .flatMap((line) => {
      const m = /^npm (?:test|run ([\w:-]+))(?: -- (.*))?$/.exec(line)
      if (m === null) return []
      const script = scripts[m[1] ?? "test"] ?? ""
      if (!script.startsWith("vitest run")) return []
      const tokens = (text: string) => text.split(/\s+/).filter((t) => t !== "").map((t) => t.replace(/^'(.*)'$/, "$1"))
      return [{ line, args: [...tokens(script.slice("vitest run".length)), ...tokens(m[2] ?? "")] }]
    })

const listed = (args: ReadonlyArray<string>): ReadonlyArray<string> =>
  execFileSync(join(root, "node_modules", ".bin", "vitest"), ["list", "--filesOnly", ...args], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, CI: "true" },
  })
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.endsWith(".test.ts"))

const allTestFiles = (dir: string): ReadonlyArray<string> =>
  readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? allTestFiles(join(dir, e.name)) : e.name.endsWith(".test.ts") ? [join(dir, e.name)] : [],
  )

describe(".ci/run", () => {
  it("runs every test file exactly once across its test commands (test/faults-fast included)", () => {
    const commands = testCommands()
    expect(commands.length).toBeGreaterThanOrEqual(2)
    const runs = commands.flatMap((c) => listed(c.args))
    const twice = runs.filter((file, i) => runs.indexOf(file) !== i)
    expect(twice).toEqual([])
    expect([...runs].sort()).toEqual([...allTestFiles("test")].sort())
    expect(runs).toContain("test/faults-fast/databaseFaults.test.ts")
    expect(runs).toContain("test/faults/crashRestart.test.ts")
  }, 60_000)
})
