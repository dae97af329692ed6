import { describe, expect, it } from "@effect/vitest"
import { Option } from "effect"
import { accepted, refused } from "../support/startupEnv.js"

describe("token budgets and the LLM breaker (SPEC §10, §14)", () => {
  it.each([
    ["USER_DAILY_TOKEN_BUDGET", "-1", /whole number of tokens ≥ 0/],
    ["USER_DAILY_TOKEN_BUDGET", "1.5", /whole number of tokens ≥ 0/],
    ["USER_DAILY_TOKEN_BUDGET", "lots", /whole number of tokens ≥ 0/],
    ["LLM_DAILY_TOKEN_BUDGET", "1e6", /whole number of tokens ≥ 0/],
    ["LLM_DAILY_TOKEN_BUDGET", "99999999999999999999", /whole number of tokens ≥ 0/],
    ["LLM_BREAKER_FAILURES", "0", /whole number ≥ 1/],
    ["LLM_BREAKER_FAILURES", "ten", /whole number ≥ 1/],
  ])("refuses %s=%j naming the variable and the form it expects", (variable, value, expected) => {
    const message = refused({ [variable]: value })
    expect(message).toContain(variable)
    expect(message).toMatch(expected)
  })

  it("unset and empty mean no budget; the breaker opens after 10 failures by default", () => {
    for (const env of [{}, { USER_DAILY_TOKEN_BUDGET: "", LLM_DAILY_TOKEN_BUDGET: "  " }]) {
      const config = accepted(env)
      expect(config.tokenBudget.userDailyTokens).toEqual(Option.none())
      expect(config.tokenBudget.llmDailyTokens).toEqual(Option.none())
      expect(config.llmBreaker.failures).toBe(10)
    }
  })

  it("reads the values, 0 included (0: nothing runs under that budget)", () => {
    const config = accepted({ USER_DAILY_TOKEN_BUDGET: "50000", LLM_DAILY_TOKEN_BUDGET: "0", LLM_BREAKER_FAILURES: "3" })
    expect(config.tokenBudget.userDailyTokens).toEqual(Option.some(50_000))
    expect(config.tokenBudget.llmDailyTokens).toEqual(Option.some(0))
    expect(config.llmBreaker.failures).toBe(3)
  })
})
