/**
 * PLANNER_MODE end to end: the real Bun process, a real database as the runner role and the HTTP LLM
 * stand-in, once in tools mode (the default: PLANNER_MODE unset) and once in json mode. What the
 * process sends the model, and the iteration it writes, key for key (SPEC §3: the app's closed types).
 * Also TOOLS_FILE at start: the app's catalogue shape offers only its propose tools; a file in
 * neither shape stops the start naming the file and the problem.
 */
import { mkdtempSync, writeFileSync } from "node:fs"
import { tmpdir } from "node:os"
import { join } from "node:path"
import { Either, Redacted, Schema } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type RecordedRequest,
  completion,
  messagesOf,
  planResponder,
  toolCall,
  toolCallsCompletion,
  toolsOf,
} from "../support/LlmStandIn.js"
import { MissionIterationSchema } from "../support/appTypes.js"
import { startManaProcess } from "../support/ManaProcess.js"
import { type Rig, type RunnerRow, makeRig } from "../support/ProcessRig.js"
import { missionInsertRow } from "../support/seed.js"

let rig: Rig

beforeAll(async () => {
  rig = await makeRig()
}, 120_000)

afterAll(async () => {
  await rig?.close()
}, 60_000)

const past = (minutes: number) => new Date(Date.now() - minutes * 60_000).toISOString()

/** A written iteration decodes as the app's own MissionIteration, no key more (test/support/appTypes.ts). */
const expectAppIteration = (iteration: unknown) =>
  expect(Either.isRight(Schema.decodeUnknownEither(MissionIterationSchema, { onExcessProperty: "error" })(iteration))).toBe(true)

/** The one iteration written for a mission. */
const iterationOf = (rows: ReadonlyArray<RunnerRow>, missionId: string) => {
  const mine = rows.filter((r) => r.record_id === missionId)
  expect(mine, missionId).toHaveLength(1)
  return mine[0]!.data.iterations[0] as unknown as Record<string, any>
}

const requestsAbout = (requests: ReadonlyArray<RecordedRequest>, marker: string) =>
  requests.filter((r) => messagesOf(r)[1]?.content.includes(marker))

/** What the default plan (test/support/LlmStandIn.ts) becomes as written steps, spelled out. */
const expectDefaultPlanSteps = (iteration: Record<string, any>, summaries: readonly [string, string]) => {
  expect(iteration.plan).toEqual([
    {
      id: `${iteration.id}-0`,
      summary: `${summaries[0]} — A concrete, time-boxed task keeps the mission moving.`,
      intent: { kind: "toolCall", toolName: "create_task", params: { title: "Work on the mission for 30 minutes", priority: "medium", dueDate: "2030-01-15" } },
      status: "planned",
    },
    {
      id: `${iteration.id}-1`,
      summary: `${summaries[1]} — A regular place makes the habit easier to keep.`,
      intent: { kind: "toolCall", toolName: "create_place", params: { name: "City library", category: "study" } },
      status: "planned",
    },
  ])
}

const ITERATION_KEYS = ["finishedAt", "id", "overallStatus", "plan", "source", "startedAt", "summary"]
const FAILED_KEYS = ["errorDetails", ...ITERATION_KEYS].sort()

