/**
 * The tool catalogue (SPEC §4): the allow-list the planner may propose from. The server never runs a
 * tool; the catalogue only tells the LLM what exists and lets the parser check each proposal.
 *
 * TOOLS_FILE holds the same shape as JSON:
 *   { "tools": [ { "name": "create_task", "module": "todo", "description": "…",
 *                  "params": [ { "name": "title", "type": "string", "required": true, "description": "…" },
 *                              { "name": "priority", "type": "string", "enum": ["low", "medium", "high"], "description": "…" },
 *                              { "name": "dueDate", "type": "string", "format": "date", "description": "…" } ] } ] }
 *
 * or the app's own catalogue (shared-ai's AI_TOOL_CATALOG exported as JSON), an array:
 *   [ { "name": "create_event", "module": "calendar", "description": "…", "defaultPolicy": "propose",
 *       "parameters": [ { "name": "title", "type": "string", "required": true, "description": "…" } ] } ]
 * of which only the `propose` tools are offered (`auto` tools run on the device, `deny` never).
 */
import * as Schema from "effect/Schema"

// `override`: one readable line instead of one "Expected …" per literal.
const ParamType = Schema.Literal("string", "number", "boolean", "object", "array").annotations({
  message: () => ({ message: "must be one of string, number, boolean, object, array", override: true }),
})
export type ParamType = typeof ParamType.Type

/** `date` is a calendar date YYYY-MM-DD; `date-time` an ISO-8601 instant with a time and an offset or Z. */
const ParamFormat = Schema.Literal("date", "date-time").annotations({
  message: () => ({ message: "must be date or date-time", override: true }),
})
export type ParamFormat = typeof ParamFormat.Type

const Name = Schema.String.pipe(
  Schema.pattern(/^[A-Za-z_][A-Za-z0-9_]{0,63}$/, {
    message: () => "a name must be letters, digits and _ (not starting with a digit), at most 64 characters",
  }),
)

const isValidRegExp = (source: string): boolean => {
  try {
    new RegExp(source, "u")
    return true
  } catch {
    return false
  }
}

const exact = { exact: true } as const

export const ToolParam = Schema.Struct({
  name: Name,
  type: ParamType,
  required: Schema.optionalWith(Schema.Boolean, exact),
  enum: Schema.optionalWith(Schema.NonEmptyArray(Schema.Union(Schema.String, Schema.Number, Schema.Boolean)), exact),
  format: Schema.optionalWith(ParamFormat, exact),
  /** A JavaScript (unicode) regular expression a string value must match, e.g. "^[0-9a-f-]{36}$". */
  pattern: Schema.optionalWith(
    Schema.String.pipe(Schema.filter(isValidRegExp, { message: () => "is not a valid regular expression" })),
    exact,
  ),
  description: Schema.String,
})
  .annotations({ message: () => "expected a parameter {name, type, description, required?, enum?, format?, pattern?}" })
  .pipe(
    Schema.filter((p) => {
      if ((p.format !== undefined || p.pattern !== undefined) && p.type !== "string") {
        return `parameter "${p.name}": format and pattern apply to string parameters only`
      }
      if (p.enum !== undefined && !p.enum.every((v) => typeof v === p.type)) {
        return `parameter "${p.name}": every enum value must be of type ${p.type}`
      }
      return undefined
    }),
  )
export type ToolParam = typeof ToolParam.Type

export const Tool = Schema.Struct({
  name: Name,
  module: Schema.NonEmptyTrimmedString,
  description: Schema.String,
  params: Schema.Array(ToolParam).annotations({ message: () => "must be an array of parameters" }),
})
  .annotations({ message: () => "expected a tool {name, module, description, params}" })
  .pipe(
    Schema.filter((t) => {
      const names = t.params.map((p) => p.name)
      const dup = names.find((n, i) => names.indexOf(n) !== i)
      return dup === undefined ? undefined : `tool "${t.name}" lists parameter "${dup}" twice`
    }),
  )
export type Tool = typeof Tool.Type

/** The TOOLS_FILE document. */
export const ToolCatalogFile = Schema.Struct({
  tools: Schema.Array(Tool).pipe(Schema.minItems(1, { message: () => "must list at least one tool" })),
})
  .annotations({ message: () => 'expected an object {"tools": [...]}' })
  .pipe(
    Schema.filter((c) => {
      const names = c.tools.map((t) => t.name)
      const dup = names.find((n, i) => names.indexOf(n) !== i)
      return dup === undefined ? undefined : `tool "${dup}" is listed twice`
    }),
  )
export type ToolCatalogFile = typeof ToolCatalogFile.Type

