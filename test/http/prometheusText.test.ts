import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric, MetricBoundaries } from "effect"
import { prometheusSnapshot, renderPrometheus } from "../../src/http/prometheusText.js"

const lines = (text: string) => text.split("\n")

describe("Prometheus text", () => {
  it.effect("a counter with tags: one HELP and TYPE, one series per tag set", () =>
    Effect.gen(function* () {
      const counter = Metric.counter("mana_ai_test_things_total", { description: "Things\nseen" })
      yield* Metric.increment(Metric.tagged(counter, "kind", "a"))
      yield* Metric.incrementBy(Metric.tagged(counter, "kind", 'q"uo\\te'), 3)
      const text = renderPrometheus(yield* Metric.snapshot)
      const own = lines(text).filter((l) => l.includes("mana_ai_test_things_total"))
      expect(own).toEqual([
        "# HELP mana_ai_test_things_total Things\\nseen",
        "# TYPE mana_ai_test_things_total counter",
        'mana_ai_test_things_total{kind="a"} 1',
        'mana_ai_test_things_total{kind="q\\"uo\\\\te"} 3',
      ])
    }))

  it.effect("a gauge keeps its last value", () =>
    Effect.gen(function* () {
      const gauge = Metric.gauge("mana_ai_test_level")
      yield* Metric.set(gauge, 7)
      yield* Metric.set(gauge, 4)
      expect(lines(yield* prometheusSnapshot)).toContain("mana_ai_test_level 4")
    }))

  it.effect("a histogram renders cumulative buckets, +Inf, _sum and _count", () =>
    Effect.gen(function* () {
      const histogram = Metric.histogram("mana_ai_test_seconds", MetricBoundaries.fromIterable([0.01, 0.1, 10]), "Latency")
      yield* Metric.update(histogram, 0.001)
      yield* Metric.update(histogram, 1)
      const own = lines(yield* prometheusSnapshot).filter((l) => l.includes("mana_ai_test_seconds"))
      expect(own).toEqual([
        "# HELP mana_ai_test_seconds Latency",
        "# TYPE mana_ai_test_seconds histogram",
        'mana_ai_test_seconds_bucket{le="0.01"} 1',
        'mana_ai_test_seconds_bucket{le="0.1"} 1',
        'mana_ai_test_seconds_bucket{le="10"} 2',
        'mana_ai_test_seconds_bucket{le="+Inf"} 2',
        "mana_ai_test_seconds_sum 1.001",
        "mana_ai_test_seconds_count 2",
      ])
    }))

  it.effect("names without the prefix get it, and characters Prometheus refuses become _", () =>
    Effect.gen(function* () {
      yield* Metric.increment(Metric.counter("other.lib-requests"))
      const text = yield* prometheusSnapshot
      expect(text).toContain("# TYPE mana_ai_other_lib_requests counter")
      expect(text).toContain("mana_ai_other_lib_requests 1")
      for (const line of lines(text).filter((l) => l !== "" && !l.startsWith("#"))) {
        expect(line).toMatch(/^mana_ai_[a-zA-Z0-9_:]*(\{.*\})? \S+$/)
      }
    }))
})
