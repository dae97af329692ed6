/**
 * The bytes a pipelined sequence sends are pg-protocol's own: pipelinedTransaction writes Parse, Bind,
 * Describe, Execute and Sync into one buffer itself (issue 16), so each case here is held byte for byte
 * to the messages `serialize` makes, concatenated, with pg's `prepareValue` mapping the parameters.
 * The same sequences run against the database in pipelinedTransaction.test.ts.
 */
import Pg from "pg"
import { serialize } from "pg-protocol"
import { describe, expect, it } from "vitest"
import { sequenceMessages } from "../../src/services/pipelinedTransaction.js"

const prepareValue = (Pg as unknown as { utils: { prepareValue: (value: unknown) => unknown } }).utils.prepareValue

type Statements = ReadonlyArray<readonly [string, ReadonlyArray<unknown>]>

/** pg-protocol's messages for the sequence; `after`: the names the sequence recorded for the statements it parsed. */
const reference = (statements: Statements, before: Map<string, string> | undefined, after: Map<string, string> | undefined) => {
  const seen = new Map(before ?? [])
  const messages: Array<Buffer> = []
  for (const [text, values] of statements) {
    let name = seen.get(text)
    if (name === undefined) {
      name = after?.get(text) ?? ""
      messages.push(serialize.parse({ text, name, types: [] }))
      if (name !== "") seen.set(text, name)
    }
    messages.push(
      serialize.bind({ portal: "", statement: name, values: values as Array<unknown>, binary: false, valueMapper: prepareValue }),
      serialize.describe({ type: "P", name: "" }),
      serialize.execute({ portal: "", rows: 0 }),
    )
  }
  messages.push(serialize.sync())
  return Buffer.concat(messages)
}

const mixed: Statements = [
  ["BEGIN", []],
  ["SELECT set_config('app.current_user_id', $1, true)", ["user-1"]],
  [
    "INSERT INTO t (a, b, c, d, e, f, g, h, i) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    [
      "ascii",
      "ünïcødé — ✓ 🚀",
      42,
      3.5,
      null,
      undefined,
      new Date(Date.UTC(2026, 11, 2, 5, 31, 6, 123)),
      Buffer.from([0, 1, 2, 255]),
      true,
    ],
  ],
  ["SELECT $1::jsonb, $2::text[]", [JSON.stringify({ iterations: [{ id: "x", summary: "s".repeat(5000) }] }), ["a", "b,c", null]]],
  ["SELECT $1::jsonb", [{ nested: { plain: "object" } }]],
  ["SELECT ''", [""].slice(1)],
  ["SELECT $1", [""]],
  ["COMMIT", []],
]

describe("pipelinedTransaction's messages", () => {
  it("are pg-protocol's for unnamed statements (every kind of parameter)", () => {
    expect(sequenceMessages(mixed).equals(reference(mixed, undefined, undefined))).toBe(true)
  })

  it("parse a connection's new statements under names it records, and bind known ones by name", () => {
    const names = new Map<string, string>()
    const first = sequenceMessages(mixed, { serial: 7, names })
    expect(names.size).toBe(mixed.length)
    expect([...names.values()].every((n) => /^mana_ai_[0-9a-z]{8}_7_\d+$/.test(n))).toBe(true)
    expect(first.equals(reference(mixed, undefined, names))).toBe(true)

    // The same texts again, plus a new one twice in one sequence: bound by name, parsed once.
    const before = new Map(names)
    const again: Statements = [...mixed.slice(0, 3), ["SELECT $1::int + 1", [1]], ["SELECT $1::int + 1", [2]], ...mixed.slice(3)]
    const second = sequenceMessages(again, { serial: 7, names })
    expect(names.size).toBe(mixed.length + 1)
    expect(second.equals(reference(again, before, names))).toBe(true)
    expect(second.length).toBeLessThan(reference(again, undefined, undefined).length)
  })

  it("leave statements unnamed once a connection holds as many names as it may", () => {
    const names = new Map<string, string>(Array.from({ length: 200 }, (_, i) => [`SELECT ${i}`, `mana_ai_x_1_${i}`]))
    const before = new Map(names)
    const statements: Statements = [["SELECT 5", []], ["SELECT $1::text", ["new"]]]
    const bytes = sequenceMessages(statements, { serial: 1, names })
    expect(names.size).toBe(200)
    expect(bytes.equals(reference(statements, before, names))).toBe(true)
  })
})
