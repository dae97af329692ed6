/**
 * What `.ci/run` runs: every test file exactly once across its test commands (test/faults-fast was
 * run twice, by `npm test` and again by the fault suite). Each command is resolved through
 * package.json and listed by vitest itself, so a change to a config, a script or .ci/run is seen.
 */
import { execFileSync } from "node:child_process"
import { readdirSync, readFileSync } from "node:fs"
import { join } from "node:path"
import { describe, expect, it } from "vitest"
import { BOTH_GENERATIONS } from "../../vitest.generations.js"

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

/** `[project] file` lines (both configs run one project per generation of sync_changes). */
const listed = (args: ReadonlyArray<string>): ReadonlyArray<string> =>
  execFileSync(join(root, "node_modules", ".bin", "vitest"), ["list", "--filesOnly", ...args], {
    cwd: root,
    encoding: "utf8",
    env: { ...process.env, CI: "true" },
  })
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.endsWith(".test.ts"))
    .map((l) => (l.startsWith("[") ? l : `[-] ${l}`))

const allTestFiles = (dir: string): ReadonlyArray<string> =>
  readdirSync(join(root, dir), { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? allTestFiles(join(dir, e.name)) : e.name.endsWith(".test.ts") ? [join(dir, e.name)] : [],
  )

describe(".ci/run", () => {
  it("runs every test file exactly once per generation of sync_changes across its test commands (test/faults-fast included)", () => {
    const commands = testCommands()
    expect(commands.length).toBeGreaterThanOrEqual(2)
    const runs = commands.flatMap((c) => listed(c.args))
    const twice = runs.filter((run, i) => runs.indexOf(run) !== i)
    expect(twice).toEqual([])
    const onToday = runs.filter((r) => r.startsWith("[field_meta] ")).map((r) => r.slice("[field_meta] ".length))
    const onSeed = runs.filter((r) => r.startsWith("[field_timestamps] ")).map((r) => r.slice("[field_timestamps] ".length))
    expect(onToday.length + onSeed.length).toBe(runs.length)
    expect([...onToday].sort()).toEqual([...allTestFiles("test")].sort())
    expect([...onSeed].sort()).toEqual([...BOTH_GENERATIONS].sort())
    expect(onToday).toContain("test/faults-fast/databaseFaults.test.ts")
    expect(onToday).toContain("test/faults/crashRestart.test.ts")
    expect(onSeed).toContain("test/faults-fast/security.test.ts")
  }, 60_000)
})