describe("PLANNER_MODE through the real process", () => {
  it("tools (the default): tools offered, calls become steps, the final text the summary; misbehaviour repaired once, then a failed iteration naming only the kind", async () => {
    const { run, standIn } = rig
    await run(standIn.reset)
    const user = "modes-tools"
    // Per mission (its objective is in the prompt): a good model, one that only ever calls a tool
    // outside the catalogue, and one that never stops calling tools.
    let endless = 0
    await run(
      standIn.setResponder((r) => {
        const prompt = messagesOf(r)[1]?.content ?? ""
        if (prompt.includes("marker-rogue")) return { body: toolCallsCompletion([toolCall("launch_rocket_x9", { rationale: "Why not." })]) }
        if (prompt.includes("marker-endless")) return { body: toolCallsCompletion([toolCall("create_task", { title: `Task ${++endless}`, rationale: "More." })]) }
        return planResponder({
          summary: "Two small steps toward the objective",
          steps: [
            { toolName: "create_task", params: { title: "Work on the mission for 30 minutes", priority: "medium", dueDate: "2030-01-15" }, rationale: "A concrete, time-boxed task keeps the mission moving." },
            { toolName: "create_place", params: { name: "City library", category: "study" }, rationale: "A regular place makes the habit easier to keep." },
          ],
        })(r)
      }),
    )
    await rig.seed([
      missionInsertRow(user, "good", { nextRunAt: past(3), objective: "marker-good" }),
      missionInsertRow(user, "rogue", { nextRunAt: past(3), objective: "marker-rogue" }),
      missionInsertRow(user, "endless", { nextRunAt: past(3), objective: "marker-endless" }),
    ])
    const p = await rig.startRunner({ PLANNER_MAX_ROUNDS: "2" })
    const tick = await rig.tick(p)
    expect(tick.body).toMatchObject({ dueMissionCount: 3, plansProduced: 2, plansWrittenBack: 3, parseFailures: 2 })
    const requests = await run(standIn.requests)

    // The good mission: two requests (the calls, then the summary once each call is answered).
    const good = requestsAbout(requests, "marker-good")
    expect(good).toHaveLength(2)
    expect((good[0]?.body as Record<string, unknown> | undefined)?.tool_choice).toBe("auto")
    expect(toolsOf(good[0]).map((t) => t.function.name)).toEqual(["create_task", "complete_task", "create_event", "create_place"])
    expect(messagesOf(good[1]).slice(2).map((m) => m.role)).toEqual(["assistant", "tool", "tool"])
    const rows = await rig.runnerRows(user)
    const written = iterationOf(rows, "good")
    expect(Object.keys(written).sort()).toEqual(ITERATION_KEYS)
    expectAppIteration(written)
    expect(written).toMatchObject({ source: "server", overallStatus: "awaiting-review", summary: "Two small steps toward the objective" })
    expectDefaultPlanSteps(written, ["create_task: Work on the mission for 30 minutes", "create_place: City library"])

    // PLANNER_MAX_ROUNDS=2: the model that never stops is asked twice; its two steps are the plan.
    expect(requestsAbout(requests, "marker-endless")).toHaveLength(2)
    const endlessPlan = iterationOf(rows, "endless")
    expectAppIteration(endlessPlan)
    expect(endlessPlan.plan.map((s: any) => s.intent.params.title)).toEqual(["Task 1", "Task 2"])
    expect(endlessPlan.summary).toBe("2 steps proposed.")

    // The rogue model: one repair turn answering its call with the reason, then a failed iteration.
    const rogue = requestsAbout(requests, "marker-rogue")
    expect(rogue).toHaveLength(2)
    const repair = messagesOf(rogue[1]).at(-1)
    expect(repair?.role).toBe("tool")
    expect(JSON.parse(repair?.content ?? "{}").message).toMatch(/call 1: tool "launch_rocket_x9" is not in the catalogue/)
    const failed = iterationOf(rows, "rogue")
    expect(Object.keys(failed).sort()).toEqual(FAILED_KEYS)
    expectAppIteration(failed)
    expect(failed).toMatchObject({
      plan: [],
      overallStatus: "failed",
      source: "server",
      summary: "Planning failed: the model's answer was rejected 2 times (it named a tool outside the catalogue).",
      errorDetails: { name: "PlanRejected", message: "plan rejected: it named a tool outside the catalogue", phase: "parsing-response" },
    })
    expect(JSON.stringify(failed)).not.toContain("launch_rocket_x9")
    // The detail an operator needs is in the log.
    expect(p.logs().some((l) => l.message === "planner answer rejected" && String(l.annotations?.reason).includes("launch_rocket_x9"))).toBe(true)
    expect((await p.stop("SIGTERM", 15_000)).code).toBe(0)
  }, 120_000)

  it("json: no tools, one fenced answer per run, the same plan written with the model's step summaries", async () => {
    const { run, standIn } = rig
    await run(standIn.reset)
    const user = "modes-json"
    await rig.seed([missionInsertRow(user, "plain", { nextRunAt: past(3), objective: "marker-json" })])
    const p = await rig.startRunner({ PLANNER_MODE: "json" })
    const tick = await rig.tick(p)
    expect(tick.body).toMatchObject({ dueMissionCount: 1, plansProduced: 1, plansWrittenBack: 1, parseFailures: 0 })
    const requests = await run(standIn.requests)
    expect(requests).toHaveLength(1)
    const body = requests[0]?.body as Record<string, unknown>
    expect(Object.keys(body).sort()).toEqual(["messages", "model", "temperature"])
    expect(messagesOf(requests[0])[0]?.content).toContain("```json")
    const written = iterationOf(await rig.runnerRows(user), "plain")
    expect(Object.keys(written).sort()).toEqual(ITERATION_KEYS)
    expectAppIteration(written)
    expect(written).toMatchObject({ source: "server", overallStatus: "awaiting-review", summary: "Two small steps toward the objective" })
    expectDefaultPlanSteps(written, ["Block time for the next step", "Find a quiet place"])
    expect((await p.stop("SIGTERM", 15_000)).code).toBe(0)
  }, 120_000)

  it("TOOLS_FILE in the app's shape: only its propose tools are offered; a file in neither shape stops the start naming it and the problem", async () => {
    const { run, standIn } = rig
    await run(standIn.reset)
    const dir = mkdtempSync(join(tmpdir(), "mana-tools-"))
    const appFile = join(dir, "app-catalogue.json")
    writeFileSync(
      appFile,
      JSON.stringify([
        { name: "get_events", module: "calendar", description: "Termine lesen", defaultPolicy: "auto", parameters: [] },
        {
          name: "create_event",
          module: "calendar",
          description: "Termin anlegen",
          defaultPolicy: "propose",
          parameters: [
            { name: "title", type: "string", required: true, description: "Titel" },
            { name: "startTime", type: "string", required: true, description: "Beginn" },
            { name: "endTime", type: "string", required: true, description: "Ende" },
          ],
        },
        { name: "wipe_calendar", module: "calendar", description: "Alles löschen", defaultPolicy: "deny", parameters: [] },
      ]),
    )
    await run(
      standIn.setResponder((r) =>
        messagesOf(r).at(-1)?.role === "tool"
          ? { body: completion("One event.") }
          : {
              body: toolCallsCompletion([
                toolCall("create_event", { title: "Run", startTime: "2030-01-01T07:00:00Z", endTime: "2030-01-01T08:00:00Z", rationale: "Early." }),
              ]),
            },
      ),
    )
    const user = "modes-app-catalogue"
    await rig.seed([missionInsertRow(user, "cal", { nextRunAt: past(3) })])
    const p = await rig.startRunner({ TOOLS_FILE: appFile })
    await rig.tick(p)
    const [first] = await run(standIn.requests)
    expect(toolsOf(first).map((t) => t.function.name)).toEqual(["create_event"])
    const written = iterationOf(await rig.runnerRows(user), "cal")
    expect(written.plan[0].intent).toEqual({
      kind: "toolCall",
      toolName: "create_event",
      params: { title: "Run", startTime: "2030-01-01T07:00:00Z", endTime: "2030-01-01T08:00:00Z" },
    })
    expect((await p.stop("SIGTERM", 15_000)).code).toBe(0)

    const badFile = join(dir, "neither.json")
    writeFileSync(badFile, JSON.stringify({ catalogue: [] }))
    const bad = await startManaProcess({
      env: {
        SYNC_DATABASE_URL: Redacted.value(rig.db.runnerUrl),
        MANA_LLM_URL: standIn.url,
        MANA_SERVICE_KEY: "modes-service-key-0123456789",
        TICK_ENABLED: "false",
        TOOLS_FILE: badFile,
      },
    })
    const exited = await bad.exited
    expect(exited.code).not.toBe(0)
    expect(bad.stderr()).toContain(`TOOLS_FILE (${badFile}): is neither a tool catalogue`)
    expect(bad.stderr()).not.toMatch(/^\s+at /m)
  }, 120_000)
})
