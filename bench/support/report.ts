/**
 * A figure is one number measured in this run, printed beside its target (when it has one) with
 * whether it holds; the table and bench/results/latest.json are both built from the figures.
 */
import { mkdirSync, renameSync, writeFileSync } from "node:fs"
import { dirname } from "node:path"

export interface Target {
  readonly op: "<" | "<=" | ">=" | ">"
  readonly value: number
  /** How the target reads in the table, e.g. "< 50 ms". */
  readonly text: string
}

export interface Figure {
  readonly id: string
  readonly label: string
  readonly value: number
  readonly unit: string
  readonly target?: Target
  /** Free-form context for the JSON (distributions, counts, settings). */
  readonly detail?: Readonly<Record<string, unknown>>
}

export const holds = (f: Figure): boolean | null => {
  if (f.target === undefined) return null
  if (!Number.isFinite(f.value)) return false
  switch (f.target.op) {
    case "<":
      return f.value < f.target.value
    case "<=":
      return f.value <= f.target.value
    case ">=":
      return f.value >= f.target.value
    case ">":
      return f.value > f.target.value
  }
}

const formatValue = (f: Figure): string => {
  const v = Math.abs(f.value) >= 100 ? f.value.toFixed(0) : Math.abs(f.value) >= 10 ? f.value.toFixed(1) : f.value.toFixed(2)
  return f.unit === "" ? v : `${v} ${f.unit}`
}

export const renderTable = (figures: ReadonlyArray<Figure>): string => {
  const rows = figures.map((f) => {
    const h = holds(f)
    return [f.label, formatValue(f), f.target?.text ?? "", h === null ? "" : h ? "yes" : "NO"]
  })
  const header = ["figure", "value", "target", "holds"]
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)))
  const line = (cells: ReadonlyArray<string>) =>
    `| ${cells.map((c, i) => (i === 1 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(" | ")} |`
  return [line(header), `|${widths.map((w) => "-".repeat(w + 2)).join("|")}|`, ...rows.map(line)].join("\n")
}

export const writeJson = (path: string, value: unknown): void => {
  mkdirSync(dirname(path), { recursive: true })
  // Written beside and renamed: an interrupted run never leaves half a file (*.tmp is git-ignored).
  const tmp = `${path}.tmp`
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`)
  renameSync(tmp, path)
}