/** The built-in catalogue of SPEC §4, used when TOOLS_FILE is unset. */
export const defaultTools: ReadonlyArray<Tool> = [
  {
    name: "create_task",
    module: "todo",
    description: "Create a task in the user's to-do list.",
    params: [
      { name: "title", type: "string", required: true, description: "Short title of the task." },
      { name: "dueDate", type: "string", format: "date", description: "Due date as YYYY-MM-DD." },
      {
        name: "priority",
        type: "string",
        enum: ["low", "medium", "high"],
        description: "How urgent the task is.",
      },
      { name: "description", type: "string", description: "Longer notes for the task." },
    ],
  },
  {
    name: "complete_task",
    module: "todo",
    description: "Mark an existing task as done.",
    params: [{ name: "taskId", type: "string", required: true, description: "Id of the task to complete." }],
  },
  {
    name: "create_event",
    module: "calendar",
    description: "Create an event in the user's calendar.",
    params: [
      { name: "title", type: "string", required: true, description: "Title of the event." },
      {
        name: "startIso",
        type: "string",
        required: true,
        format: "date-time",
        description: "Start as an ISO-8601 date-time with offset, e.g. 2025-03-01T09:00:00+01:00.",
      },
      {
        name: "endIso",
        type: "string",
        format: "date-time",
        description: "End as an ISO-8601 date-time with offset; after the start.",
      },
    ],
  },
  {
    name: "create_place",
    module: "places",
    description: "Save a place to the user's places.",
    params: [
      { name: "name", type: "string", required: true, description: "Name of the place." },
      { name: "category", type: "string", description: "Kind of place, e.g. cafe, gym, office." },
    ],
  },
]

// ---------------------------------------------------------------- the app's catalogue shape

export const ToolPolicy = Schema.Literal("auto", "propose", "deny").annotations({
  message: () => ({ message: "must be one of auto, propose, deny", override: true }),
})

/** The app's parameter: `required` and `description` always there, no format or pattern. */
const AppToolParam = Schema.Struct({
  name: Name,
  type: ParamType,
  required: Schema.Boolean,
  description: Schema.String,
  enum: Schema.optionalWith(Schema.NonEmptyArray(Schema.Union(Schema.String, Schema.Number, Schema.Boolean)), exact),
}).annotations({ message: () => "expected a parameter {name, type, required, description, enum?}" })

const AppTool = Schema.Struct({
  name: Name,
  module: Schema.NonEmptyTrimmedString,
  description: Schema.String,
  defaultPolicy: ToolPolicy,
  parameters: Schema.Array(AppToolParam).annotations({ message: () => "must be an array of parameters" }),
}).annotations({ message: () => "expected a tool {name, module, description, defaultPolicy, parameters}" })
export type AppTool = typeof AppTool.Type

/** The app's catalogue document: a non-empty array of tools. */
export const AppToolCatalogFile = Schema.Array(AppTool).pipe(Schema.minItems(1, { message: () => "must list at least one tool" }))

/** An app tool in our shape (checked again by `Tool` by the caller: duplicate parameters, enum types). */
export const fromAppTool = (t: AppTool): Tool => ({
  name: t.name,
  module: t.module,
  description: t.description,
  params: t.parameters.map((p) => ({
    name: p.name,
    type: p.type,
    required: p.required,
    description: p.description,
    ...(p.enum === undefined ? {} : { enum: p.enum }),
  })),
})

// ---------------------------------------------------------------- tools mode

/** The parameter every offered tool gets in tools mode; the runner strips it into the step's rationale. */
const RATIONALE_DESCRIPTION =
  "Why this step helps the mission: one or two sentences the user reads when deciding on the proposal. Required, never empty."

const paramSchema = (p: ToolParam): Record<string, unknown> => ({
  type: p.type,
  description: p.description,
  ...(p.enum === undefined ? {} : { enum: p.enum }),
  ...(p.format === undefined ? {} : { format: p.format }),
  ...(p.pattern === undefined ? {} : { pattern: p.pattern }),
  // Some providers refuse an array schema without `items`.
  ...(p.type === "array" ? { items: {} } : {}),
})

/** The catalogue as OpenAI function tools (SPEC §4 tools mode), each with the added `rationale`. */
export const functionTools = (tools: ReadonlyArray<Tool>) =>
  tools.map((t) => ({
    type: "function" as const,
    function: {
      name: t.name,
      description: t.description,
      parameters: {
        type: "object",
        properties: {
          ...Object.fromEntries(t.params.map((p) => [p.name, paramSchema(p)])),
          rationale: { type: "string", description: RATIONALE_DESCRIPTION },
        },
        required: [...t.params.filter((p) => p.required === true).map((p) => p.name), "rationale"],
        additionalProperties: false,
      },
    },
  }))
