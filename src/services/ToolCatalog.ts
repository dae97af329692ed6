/**
 * The tool catalogue in force: the built-in one of SPEC §4, or TOOLS_FILE read and validated once at
 * start, in our shape ({"tools": [...]}) or the app's (an array with defaultPolicy; only `propose`
 * tools are kept). A bad file stops the start with a message naming TOOLS_FILE and its first problem.
 */
import * as FileSystem from "@effect/platform/FileSystem"
import * as Effect from "effect/Effect"
import * as Layer from "effect/Layer"
import * as Option from "effect/Option"
import * as ParseResult from "effect/ParseResult"
import * as Schema from "effect/Schema"
import { RATIONALE_PARAM } from "../domain/planParser.js"
import { AppToolCatalogFile, type Tool, Tool as ToolSchema, ToolCatalogFile, defaultTools, fromAppTool } from "../domain/tools.js"
import { LlmConfig } from "./AppConfig.js"

export class ToolCatalogError extends Schema.TaggedError<ToolCatalogError>()("ToolCatalogError", {
  path: Schema.String,
  reason: Schema.String,
}) {
  override get message() {
    return `TOOLS_FILE (${this.path}): ${this.reason}`
  }
}

export interface ToolCatalogShape {
  readonly tools: ReadonlyArray<Tool>
  /** "builtin" or the TOOLS_FILE path, for the start log. */
  readonly source: string
}

const loadToolsFile = (path: string): Effect.Effect<ReadonlyArray<Tool>, ToolCatalogError, FileSystem.FileSystem> =>
  Effect.gen(function* () {
    const fs = yield* FileSystem.FileSystem
    const fail = (reason: string) => new ToolCatalogError({ path, reason })
    const text = yield* fs
      .readFileString(path)
      .pipe(Effect.mapError((e) => fail(`cannot be read: ${e.message}`)))
    const json = yield* Effect.try({
      try: () => JSON.parse(text) as unknown,
      catch: (e) => fail(`is not valid JSON: ${e instanceof Error ? e.message : String(e)}`),
    })
    const tools = Array.isArray(json)
      ? yield* appCatalogue(json).pipe(Effect.mapError((reason) => fail(`is not an app tool catalogue: ${reason}`)))
      : typeof json === "object" && json !== null && "tools" in json
        ? yield* Schema.decodeUnknown(ToolCatalogFile, { onExcessProperty: "error" })(json).pipe(
            Effect.map((c) => c.tools),
            Effect.mapError((e) => fail(`is not a tool catalogue: ${firstIssue(e)}`)),
          )
        : yield* fail(
            'is neither a tool catalogue ({"tools": [...]}) nor an app tool catalogue (an array of tools with defaultPolicy)',
          )
    const reserved = tools.find((t) => t.params.some((p) => p.name === RATIONALE_PARAM))
    if (reserved !== undefined) {
      return yield* fail(`tool "${reserved.name}" has a parameter named "${RATIONALE_PARAM}", which the runner reserves for the step's rationale`)
    }
    return tools
  })

/** The app's catalogue: its `propose` tools, each checked as one of ours (index paths are the file's). */
const appCatalogue = (json: ReadonlyArray<unknown>): Effect.Effect<ReadonlyArray<Tool>, string> =>
  Effect.gen(function* () {
    // The app's entries may grow fields we do not read; only the listed ones are checked.
    const entries = yield* Schema.decodeUnknown(AppToolCatalogFile)(json).pipe(Effect.mapError(firstIssue))
    const names = entries.map((t) => t.name)
    const dup = names.find((n, i) => names.indexOf(n) !== i)
    if (dup !== undefined) return yield* Effect.fail(`tool "${dup}" is listed twice`)
    const tools: Array<Tool> = []
    for (const [i, entry] of entries.entries()) {
      if (entry.defaultPolicy !== "propose") continue
      const tool = yield* Schema.decodeUnknown(ToolSchema)(fromAppTool(entry)).pipe(
        Effect.mapError((e) => firstIssue(e, [i])),
      )
      tools.push(tool)
    }
    if (tools.length === 0) return yield* Effect.fail('it has no tool with defaultPolicy "propose", so there is nothing to offer')
    return tools
  })

/** The first problem, "at tools[0].params[1].type: must be one of …". */
const firstIssue = (error: ParseResult.ParseError, prefix: ReadonlyArray<PropertyKey> = []): string => {
  const [issue] = ParseResult.ArrayFormatter.formatErrorSync(error)
  if (issue === undefined) return "invalid"
  const at = [...prefix, ...issue.path].map((k) => (typeof k === "number" ? `[${k}]` : `.${String(k)}`)).join("").replace(/^\./, "")
  const message = issue.message.length > 200 ? `${issue.message.slice(0, 200)}…` : issue.message
  return at === "" ? message : `at ${at}: ${message}`
}

/** Reads LlmConfig.toolsFile; needs a FileSystem (BunContext.layer / NodeContext.layer). */
export class ToolCatalog extends Effect.Service<ToolCatalog>()("mana-ai/ToolCatalog", {
  effect: Effect.gen(function* (): Effect.fn.Return<ToolCatalogShape, ToolCatalogError, LlmConfig | FileSystem.FileSystem> {
    const { toolsFile } = yield* LlmConfig
    if (Option.isNone(toolsFile)) return { tools: defaultTools, source: "builtin" }
    const tools = yield* loadToolsFile(toolsFile.value)
    yield* Effect.logInfo("tool catalogue loaded").pipe(
      Effect.annotateLogs({ toolsFile: toolsFile.value, tools: tools.map((t) => t.name).join(",") }),
    )
    return { tools, source: toolsFile.value }
  }),
}) {
  static readonly fromTools = (tools: ReadonlyArray<Tool>, source = "test"): Layer.Layer<ToolCatalog> =>
    Layer.succeed(ToolCatalog, ToolCatalog.make({ tools, source }))

  static readonly builtin: Layer.Layer<ToolCatalog> = ToolCatalog.fromTools(defaultTools, "builtin")
}
