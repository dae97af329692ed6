/**
 * The tool catalogue in force: the built-in one of SPEC §4, or TOOLS_FILE (JSON, same shape) read and
 * validated once at start. A bad file stops the start with a message naming TOOLS_FILE and the problem.
 */
import { FileSystem } from "@effect/platform"
import { Context, Effect, Layer, Option, ParseResult, Schema } from "effect"
import { type Tool, ToolCatalogFile, defaultTools } from "../domain/tools.js"
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

export const loadToolsFile = (path: string): Effect.Effect<ReadonlyArray<Tool>, ToolCatalogError, FileSystem.FileSystem> =>
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
    const catalogue = yield* Schema.decodeUnknown(ToolCatalogFile, { onExcessProperty: "error" })(json).pipe(
      Effect.mapError((e) => fail(`is not a tool catalogue: ${describeIssues(e)}`)),
    )
    return catalogue.tools
  })

/** One line per problem, "at tools[0].params[1].type: must be one of …". */
const describeIssues = (error: ParseResult.ParseError): string =>
  [
    ...new Set(
      ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => {
        const at = issue.path.map((k) => (typeof k === "number" ? `[${k}]` : `.${String(k)}`)).join("").replace(/^\./, "")
        const message = issue.message.length > 200 ? `${issue.message.slice(0, 200)}…` : issue.message
        return at === "" ? message : `at ${at}: ${message}`
      }),
    ),
  ].join("; ")

export class ToolCatalog extends Context.Tag("mana-ai/ToolCatalog")<ToolCatalog, ToolCatalogShape>() {
  /** Reads LlmConfig.toolsFile; needs a FileSystem (BunContext.layer / NodeContext.layer). */
  static readonly layer = Layer.effect(
    ToolCatalog,
    Effect.gen(function* () {
      const { toolsFile } = yield* LlmConfig
      if (Option.isNone(toolsFile)) return { tools: defaultTools, source: "builtin" }
      const tools = yield* loadToolsFile(toolsFile.value)
      yield* Effect.logInfo("tool catalogue loaded").pipe(
        Effect.annotateLogs({ toolsFile: toolsFile.value, tools: tools.map((t) => t.name).join(",") }),
      )
      return { tools, source: toolsFile.value }
    }),
  )

  static readonly fromTools = (tools: ReadonlyArray<Tool>, source = "test") => Layer.succeed(ToolCatalog, { tools, source })

  static readonly builtin = ToolCatalog.fromTools(defaultTools, "builtin")
}
