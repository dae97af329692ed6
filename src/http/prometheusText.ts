/**
 * Effect's metric registry (`Metric.snapshot`) as Prometheus text exposition format 0.0.4.
 * Written here rather than through @opentelemetry/exporter-prometheus: that path needs the
 * OpenTelemetry metrics SDK, a MeterProvider bridge and an exporter that wants its own HTTP server,
 * for what is a plain text rendering of counters, gauges and histograms.
 */
import * as Effect from "effect/Effect"
import * as Metric from "effect/Metric"
import type * as MetricPair from "effect/MetricPair"
import * as MetricState from "effect/MetricState"

const METRIC_PREFIX = "mana_ai_"
export const PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

const metricName = (raw: string): string => {
  const clean = raw.replace(/[^a-zA-Z0-9_:]/g, "_")
  return clean.startsWith(METRIC_PREFIX) ? clean : `${METRIC_PREFIX}${clean.replace(/^_+/, "")}`
}

const labelName = (raw: string): string => {
  const clean = raw.replace(/[^a-zA-Z0-9_]/g, "_")
  return /^[a-zA-Z_]/.test(clean) ? clean : `_${clean}`
}

const escapeLabelValue = (value: string): string =>
  value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n")

const escapeHelp = (text: string): string => text.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")

const formatValue = (value: number | bigint): string => {
  if (typeof value === "bigint") return value.toString()
  if (Number.isNaN(value)) return "NaN"
  if (value === Number.POSITIVE_INFINITY) return "+Inf"
  if (value === Number.NEGATIVE_INFINITY) return "-Inf"
  return String(value)
}

type Labels = ReadonlyArray<readonly [string, string]>

const formatLabels = (labels: Labels): string =>
  labels.length === 0 ? "" : `{${labels.map(([k, v]) => `${labelName(k)}="${escapeLabelValue(v)}"`).join(",")}}`

interface Family {
  readonly name: string
  help: string
  type: "counter" | "gauge" | "histogram" | "summary" | "untyped"
  readonly lines: Array<string>
}

const sample = (name: string, labels: Labels, value: number | bigint) => `${name}${formatLabels(labels)} ${formatValue(value)}`

/** Renders a snapshot; series are grouped by name (one HELP/TYPE each), sorted by name and labels. */
export const renderPrometheus = (pairs: ReadonlyArray<MetricPair.MetricPair.Untyped>): string => {
  const families = new Map<string, Family>()
  const family = (name: string, help: string, type: Family["type"]): Family => {
    const existing = families.get(name)
    if (existing !== undefined) return existing
    const created: Family = { name, help, type, lines: [] }
    families.set(name, created)
    return created
  }
  const sorted = [...pairs].sort((a, b) => {
    const byName = a.metricKey.name.localeCompare(b.metricKey.name)
    if (byName !== 0) return byName
    const la = formatLabels(a.metricKey.tags.map((t) => [t.key, t.value] as const))
    const lb = formatLabels(b.metricKey.tags.map((t) => [t.key, t.value] as const))
    return la.localeCompare(lb)
  })
  for (const pair of sorted) {
    const name = metricName(pair.metricKey.name)
    const help = pair.metricKey.description._tag === "Some" ? pair.metricKey.description.value : name
    const labels: Labels = pair.metricKey.tags.map((t) => [t.key, t.value] as const)
    const state = pair.metricState
    if (MetricState.isCounterState(state)) {
      family(name, help, "counter").lines.push(sample(name, labels, state.count))
    } else if (MetricState.isGaugeState(state)) {
      family(name, help, "gauge").lines.push(sample(name, labels, state.value))
    } else if (MetricState.isHistogramState(state)) {
      const f = family(name, help, "histogram")
      let sawInf = false
      // Effect's histogram buckets are already cumulative: [upper bound, observations ≤ bound].
      for (const [bound, count] of state.buckets) {
        if (bound === Number.POSITIVE_INFINITY) sawInf = true
        f.lines.push(sample(`${name}_bucket`, [...labels, ["le", formatValue(bound)]], count))
      }
      if (!sawInf) f.lines.push(sample(`${name}_bucket`, [...labels, ["le", "+Inf"]], state.count))
      f.lines.push(sample(`${name}_sum`, labels, state.sum))
      f.lines.push(sample(`${name}_count`, labels, state.count))
    } else if (MetricState.isSummaryState(state)) {
      const f = family(name, help, "summary")
      for (const [quantile, value] of state.quantiles) {
        if (value._tag === "Some") f.lines.push(sample(name, [...labels, ["quantile", String(quantile)]], value.value))
      }
      f.lines.push(sample(`${name}_sum`, labels, state.sum))
      f.lines.push(sample(`${name}_count`, labels, state.count))
    } else if (MetricState.isFrequencyState(state)) {
      const f = family(name, help, "counter")
      for (const [value, count] of state.occurrences) f.lines.push(sample(name, [...labels, ["value", value]], count))
    }
  }
  const out: Array<string> = []
  for (const f of [...families.values()].sort((a, b) => a.name.localeCompare(b.name))) {
    out.push(`# HELP ${f.name} ${escapeHelp(f.help)}`, `# TYPE ${f.name} ${f.type}`, ...f.lines)
  }
  return out.length === 0 ? "" : `${out.join("\n")}\n`
}

/** The process's metrics now, as Prometheus text. */
export const prometheusSnapshot: Effect.Effect<string> = Effect.map(Metric.snapshot, renderPrometheus)
