/**
 * The bundle `npm start` runs: `src/main.ts` and everything it imports, built by Bun's bundler into
 * `dist/main.js` and a few chunks it imports (below), which Bun loads as a handful of modules instead
 * of about 460 from source (the idle process carries fewer module records, sources and bytecode:
 * issue 16 item 5).
 *
 *     bun scripts/bundle.ts           # builds dist/main.js unless it is up to date (npm start runs this first)
 *     bun scripts/bundle.ts --force   # builds it anyway
 *
 * Up to date means: `dist/inputs.json`, written with the bundle, lists every file the build read
 * (the bundler's metafile: src and the node_modules files it bundled) with a hash of its content,
 * plus package.json, npm's record of what is installed (`node_modules/.package-lock.json`), this
 * script and Bun's version; each is read and hashed again, and any difference (or a missing file)
 * rebuilds. So a stale bundle never runs, whatever changed: an edit, a checkout, an `npm install`.
 * A build that fails, or that cannot write `dist/` (a read-only image), stops with one line on
 * stderr and exit code 1, so `npm start` stops too.
 *
 * Code only some modes run is split off: what launch.ts and live.ts import with `import()` (the embedded
 * or the live composition, the cluster's modules for RUNNER_ADDRESS, the OTLP tracer) goes to its own
 * chunk under `dist/chunks/`, loaded only when imported. In one file, every module's top-level
 * functions were created at load whether its init ever ran or not: the live idle process held the
 * cluster's, rpc's and msgpackr's too (idle RSS 74.7 → 70.4 MB without them). Chunk names carry a hash
 * of their content, each is written under a temporary name and renamed, and `main.js` goes last, so a
 * start never meets a half-written build; chunks no build has written for CHUNK_KEEP_MS are removed.
 *
 * The build: target Bun, ES module; PGlite and its socket server stay external (PGlite loads its
 * wasm and data files from its own package directory), resolved at run time from `dist/` up to the
 * app's `node_modules`: the bundle must stay inside the app's tree. effect's `FastCheck` module is
 * answered with the stub (`src/layers/fastCheckStub.ts`) as the runtime plugin does from source
 * (`src/layers/withoutFastCheck.ts`), so fast-check is never in the bundle. Whitespace and syntax are
 * minified, names are kept: a stack trace in the logs names the functions (DEVELOPERS.md says what
 * full minification would save). Files go to a temporary name first and are renamed into place, the
 * bundle before its inputs list, so two starts at once never run a half-written bundle.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from "node:fs"
import { basename, dirname, join, relative, resolve } from "node:path"
import { fileURLToPath } from "node:url"
import { FAST_CHECK_EXPORTS } from "../src/layers/fastCheckStub.js"
import { type BunPluginBuild, isEffectFastCheckImport } from "../src/layers/withoutFastCheck.js"

/** The parts of Bun's API used here (the project has no Bun type package; tsc checks this file too). */
interface BunPlugin {
  readonly name: string
  readonly setup: (build: BunPluginBuild<{ readonly contents: string; readonly loader: "js" }>) => void
}
interface BuildArtifact {
  readonly kind: string
  /** From the output directory: `./main.js`, `./chunks/chunk-<hash>.js`. */
  readonly path: string
  readonly text: () => Promise<string>
}
declare const Bun: {
  readonly version: string
  readonly hash: (data: Uint8Array) => number | bigint
  readonly build: (config: Record<string, unknown>) => Promise<{
    readonly success: boolean
    readonly logs: ReadonlyArray<unknown>
    readonly outputs: ReadonlyArray<BuildArtifact>
    readonly metafile: {
      readonly inputs: Record<string, unknown>
      readonly outputs: Record<string, { readonly inputs: Record<string, unknown> }>
    }
  }>
}

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..")
export const ENTRY = join(ROOT, "src", "main.ts")
export const DIST = join(ROOT, "dist")
export const BUNDLE = join(DIST, "main.js")
export const INPUTS = join(DIST, "inputs.json")
/** Where the split-off chunks go, inside the output directory. */
export const CHUNKS = "chunks"
/** A chunk the current build does not use is removed once no build has written it for this long. */
const CHUNK_KEEP_MS = 10 * 60_000
const SELF = fileURLToPath(import.meta.url)
const STUB = join(ROOT, "src", "layers", "fastCheckStub.ts")

/** Read at run time from node_modules, beside the bundle's tree (see the header). */
export const EXTERNAL = ["@electric-sql/pglite", "@electric-sql/pglite-socket"]

/** Files whose change makes any bundle stale besides the ones the bundler read. */
const ALWAYS = [
  "package.json",
  "node_modules/.package-lock.json",
  // This script's own imports: they decide what the build answers for effect's FastCheck.
  "src/layers/withoutFastCheck.ts",
  "src/layers/fastCheckStub.ts",
]

