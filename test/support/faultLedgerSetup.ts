/**
 * Vitest global setup: names a fresh ledger directory for the workers (they inherit the variable),
 * and at the end of the run prints the fault suite's figures, added up over every file that
 * recorded any, and writes them as JSON beside the entries (the path is printed).
 */
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from "node:fs"
import os from "node:os"
import path from "node:path"
import { LEDGER_ENV, type LedgerEntry } from "./FaultLedger.js"

export interface FaultSummary {
  readonly files: number
  readonly faultsInjected: number
  readonly faultsByKind: Record<string, number>
  readonly runs: number
  readonly iterationsWritten: number
  readonly duplicates: number
  readonly acknowledgedWrites: number
  readonly acknowledgedWritesLost: number
  readonly badInputsRejected: number
  readonly bySuite: Record<string, { faults: number; runs: number; iterationsWritten: number; duplicates: number; lost: number }>
}

export const summarise = (entries: ReadonlyArray<LedgerEntry>): FaultSummary => {
  const faultsByKind: Record<string, number> = {}
  const bySuite: FaultSummary["bySuite"] = {}
  let runs = 0
  let iterationsWritten = 0
  let duplicates = 0
  let acknowledgedWrites = 0
  let lost = 0
  let badInputs = 0
  for (const e of entries) {
    const s = bySuite[e.suite] ?? { faults: 0, runs: 0, iterationsWritten: 0, duplicates: 0, lost: 0 }
    bySuite[e.suite] = s
    for (const [kind, n] of Object.entries(e.faults ?? {})) {
      faultsByKind[kind] = (faultsByKind[kind] ?? 0) + n
      s.faults += n
    }
    runs += e.runs ?? 0
    s.runs += e.runs ?? 0
    iterationsWritten += e.iterationsWritten ?? 0
    s.iterationsWritten += e.iterationsWritten ?? 0
    duplicates += e.duplicates ?? 0
    s.duplicates += e.duplicates ?? 0
    acknowledgedWrites += e.acknowledgedWrites ?? 0
    lost += e.acknowledgedWritesLost ?? 0
    s.lost += e.acknowledgedWritesLost ?? 0
    badInputs += e.badInputsRejected ?? 0
  }
  return {
    files: new Set(entries.map((e) => e.suite)).size,
    faultsInjected: Object.values(faultsByKind).reduce((a, b) => a + b, 0),
    faultsByKind,
    runs,
    iterationsWritten,
    duplicates,
    acknowledgedWrites,
    acknowledgedWritesLost: lost,
    badInputsRejected: badInputs,
    bySuite,
  }
}

const render = (s: FaultSummary): string => {
  const lines = [
    "",
    "==================== mana-ai fault suite: figures ====================",
    `suites recording figures   ${s.files}`,
    `faults injected            ${s.faultsInjected}`,
    ...Object.entries(s.faultsByKind)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, n]) => `  ${k.padEnd(40)} ${n}`),
    `mission runs               ${s.runs}`,
    `iterations written         ${s.iterationsWritten}`,
    `duplicate iterations       ${s.duplicates}   (must be 0)`,
    `acknowledged writes        ${s.acknowledgedWrites}`,
    `acknowledged writes lost   ${s.acknowledgedWritesLost}   (must be 0)`,
    `bad inputs rejected        ${s.badInputsRejected}`,
    "per suite (faults / runs / iterations / duplicates / lost):",
    ...Object.entries(s.bySuite)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `  ${k.padEnd(44)} ${v.faults} / ${v.runs} / ${v.iterationsWritten} / ${v.duplicates} / ${v.lost}`),
    "======================================================================",
  ]
  return lines.join("\n")
}

export default function setup() {
  const dir = process.env[LEDGER_ENV] || mkdtempSync(path.join(os.tmpdir(), "mana-ai-fault-ledger-"))
  process.env[LEDGER_ENV] = dir
  return () => {
    let files: Array<string> = []
    try {
      files = readdirSync(dir).filter((f) => f.endsWith(".jsonl"))
    } catch {
      return
    }
    const entries = files.flatMap((f) =>
      readFileSync(path.join(dir, f), "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l) as LedgerEntry),
    )
    if (entries.length === 0) return
    const summary = summarise(entries)
    const out = path.join(dir, "summary.json")
    writeFileSync(out, JSON.stringify(summary, null, 2))
    process.stdout.write(`${render(summary)}\n(summary as JSON: ${out})\n`)
  }
}
