/**
 * What `npm start` runs (issue 16 item 5): `bun scripts/bundle.ts && exec bun dist/main.js`, the bundle
 * of src/main.ts, rebuilt first when any file it was built from changed. Started as operators start
 * it, on the embedded default (PGlite, left out of the bundle, resolves from dist/ up to node_modules;
 * the sql/ files are read from the app's root), it serves /ready, the operator page and package.json's
 * version; so does `bun src/main.ts` from source. The freshness rule itself: scripts/bundle.ts's
 * `staleReason` on a copy of the bundle's inputs list.
 */
import { spawnSync } from "node:child_process"
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import {
  BUN,
  BUNDLE,
  ensureBundle,
  eventually,
  type ManaProcess,
  REPO_ROOT,
  request,
  startManaProcess,
} from "../support/ManaProcess.js"

const VERSION = (JSON.parse(readFileSync(join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version
const dirs: Array<string> = []
const started: Array<ManaProcess> = []

const tempDir = (prefix: string) => {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  dirs.push(dir)
  return dir
}

afterAll(() => {
  for (const m of started) if (m.child.exitCode === null && m.child.signalCode === null) m.child.kill("SIGKILL")
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true })
})

/** The process's command line, and its first descendant's named bun (npm → sh, which execs bun). */
const bunCommandUnder = (root: number): ReadonlyArray<string> | undefined => {
  const queue = [root]
  while (queue.length > 0) {
    const pid = queue.shift()!
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((a) => a !== "")
      if (readFileSync(`/proc/${pid}/comm`, "utf8").trim() === "bun") return cmdline
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        const children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim()
        if (children !== "") queue.push(...children.split(/\s+/).map(Number))
      }
    } catch {}
  }
  return undefined
}

/** Embedded mode with its data in a temporary directory: /ready, the page, its assets, the version; then SIGTERM. */
const servesAndStops = async (m: ManaProcess) => {
  await eventually("/ready to answer 200", 90_000, async () => (await request(m, "GET", "/ready")).status === 200)
  const health = await request(m, "GET", "/health")
  expect(health.body).toMatchObject({ ok: true, service: "mana-ai", version: VERSION })
  const page = await request(m, "GET", "/")
  expect(page.status).toBe(200)
  expect(page.text).toContain('src="/page/app.js"')
  const pageFiles = ["/page/app.js", "/page/app.css"].map(async (path) => {
    const response = await request(m, "GET", path)
    expect(response.status, path).toBe(200)
    expect(response.text.length, path).toBeGreaterThan(100)
  })
  await Promise.all(pageFiles)
  const exited = await m.stop("SIGTERM", 30_000)
  expect(exited).toMatchObject({ code: 0, signal: null })
  expect(m.logs().at(-1)?.message).toBe("mana-ai stopped")
}