const NAMESPACE = "mana-ai-no-fast-check"

/**
 * effect's `./FastCheck.js`, answered with a module whose every export is the stub's (a function that
 * throws). And main.ts's import of `withoutFastCheck.ts`, answered with an empty module: that module
 * registers the same answer as a runtime plugin for `bun src/main.ts`, but the bundle has no
 * `./FastCheck.js` left to resolve at run time, and a registered runtime plugin cost the idle process
 * 0.6–1.0 MB (anonymous; idleSmaps, two pairs).
 */
export const noFastCheck: BunPlugin = {
  name: "mana-ai: no fast-check",
  setup(build) {
    build.onResolve({ filter: /[\\/]withoutFastCheck\.js$/ }, (args) =>
      resolve(args.importer) === ENTRY ? { path: "withoutFastCheck", namespace: NAMESPACE } : undefined,
    )
    build.onResolve({ filter: /^\.\/FastCheck\.js$/ }, (args) =>
      isEffectFastCheckImport(args.path, args.importer) ? { path: "effect/FastCheck", namespace: NAMESPACE } : undefined,
    )
    build.onLoad({ filter: /^withoutFastCheck$/, namespace: NAMESPACE }, () => ({ loader: "js", contents: "" }))
    build.onLoad({ filter: /^effect\/FastCheck$/, namespace: NAMESPACE }, () => ({
      loader: "js",
      contents: [
        `import { fastCheckStubExports } from ${JSON.stringify(STUB)}`,
        "const stub = fastCheckStubExports()",
        ...FAST_CHECK_EXPORTS.map((name) => `export const ${name} = stub.${name}`),
      ].join("\n"),
    }))
  },
}

export interface BundleOptions {
  /** Where the bundle goes (a directory inside the app's tree). */
  readonly outdir?: string
  /** "names-kept" (whitespace and syntax; the default), "full" (names too) or "none". */
  readonly minify?: "names-kept" | "full" | "none"
  readonly sourcemap?: "none" | "linked"
}

const hashOf = (path: string): string | undefined => {
  try {
    return Bun.hash(readFileSync(path)).toString(16)
  } catch {
    return undefined
  }
}

interface InputsRecord {
  readonly bun: string
  readonly options: Required<Omit<BundleOptions, "outdir">>
  /** Path from the app's root → content hash ("" for a file that changed while the build read it). */
  readonly files: Record<string, string>
  /** Each file the build wrote, from the output directory (`main.js`, `chunks/…`) → the inputs in it. */
  readonly outputs: Record<string, ReadonlyArray<string>>
}

const settled = (options: BundleOptions): Required<Omit<BundleOptions, "outdir">> => ({
  minify: options.minify ?? "names-kept",
  sourcemap: options.sourcemap ?? "none",
})

const expectedHeader = (options: BundleOptions) => ({ bun: Bun.version, options: settled(options) })

/** Why the bundle is not up to date, or undefined when it is. */
export const staleReason = (options: BundleOptions = {}): string | undefined => {
  const outdir = options.outdir ?? DIST
  let record: InputsRecord
  try {
    statSync(join(outdir, "main.js"))
    record = JSON.parse(readFileSync(join(outdir, "inputs.json"), "utf8")) as InputsRecord
  } catch {
    return "no bundle yet"
  }
  if (typeof record.files !== "object" || record.files === null) return "its inputs list is unreadable"
  if (typeof record.outputs !== "object" || record.outputs === null) return "its outputs list is unreadable"
  if (JSON.stringify({ bun: record.bun, options: record.options }) !== JSON.stringify(expectedHeader(options))) {
    return "built by another Bun or with other options"
  }
  for (const [path, hash] of Object.entries(record.files)) {
    if (hashOf(join(ROOT, path)) !== hash) return `${path} changed`
  }
  for (const path of Object.keys(record.outputs)) {
    try {
      statSync(join(outdir, path))
    } catch {
      return `${path} is missing`
    }
  }
  return undefined
}

/** One bundler message as `file:line:column: message` (Bun's BuildMessage and ResolveMessage). */
const describeLog = (log: unknown): string => {
  const { message, position } = log as { message?: unknown; position?: { file?: string; line?: number; column?: number } | null }
  const where = position?.file === undefined ? "" : `${relative(ROOT, resolve(position.file))}:${position.line}:${position.column}: `
  return `${where}${typeof message === "string" ? message : String(log)}`
}

