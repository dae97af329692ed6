/**
 * SIGTERM under load on the real Bun process (SPEC §8: "no new runs"): 500 due runs, GLOBAL_CONCURRENCY=4,
 * the signal after the first writes. After it no claim is taken and no LLM request is sent; only
 * requests already out finish and write back. Claims are seen from outside the process: a trigger,
 * installed as the owner, stamps every claim with the database's clock.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { messagesOf } from "../support/LlmStandIn.js"
import { eventually } from "../support/ManaProcess.js"
import { makeRig, type Rig } from "../support/ProcessRig.js"
import { missionInsertRow } from "../support/seed.js"

const USERS = 100
const PER_USER = 5
const LLM_MS = 300
/** A request or claim sent just before the process took the signal may land a little after its log line. */
const SIGNAL_MARGIN_MS = 250
/**
 * Runs at work at once: max(2 × GLOBAL_CONCURRENCY, USER_CONCURRENCY) = 8. A run already at work when
 * the signal came started before it, yet on a loaded machine its claim or first request can land
 * later than any fixed margin (a pool connection, BEGIN, the statement). So at most this many may
 * land late; a run started after the signal would make it one of hundreds (155 with the drain check
 * removed).
 */
const RUNS_AT_WORK = 8

let rig: Rig

beforeAll(async () => {
  rig = await makeRig()
}, 120_000)

afterAll(async () => {
  if (rig !== undefined) await rig.close()
}, 120_000)

describe("the drain under load", () => {
  it("after SIGTERM no claim is taken and no LLM request is sent, also for runs admitted and waiting for a run slot", async () => {
    const { run, standIn } = rig
    await run(standIn.reset)
    await run(standIn.setResponder(() => ({ delayMs: LLM_MS })))
    const past = new Date(Date.now() - 60_000).toISOString()
    await rig.seed(
      Array.from({ length: USERS }, (_, u) => `drain-${u}`).flatMap((user) =>
        Array.from({ length: PER_USER }, (_, k) => missionInsertRow(user, `${user}-m${k}`, { nextRunAt: past })),
      ),
    )
    const p = await rig.startRunner({
      TICK_ENABLED: "true",
      TICK_INTERVAL_MS: "500",
      GLOBAL_CONCURRENCY: "4",
      USER_CONCURRENCY: "2",
      MISSION_TIMEOUT_MS: "20000",
      LLM_TIMEOUT_MS: "10000",
      SHUTDOWN_GRACE_MS: "3000",
    })
    // The runner's table exists once it is ready: stamp every claim it takes from now on.
    await rig.db.ownerQuery(`CREATE TABLE public.claim_audit (mission_id text NOT NULL, at timestamptz NOT NULL)`)
    await rig.db.ownerQuery(
      `CREATE FUNCTION public.audit_claim() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER AS $$
       BEGIN INSERT INTO public.claim_audit VALUES (NEW.mission_id, clock_timestamp()); RETURN NEW; END $$`,
    )
    await rig.db.ownerQuery(
      `CREATE TRIGGER audit_claim AFTER INSERT OR UPDATE ON mana_ai.run_claims FOR EACH ROW EXECUTE FUNCTION public.audit_claim()`,
    )

    await eventually("the first writes", 60_000, async () => (await rig.runnerRows("drain-")).length >= 4, 50)
    const signalAt = Date.now()
    const exited = await p.stop("SIGTERM", 20_000)
    expect(exited.code).toBe(0)

    const requests = await run(standIn.requests)
    const claims = await rig.db.ownerQuery(`SELECT mission_id, (extract(epoch FROM at) * 1000)::float8 AS at FROM public.claim_audit`)
    // The reference is the moment the process took the signal (its own log line, same machine clock),
    // not the moment the test sent it: on a loaded machine the two can be hundreds of ms apart.
    const drainLine = p.logs().find((l) => l.message === "shutting down: no new runs, draining runs in flight") as
      | { readonly timestamp?: string }
      | undefined
    const drainAt = Date.parse(drainLine?.timestamp ?? "")
    expect(drainAt).toBeGreaterThanOrEqual(signalAt - 5)
    const after = drainAt + SIGNAL_MARGIN_MS
    // Load was real: runs were waiting for slots and permits when the signal came.
    expect(requests.length).toBeLessThan(USERS * PER_USER / 2)
    // A run's first request starts it; in tools mode a run already under way sends its summary request
    // once its tool calls are answered, which is finishing that run, not starting one.
    const firstRequests = requests.filter((r) => !messagesOf(r).some((m) => m.role === "tool"))
    const lateRequests = firstRequests.filter((r) => r.receivedAt > after).map((r) => r.receivedAt - drainAt)
    const lateClaims = claims.filter((c) => Number(c.at) > after).map((c) => c.mission_id)
    expect(lateRequests.length, `first requests after the signal: ${lateRequests.join(", ")} ms`).toBeLessThanOrEqual(RUNS_AT_WORK)
    expect(lateClaims.length, `claims after the signal: ${lateClaims.join(", ")}`).toBeLessThanOrEqual(RUNS_AT_WORK)
    // Whatever was written was planned by a request sent before the signal.
    const rows = await rig.runnerRows("drain-")
    expect(rows.length).toBeLessThanOrEqual(requests.length)
    expect(p.logs().at(-1)?.message).toBe("mana-ai stopped")
  }, 120_000)
})
