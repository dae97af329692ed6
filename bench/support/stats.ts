/** Distributions taken within one run: nearest-rank percentiles, summary in milliseconds. */

export const percentile = (sorted: ReadonlyArray<number>, p: number): number => {
  if (sorted.length === 0) return Number.NaN
  const rank = Math.ceil((p / 100) * sorted.length)
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!
}

export interface Summary {
  readonly n: number
  readonly min: number
  readonly p50: number
  readonly p90: number
  readonly p99: number
  readonly max: number
  readonly mean: number
}

export const summarize = (values: ReadonlyArray<number>): Summary => {
  const sorted = [...values].sort((a, b) => a - b)
  const n = sorted.length
  return {
    n,
    min: sorted[0] ?? Number.NaN,
    p50: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    p99: percentile(sorted, 99),
    max: sorted[n - 1] ?? Number.NaN,
    mean: n === 0 ? Number.NaN : sorted.reduce((a, b) => a + b, 0) / n,
  }
}

export const round = (x: number, digits = 2): number => (Number.isFinite(x) ? Number(x.toFixed(digits)) : x)

export const roundSummary = (s: Summary, digits = 2): Summary => ({
  n: s.n,
  min: round(s.min, digits),
  p50: round(s.p50, digits),
  p90: round(s.p90, digits),
  p99: round(s.p99, digits),
  max: round(s.max, digits),
  mean: round(s.mean, digits),
})

/** Wall-clock milliseconds with sub-millisecond resolution (the bench's own stopwatch). */
export const nowMs = (): number => performance.timeOrigin + performance.now()

/** When the bench started (epoch ms), shared with its child processes through the environment. */
export const benchStartedAt = (): number => {
  const inherited = Number(process.env.BENCH_STARTED_AT)
  if (Number.isFinite(inherited) && inherited > 0) return inherited
  const now = nowMs()
  process.env.BENCH_STARTED_AT = String(now)
  return now
}