/** Builds the bundle and its inputs list; throws with the bundler's messages when it fails. */
export const buildBundle = async (options: BundleOptions = {}): Promise<{ readonly seconds: number; readonly inputs: ReadonlyArray<string> }> => {
  const outdir = options.outdir ?? DIST
  const { minify, sourcemap } = settled(options)
  const started = Date.now()
  const result = await Bun.build({
    entrypoints: [ENTRY],
    target: "bun",
    format: "esm",
    root: ROOT,
    external: EXTERNAL,
    plugins: [noFastCheck],
    minify:
      minify === "full" ? true : minify === "none" ? false : { whitespace: true, syntax: true, identifiers: false },
    sourcemap,
    metafile: true,
    splitting: true,
    naming: { entry: "[name].[ext]", chunk: `${CHUNKS}/chunk-[hash].[ext]` },
    throw: false,
  })
  if (!result.success) {
    throw new Error(result.logs.map(describeLog).join("\n") || "the bundler failed without a message")
  }
  const main = result.outputs.find((o) => o.kind === "entry-point")
  if (main === undefined || outputName(main) !== "main.js") throw new Error("the bundler wrote no entry point main.js")
  // The metafile names inputs from the working directory; virtual modules (the stub's) have no file.
  const inputs = Object.keys(result.metafile.inputs)
    .filter((p) => !p.startsWith(`${NAMESPACE}:`))
    .map((p) => relative(ROOT, resolve(p)))
  const files: Record<string, string> = {}
  for (const path of [...inputs, ...ALWAYS, relative(ROOT, SELF)]) {
    const full = join(ROOT, path)
    const hash = hashOf(full)
    if (hash === undefined) continue
    // Written since the build began (so maybe after the bundler read it): no hash, the next start builds
    // again. A time after now is a clock's skew (files copied from another machine), not an edit.
    const written = statSync(full).mtimeMs
    files[path] = written >= started && written <= Date.now() ? "" : hash
  }
  // The metafile's outputs are keyed by their path from the output root (`./chunks/…`); their inputs, from
  // the working directory, are recorded from the app's root as `files` is.
  const outputs: Record<string, ReadonlyArray<string>> = {}
  for (const [path, output] of Object.entries(result.metafile.outputs)) {
    outputs[relative(resolve(outdir), resolve(outdir, path.replace(/^\.\//, "")))] = Object.keys(output.inputs)
      .filter((p) => !p.startsWith(`${NAMESPACE}:`))
      .map((p) => relative(ROOT, resolve(p)))
  }
  mkdirSync(join(outdir, CHUNKS), { recursive: true })
  const record: InputsRecord = { ...expectedHeader(options), files, outputs }
  // Chunks (and maps) first, then main.js, which names them, then the inputs list that says it is fresh.
  const ordered = [...result.outputs.filter((o) => o !== main), main]
  const written = new Set<string>()
  const temps: Array<string> = []
  try {
    for (const output of ordered) {
      const name = outputName(output)
      const temp = join(outdir, dirname(name), `.${basename(name)}.${process.pid}.tmp`)
      temps.push(temp)
      writeFileSync(temp, await output.text())
      renameSync(temp, join(outdir, name))
      written.add(name)
    }
    const temp = join(outdir, `.inputs.json.${process.pid}.tmp`)
    temps.push(temp)
    writeFileSync(temp, `${JSON.stringify(record, null, 1)}\n`)
    renameSync(temp, join(outdir, "inputs.json"))
  } finally {
    for (const temp of temps) rmSync(temp, { force: true })
  }
  pruneChunks(outdir, written)
  return { seconds: (Date.now() - started) / 1000, inputs }
}

/** An output's path from the output directory, without `./`. */
const outputName = (output: BuildArtifact): string => relative(".", output.path)

/**
 * Removes the chunks of earlier builds: those this build did not write, once no build has written them
 * for CHUNK_KEEP_MS. A process that started from an earlier main.js imports its chunks while it starts,
 * so a chunk another start may still want is never removed at once.
 */
const pruneChunks = (outdir: string, written: ReadonlySet<string>): void => {
  const dir = join(outdir, CHUNKS)
  for (const file of readdirSync(dir)) {
    const name = `${CHUNKS}/${file}`
    if (written.has(name)) continue
    try {
      if (Date.now() - statSync(join(dir, file)).mtimeMs > CHUNK_KEEP_MS) rmSync(join(dir, file), { force: true })
    } catch {}
  }
}

if ((import.meta as { main?: boolean }).main === true) {
  const force = process.argv.includes("--force")
  const reason = force ? "--force" : staleReason()
  if (reason !== undefined) {
    try {
      await buildBundle()
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error)
      const where = relative(process.cwd(), BUNDLE) || BUNDLE
      process.stderr.write(
        /EACCES|EROFS|EPERM/.test(message)
          ? `mana-ai: ${where} is out of date (${reason}) and cannot be rebuilt here: ${message}. Build it where the app's files are writable (bun scripts/bundle.ts, as the Dockerfile does).\n`
          : `mana-ai: building ${where} failed (${reason}):\n${message}\n`,
      )
      process.exit(1)
    }
  }
}
