/**
 * Statements built once per shape (issue 16): a run's three large statements (the claim with the RLS
 * scope, the read, the write-back's append) were built from @effect/sql fragments and compiled at
 * every run, and their new text hashed again by the per-connection map of prepared names: about 6 %
 * of a run's CPU in a window profile, the largest cost of ours left. Their SQL text depends only on
 * a few flags (the shape), so each shape's statement is built and compiled once, by the same tagged
 * templates as before, with a placeholder in place of every value; each call then pairs the compiled
 * text with its values (`CompiledStatement`, what `pipelinedTransaction` sends) and sends the very
 * same string, whose hash the runtime keeps. No SQL text is made here: the text is what @effect/sql
 * compiled from tagged templates, the values go out as parameters (no `sql.unsafe`,
 * test/faults-fast/sqlParameterised.test.ts).
 *
 * The builder must use `values` only as parameters (`${values.x}` in a template), never in logic or
 * string building: a placeholder is an object, so `values.x === null ? … : …` would pick one branch
 * for every call. Whatever decides the text goes in the shape; a value computed from others (a JSON
 * text, a boolean) is computed before and passed as a value. A parameter that is not a placeholder
 * (a constant the builder names) is bound as it was at build time. sqlShapes.test.ts holds each
 * statement built here to the one its builder makes from the values directly.
 */
import type * as Statement from "@effect/sql/Statement"

/** Stands for the value of one field of `values` in a statement being built. */
class Placeholder {
  constructor(readonly field: string) {}
}

const placeholders: Record<string, unknown> = new Proxy(
  {},
  {
    get: (_target, field) => new Placeholder(String(field)),
  },
)

interface Shape {
  readonly text: string
  /** Per parameter, in order: the field of `values` it binds, or the constant it was built with. */
  readonly params: ReadonlyArray<Placeholder | { readonly constant: unknown }>
}

/** A statement compiled to its text and parameters, as `Statement#compile` gives them. */
export interface CompiledStatement {
  compile(): readonly [string, ReadonlyArray<unknown>]
}

class Bound implements CompiledStatement {
  constructor(
    private readonly text: string,
    private readonly params: ReadonlyArray<unknown>,
  ) {}
  compile(): readonly [string, ReadonlyArray<unknown>] {
    return [this.text, this.params]
  }
}

/** Shapes kept per `sqlShapes`; the run's statements have 2 (claim), 6 (append) and a few (read). */
export const MAX_SHAPES = 64

export type ShapedStatement<F, V> = (flags: F, values: V) => CompiledStatement

/**
 * `build(flags, values)` once per distinct `keyOf(flags)`, on placeholders; the returned function pairs
 * `values` with the compiled text of its flags' shape. `keyOf` must tell apart every pair of flags
 * `build` makes different text for. For a statement to send with `pipelinedTransaction`; where one must
 * run as an Effect, call `build` with the values.
 */
export const sqlShapes = <F, V extends object>(
  keyOf: (flags: F) => string | number,
  build: (flags: F, values: V) => Statement.Statement<unknown>,
): ShapedStatement<F, V> => {
  const shapes = new Map<string | number, Shape>()
  return (flags, values) => {
    const key = keyOf(flags)
    let shape = shapes.get(key)
    if (shape === undefined) {
      // Past MAX_SHAPES (a mission's inputs are not capped, and the read's shape follows them), built
      // for this call from the values, as before: the cache stays bounded.
      if (shapes.size >= MAX_SHAPES) return build(flags, values)
      const [text, binds] = build(flags, placeholders as V).compile()
      shape = { text, params: binds.map((b) => (b instanceof Placeholder ? b : { constant: b })) }
      shapes.set(key, shape)
    }
    const params: Array<unknown> = new Array(shape.params.length)
    for (let i = 0; i < params.length; i++) {
      const p = shape.params[i]!
      params[i] = p instanceof Placeholder ? (values as Record<string, unknown>)[p.field] : p.constant
    }
    return new Bound(shape.text, params)
  }
}
