/** RUNNER_ADDRESS and CLUSTER_SHARDS (issue 19): off by default, a bad value stops the start with a reason. */
import { Option } from "effect"
import { describe, expect, it } from "vitest"
import { accepted, refused } from "../support/startupEnv.js"

const live = {
  SYNC_DATABASE_URL: "postgres://runner@db.example:5432/mana",
  MANA_LLM_URL: "http://llm.example",
  MANA_SERVICE_KEY: "0123456789abcdef0123",
}

describe("cluster configuration", () => {
  it("is off without RUNNER_ADDRESS, also when it is empty", () => {
    expect(Option.isNone(accepted(live).cluster)).toBe(true)
    expect(Option.isNone(accepted({ ...live, RUNNER_ADDRESS: " " }).cluster)).toBe(true)
    expect(Option.isNone(accepted({}).cluster)).toBe(true)
  })

  it.each([
    ["10.0.0.5:34431", "10.0.0.5", 34431],
    ["runner-1.internal:7000", "runner-1.internal", 7000],
    ["[::1]:34431", "::1", 34431],
  ])("RUNNER_ADDRESS=%s is host %s, port %i", (value, host, port) => {
    const cluster = accepted({ ...live, RUNNER_ADDRESS: value }).cluster
    expect(Option.getOrThrow(cluster)).toMatchObject({ host, port, shards: 300 })
  })

  it.each([
    ["10.0.0.5", "it must be host:port"],
    [":34431", "it must be host:port"],
    ["10.0.0.5:0", "its port must be 1 to 65535, got 0"],
    ["10.0.0.5:70000", "its port must be 1 to 65535, got 70000"],
    ["http://10.0.0.5:34431", "it must be host:port"],
    ["::1:34431", "it must be host:port"],
  ])("RUNNER_ADDRESS=%s is refused: %s", (value, reason) => {
    const message = refused({ ...live, RUNNER_ADDRESS: value })
    expect(message).toContain("RUNNER_ADDRESS")
    expect(message).toContain(reason)
  })

  it("CLUSTER_SHARDS must be a whole number from 1 to 10000", () => {
    expect(Option.getOrThrow(accepted({ ...live, RUNNER_ADDRESS: "h:1", CLUSTER_SHARDS: "60" }).cluster).shards).toBe(60)
    expect(refused({ ...live, RUNNER_ADDRESS: "h:1", CLUSTER_SHARDS: "0" })).toContain("CLUSTER_SHARDS must be a whole number from 1 to 10000")
    expect(refused({ ...live, RUNNER_ADDRESS: "h:1", CLUSTER_SHARDS: "many" })).toContain("CLUSTER_SHARDS")
  })

  it("needs SYNC_DATABASE_URL: embedded PGlite serves one process", () => {
    expect(refused({ RUNNER_ADDRESS: "127.0.0.1:34431" })).toContain("RUNNER_ADDRESS needs SYNC_DATABASE_URL")
  })
})