describe("npm start runs the bundle", () => {
  it("npm start execs `bun dist/main.js`, which serves /ready, the operator page and the version (embedded, PGlite)", async () => {
    const m = await startManaProcess({ viaNpmStart: true, env: { MANA_AI_DATA_DIR: tempDir("mana-ai-bundle-data-") } })
    started.push(m)
    await eventually("the runner's Bun process", 30_000, async () => bunCommandUnder(m.child.pid ?? 0)?.at(-1) === "dist/main.js")
    // npm → sh → exec: the Bun process runs the bundle and nothing else (the check before it has exited).
    expect(bunCommandUnder(m.child.pid ?? 0)?.slice(1)).toEqual(["dist/main.js"])
    await servesAndStops(m)
  }, 150_000)

  it("from source too: `bun src/main.ts` serves the same page and version", async () => {
    const m = await startManaProcess({ entry: "source", env: { MANA_AI_DATA_DIR: tempDir("mana-ai-source-data-") } })
    started.push(m)
    await servesAndStops(m)
  }, 150_000)

  it("a bundle whose inputs changed is stale: staleReason names what changed", () => {
    ensureBundle()
    const copy = tempDir("mana-ai-bundle-copy-")
    cpSync(join(BUNDLE, ".."), copy, { recursive: true })
    const record = JSON.parse(readFileSync(join(REPO_ROOT, "dist", "inputs.json"), "utf8")) as {
      bun: string
      files: Record<string, string>
      outputs: Record<string, ReadonlyArray<string>>
    }
    const staleReason = (edit: (r: typeof record) => unknown) => {
      const changed = structuredClone(record)
      edit(changed)
      writeFileSync(join(copy, "inputs.json"), JSON.stringify(changed))
      const result = spawnSync(
        BUN,
        ["-e", `import { staleReason } from "./scripts/bundle.ts"; console.log(staleReason({ outdir: ${JSON.stringify(copy)} }) ?? "fresh")`],
        { cwd: REPO_ROOT, encoding: "utf8" },
      )
      expect(result.status, result.stderr).toBe(0)
      return result.stdout.trim()
    }
    expect(staleReason(() => undefined)).toBe("fresh")
    expect(staleReason((r) => (r.files["src/launch.ts"] = "0"))).toBe("src/launch.ts changed")
    expect(staleReason((r) => (r.files["src/no-such-file.ts"] = "0"))).toBe("src/no-such-file.ts changed")
    expect(staleReason((r) => (r.bun = "0.0.0"))).toBe("built by another Bun or with other options")
    // Everything it was built from is listed: the entry, the package, npm's record of node_modules, the builder.
    for (const path of ["src/main.ts", "src/http/OperatorPage.ts", "package.json", "scripts/bundle.ts"]) {
      expect(Object.keys(record.files), path).toContain(path)
    }
    // Split off (launch.ts imports the live or the embedded composition by mode): a chunk that is gone is stale too.
    const chunks = Object.keys(record.outputs).filter((p) => p.startsWith("chunks/"))
    expect(chunks.length).toBeGreaterThan(2)
    expect(Object.keys(record.outputs)).toContain("main.js")
    rmSync(join(copy, chunks[0]!))
    expect(staleReason(() => undefined)).toBe(`${chunks[0]} is missing`)
    rmSync(join(copy, "main.js"))
    expect(staleReason(() => undefined)).toBe("no bundle yet")
  }, 60_000)

  it("a build removes the chunks of earlier builds once no build has written them for 10 minutes", () => {
    const out = tempDir("mana-ai-bundle-out-")
    mkdirSync(join(out, "chunks"))
    const old = join(out, "chunks", "chunk-old.js")
    const recent = join(out, "chunks", "chunk-recent.js")
    writeFileSync(old, "export {}\n")
    writeFileSync(recent, "export {}\n")
    const elevenMinutesAgo = new Date(Date.now() - 11 * 60_000)
    utimesSync(old, elevenMinutesAgo, elevenMinutesAgo)
    const result = spawnSync(
      BUN,
      ["-e", `import { buildBundle, staleReason } from "./scripts/bundle.ts"; await buildBundle({ outdir: ${JSON.stringify(out)} }); console.log(staleReason({ outdir: ${JSON.stringify(out)} }) ?? "fresh")`],
      { cwd: REPO_ROOT, encoding: "utf8" },
    )
    expect(result.status, result.stderr).toBe(0)
    expect(result.stdout.trim()).toBe("fresh")
    const chunks = readdirSync(join(out, "chunks"))
    expect(chunks).not.toContain("chunk-old.js")
    expect(chunks).toContain("chunk-recent.js")
    // Left: this build's chunks, each named in its outputs list, and the recent one; no temporary file.
    const record = JSON.parse(readFileSync(join(out, "inputs.json"), "utf8")) as { outputs: Record<string, unknown> }
    for (const path of Object.keys(record.outputs)) expect(existsSync(join(out, path)), path).toBe(true)
    const built = Object.keys(record.outputs).filter((p) => p.startsWith("chunks/")).map((p) => p.slice("chunks/".length))
    expect(chunks.sort()).toEqual([...built, "chunk-recent.js"].sort())
  }, 60_000)
})
