/**
 * SQL only through parameterised statements: every SQL text in src/ that interpolates a value is an
 * @effect/sql tagged template (`sql\`… ${v}\`` sends $n parameters), and nothing builds SQL by
 * concatenation or through sql.unsafe / sql.literal. The one exception is DDL that cannot take a
 * parameter (a role name in CREATE ROLE / SET ROLE): it must quote the identifier, which the scan
 * checks too. The scanner is checked against bad snippets first, so it cannot pass by seeing nothing.
 */
import { readdirSync, readFileSync, statSync } from "node:fs"
import path from "node:path"
import { describe, expect, it } from "vitest"

const SRC = path.resolve(import.meta.dirname, "../../src")

const SQL_START = /^\s*(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|SET|GRANT|REVOKE|LOCK|TRUNCATE|COPY|DO|BEGIN|COMMIT)\b/i
const SQL_ANYWHERE = /\b(SELECT\s.+\sFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM|WHERE\s+\w+\s*=)/i
/** An interpolation that only ever yields a quoted identifier or literal. */
const QUOTING = /^\s*(\w+(\.\w+)*\.replaceAll\((["'])"\3,\s*(["'])""\4\)|quoteIdent\(.*\)|quoteLiteral\(.*\))\s*$/

interface Template {
  readonly tag: string
  readonly text: string
  readonly holes: ReadonlyArray<string>
  readonly line: number
}

/** Template literals with their tag and ${…} expressions; skips strings, comments and regex-free code well enough for src/. */
const templatesOf = (source: string): ReadonlyArray<Template> => {
  const out: Array<Template> = []
  const lineAt = (i: number) => source.slice(0, i).split("\n").length
  const skipString = (i: number): number => {
    const q = source[i]
    let j = i + 1
    while (j < source.length && source[j] !== q) j += source[j] === "\\" ? 2 : 1
    return j + 1
  }
  // Parses the template starting at backtick `i`; returns the index after its closing backtick.
  const parseTemplate = (i: number): number => {
    const before = source.slice(Math.max(0, i - 80), i)
    // The type arguments hold no parentheses: otherwise an earlier `new Set<string>()` in the window
    // would be taken for the tag (the leftmost match) of `sql<{…}>` right before the backtick.
    const tag = /([A-Za-z_$][\w$]*)\s*(<[^`()]*>)?\s*$/.exec(before)?.[1] ?? ""
    let text = ""
    const holes: Array<string> = []
    let j = i + 1
    while (j < source.length && source[j] !== "`") {
      if (source[j] === "\\") {
        text += source.slice(j, j + 2)
        j += 2
      } else if (source[j] === "$" && source[j + 1] === "{") {
        let depth = 1
        let k = j + 2
        while (k < source.length && depth > 0) {
          const c = source[k]
          if (c === "`") {
            k = parseTemplate(k)
            continue
          }
          if (c === '"' || c === "'") {
            k = skipString(k)
            continue
          }
          if (c === "{") depth++
          if (c === "}") depth--
          k++
        }
        holes.push(source.slice(j + 2, k - 1))
        text += "<hole>"
        j = k
      } else {
        text += source[j]
        j++
      }
    }
    out.push({ tag, text, holes, line: lineAt(i) })
    return j + 1
  }
  let i = 0
  while (i < source.length) {
    const c = source[i]
    if (c === "/" && source[i + 1] === "/") {
      i = source.indexOf("\n", i)
      if (i < 0) break
    } else if (c === "/" && source[i + 1] === "*") {
      i = source.indexOf("*/", i) + 2
      if (i < 2) break
    } else if (c === '"' || c === "'") i = skipString(i)
    else if (c === "`") i = parseTemplate(i)
    else i++
  }
  return out
}

/** Why this file builds SQL unsafely, one line per finding. */
const findingsIn = (file: string, source: string): ReadonlyArray<string> => {
  const findings: Array<string> = []
  for (const t of templatesOf(source)) {
    const looksLikeSql = SQL_START.test(t.text) || SQL_ANYWHERE.test(t.text)
    if (!looksLikeSql || t.holes.length === 0) continue
    if (t.tag === "sql") continue // @effect/sql: each ${} is a bound parameter (or a sql fragment / identifier helper)
    const unsafe = t.holes.filter((h) => !QUOTING.test(h))
    if (unsafe.length > 0) findings.push(`${file}:${t.line}: SQL text built with \${${unsafe.join("}, ${")}} outside an sql\`\` template`)
  }
  source.split("\n").forEach((line, i) => {
    // Type arguments too (`sql.unsafe<Row>(text)`: the seventeenth session found the scan blind to them).
    if (/\.\s*unsafe\s*(<.*>)?\s*\(/.test(line) && !/unsafeJson|unsafeMake/.test(line)) findings.push(`${file}:${i + 1}: sql.unsafe`)
    if (/\bsql\s*\.\s*literal\s*\(/.test(line)) findings.push(`${file}:${i + 1}: sql.literal`)
    if (/\b(SELECT|INSERT|UPDATE|DELETE|WHERE|VALUES)\b[^\n]*["'`]\s*\+/.test(line) || /\+\s*["'`][^"'`\n]*\b(WHERE|AND|OR|VALUES|FROM)\b/.test(line)) {
      findings.push(`${file}:${i + 1}: SQL built by concatenation`)
    }
  })
  return findings
}

const sourceFiles = (dir: string): ReadonlyArray<string> =>
  readdirSync(dir).flatMap((name) => {
    const full = path.join(dir, name)
    return statSync(full).isDirectory() ? sourceFiles(full) : name.endsWith(".ts") ? [full] : []
  })

describe("SQL only through parameterised statements", () => {
  it("the scanner catches every unsafe form it looks for (so a clean result means something)", () => {
    // Snippets of source text: written as templates with \` and \${ escaped, so they hold the characters as is.
    const bad = [
      `const q = \`SELECT * FROM sync_changes WHERE user_id = '\${userId}'\``,
      `await pool.query(\`DELETE FROM sync_changes WHERE id = \${id}\`)`,
      "yield* sql.unsafe(`SELECT 1`)",
      "yield* sql.unsafe(text)",
      "return sql.unsafe<Record<string, unknown>>(shape.text, params)",
      "const s = \"SELECT * FROM t WHERE id = '\" + id + \"'\"",
      "const s = 'INSERT INTO t VALUES (' + v + ')'",
      "yield* sql.literal(name)",
      `db.exec(\`SET ROLE \${role}\`)`,
      `const t = foo\`UPDATE sync_changes SET data = \${d}\``,
    ]
    for (const snippet of bad) expect(findingsIn("snippet.ts", snippet), snippet).not.toEqual([])
    const good = [
      `yield* sql\`SELECT * FROM sync_changes WHERE user_id = \${userId}\``,
      `yield* sql<{ id: string }>\`INSERT INTO t (a) VALUES (\${a}) RETURNING id\``,
      `yield* sql\`SELECT \${sql(column)} FROM t WHERE \${sql.or(parts.map((p) => sql\`a = \${p}\`))}\``,
      `await db.exec(\`SET ROLE "\${runnerRole.replaceAll('"', '""')}"\`)`,
      "await db.query(\"SELECT 1 FROM pg_roles WHERE rolname = $1\", [runnerRole])",
      `const message = \`the mission \${id} was skipped: \${reason}\``,
    ]
    for (const snippet of good) expect(findingsIn("snippet.ts", snippet), snippet).toEqual([])
  })

  it("src/ holds no SQL built from values outside @effect/sql's tagged templates", () => {
    const files = sourceFiles(SRC)
    expect(files.length).toBeGreaterThan(20)
    const all = files.flatMap((f) => findingsIn(path.relative(SRC, f), readFileSync(f, "utf8")))
    expect(all).toEqual([])
    // The scan saw the real statements: many sql`` templates with parameters.
    const tagged = files.flatMap((f) => templatesOf(readFileSync(f, "utf8"))).filter((t) => t.tag === "sql" && t.holes.length > 0)
    expect(tagged.length).toBeGreaterThan(20)
  })
})
