import { Either } from "effect"
import { describe, expect, it } from "vitest"
import {
  addToPart,
  dueAt,
  dueForTick,
  emptyTickPart,
  type Entry,
  hold,
  movedOn,
  releaseAgents,
  type OutcomeSummary,
  plan,
  renderTickError,
  RunResult,
  TickError,
  upsert,
  type View,
  type ViewSnapshot,
} from "../../src/domain/actorView.js"
import type { Mission } from "../../src/domain/mission.js"

const T = (minute: number) => Date.UTC(2025, 0, 1, 10, minute)

const mission = (id: string, nextRunAt: number | null): Mission =>
  ({
    id,
    title: `mission ${id}`,
    objective: "keep going",
    state: "active",
    nextRunAt: nextRunAt === null ? null : new Date(nextRunAt).toISOString(),
    cadence: { kind: "interval", everyMinutes: 10 },
    inputs: [],
    iterations: [],
  }) as unknown as Mission

const snapshot = (id: string, nextRunAt: number | null, opts: { schedulable?: boolean; malformed?: boolean } = {}): ViewSnapshot => ({
  missionId: id,
  decoded: opts.malformed ? Either.left("cadence: expected an object") : Either.right(mission(id, nextRunAt)),
  schedulable: opts.schedulable ?? (nextRunAt !== null && !opts.malformed),
  nextRunAt: nextRunAt === null ? null : new Date(nextRunAt),
})

const entry = (over: Partial<Entry> = {}): Entry => ({
  missionId: "m",
  mission: mission("m", T(0)),
  nextRunAt: T(0),
  ranSlot: null,
  running: false,
  removed: false,
  failures: 0,
  retryAt: null,
  held: null,
  newsWhileRunning: false,
  ...over,
})

const viewOf = (...entries: Array<Entry>): View => new Map(entries.map((e) => [e.missionId, e]))

describe("upsert", () => {
  const cases: ReadonlyArray<{
    name: string
    before: ReadonlyArray<Entry>
    snapshot: ViewSnapshot
    after: ReadonlyArray<Partial<Entry>>
  }> = [
    { name: "a new schedulable mission enters the view", before: [], snapshot: snapshot("m", T(5)), after: [{ missionId: "m", nextRunAt: T(5), failures: 0 }] },
    { name: "an unschedulable one unknown to the view stays out", before: [], snapshot: snapshot("m", null), after: [] },
    { name: "a malformed one stays out", before: [], snapshot: snapshot("m", T(5), { malformed: true }), after: [] },
    { name: "a paused mission leaves the view", before: [entry()], snapshot: snapshot("m", T(5), { schedulable: false }), after: [] },
    {
      name: "one no longer schedulable while running is kept, marked removed, until its run ends",
      before: [entry({ running: true })],
      snapshot: snapshot("m", null),
      after: [{ running: true, removed: true }],
    },
    {
      name: "a new slot resets the backoff",
      before: [entry({ failures: 2, retryAt: T(3) })],
      snapshot: snapshot("m", T(10)),
      after: [{ nextRunAt: T(10), failures: 0, retryAt: null }],
    },
    {
      name: "the same slot keeps the backoff",
      before: [entry({ failures: 2, retryAt: T(3) })],
      snapshot: snapshot("m", T(0)),
      after: [{ nextRunAt: T(0), failures: 2, retryAt: T(3) }],
    },
    {
      name: "a stale snapshot showing the slot already run keeps the slot the actor moved on to",
      before: [entry({ ranSlot: T(0), nextRunAt: T(10), mission: mission("m", T(10)) })],
      snapshot: snapshot("m", T(0)),
      after: [{ ranSlot: T(0), nextRunAt: T(10) }],
    },
  ]
  it.each(cases)("$name", ({ before, snapshot: s, after }) => {
    const view = viewOf(...before.map((e) => ({ ...e })))
    upsert(view, s)
    expect([...view.values()]).toMatchObject(after)
  })

  it("a stale snapshot keeps the mission's own nextRunAt, too", () => {
    const view = viewOf(entry({ ranSlot: T(0), nextRunAt: T(10), mission: mission("m", T(10)) }))
    upsert(view, snapshot("m", T(0)))
    expect(view.get("m")?.mission.nextRunAt).toBe(new Date(T(10)).toISOString())
  })

  it("an entry keeps what a run needs of the mission (id, nextRunAt, inputs, agentId), not its text or iterations", () => {
    const view: View = new Map()
    const inputs = [{ module: "companion", table: "companionGoals", id: "g1" }]
    const full = { ...mission("m", T(0)), agentId: "a1", inputs, iterations: [{ id: "it-1" }] } as unknown as Mission
    upsert(view, { ...snapshot("m", T(0)), decoded: Either.right(full) })
    const kept = view.get("m")?.mission
    expect(kept).toEqual({ id: "m", nextRunAt: new Date(T(0)).toISOString(), inputs, agentId: "a1" })
    // A copy: the decoded mission (amid the store pass's garbage) is not kept alive through it.
    expect(kept?.inputs).not.toBe(inputs)
  })

  it("movedOn: a written run's next slot is set on the entry's own copy, no new object (a run's survivor keeps a heap block)", () => {
    const view: View = new Map()
    upsert(view, snapshot("m", T(0)))
    const entry = view.get("m")!
    const copy = entry.mission
    movedOn(entry, new Date(T(10)).toISOString())
    expect(entry.mission).toBe(copy)
    expect(entry.mission).toEqual({ id: "m", nextRunAt: new Date(T(10)).toISOString(), inputs: [] })
    // A later snapshot still replaces the copy with one of its own.
    upsert(view, snapshot("m", T(20)))
    expect(view.get("m")?.mission).not.toBe(copy)
    expect(view.get("m")?.mission.nextRunAt).toBe(new Date(T(20)).toISOString())
  })
})

describe("dueAt", () => {
  it.each([
    ["nothing scheduled", entry({ nextRunAt: null }), null],
    ["a slot already run", entry({ nextRunAt: T(0), ranSlot: T(0) }), null],
    ["a scheduled slot", entry({ nextRunAt: T(5) }), T(5)],
    ["backing off past the slot", entry({ nextRunAt: T(5), retryAt: T(8) }), T(8)],
    ["a backoff already over by the slot", entry({ nextRunAt: T(5), retryAt: T(2) }), T(5)],
    // SPEC §14: a budget hold wakes at the window's freeAt, never earlier; a paused agent only on news.
    ["held by a budget until later", entry({ nextRunAt: T(5), held: { reason: "skipped-budget", until: T(40) } }), T(40)],
    ["held by a budget freed before the slot", entry({ nextRunAt: T(5), held: { reason: "skipped-budget", until: T(1) } }), T(5)],
    ["held by a paused agent", entry({ nextRunAt: T(5), held: { reason: "skipped-paused", until: null } }), null],
    ["held by a budget of 0 (no time frees it)", entry({ nextRunAt: T(5), held: { reason: "skipped-budget", until: null } }), null],
  ] as const)("%s → %s", (_, e, expected) => {
    expect(dueAt(e)).toBe(expected)
  })

  it.each([
    ["due now", entry({ nextRunAt: T(5) }), true],
    ["in the future", entry({ nextRunAt: T(6) }), false],
    ["running", entry({ nextRunAt: T(5), running: true }), false],
    ["removed", entry({ nextRunAt: T(5), removed: true }), false],
    ["a slot already run", entry({ nextRunAt: T(5), ranSlot: T(5) }), false],
    // A tick runs what is due now even while the mission backs off by itself.
    ["backing off", entry({ nextRunAt: T(5), retryAt: T(9) }), true],
    // A tick cannot change an agent's reason: a held entry waits for it too.
    ["held by a budget until 10:09", entry({ nextRunAt: T(5), held: { reason: "skipped-budget", until: T(9) } }), false],
    ["held by a budget freed at 10:05", entry({ nextRunAt: T(5), held: { reason: "skipped-budget", until: T(5) } }), true],
    ["held by an archived agent", entry({ nextRunAt: T(5), held: { reason: "skipped-archived", until: null } }), false],
  ] as const)("a tick at 10:05 finds an entry %s due: %s", (_, e, expected) => {
    expect(dueForTick(e, T(5))).toBe(expected)
  })
})

describe("agent holds (SPEC §14)", () => {
  const agentMission = (agentId: string) => ({ ...mission("m", T(0)), agentId }) as Mission

  it.each([
    ["skipped-budget", T(40), { reason: "skipped-budget", until: T(40) }],
    ["skipped-budget", null, { reason: "skipped-budget", until: null }],
    ["skipped-paused", T(40), { reason: "skipped-paused", until: null }],
    ["skipped-archived", null, { reason: "skipped-archived", until: null }],
    ["agent-malformed", null, { reason: "agent-malformed", until: null }],
  ] as const)("a %s skip (freeAt %s) holds the entry as %o and clears the retry backoff", (reason, until, held) => {
    const e = entry({ failures: 1, retryAt: T(3) })
    expect(hold(e, reason, until)).toBe(true)
    expect(e).toMatchObject({ held, retryAt: null, failures: 1 })
  })

  it("a skip whose run overlapped a change of the mission or agent does not hold: it is looked at again at once", () => {
    const e = entry({ running: true, mission: agentMission("a1") })
    releaseAgents(viewOf(e), new Set(["a1"]))
    expect(hold(e, "skipped-paused", null)).toBe(false)
    expect(e.held).toBeNull()
    expect(hold(e, "skipped-paused", null)).toBe(true)
  })

  it("a change of the entry's agent releases it; another agent's change does not", () => {
    const mine = entry({ missionId: "m1", mission: agentMission("a1"), held: { reason: "skipped-paused", until: null } })
    const other = entry({ missionId: "m2", mission: agentMission("a2"), held: { reason: "skipped-budget", until: T(40) } })
    const legacy = entry({ missionId: "m3", held: { reason: "skipped-budget", until: T(40) } })
    const view = viewOf(mine, other, legacy)
    expect(releaseAgents(view, new Set(["a1"]))).toBe(1)
    expect([mine.held, other.held, legacy.held]).toEqual([null, { reason: "skipped-budget", until: T(40) }, { reason: "skipped-budget", until: T(40) }])
    expect(dueAt(mine)).toBe(T(0))
  })

  it("a new snapshot of the mission releases its hold", () => {
    const view = viewOf(entry({ held: { reason: "skipped-archived", until: null } }))
    upsert(view, snapshot("m", T(0)))
    expect(view.get("m")?.held).toBeNull()
  })
})

describe("plan", () => {
  const ids = (p: ReturnType<typeof plan>) => p.due.map((e) => e.missionId)
  it.each([
    { name: "an empty view with no open tick is idle", view: [], openTicks: 0, launchable: true, due: [], wakeAt: null, idle: true },
    { name: "an open tick keeps an empty view from idling", view: [], openTicks: 1, launchable: true, due: [], wakeAt: null, idle: false },
    {
      name: "due entries start, the earliest later one sets the wake-up",
      view: [entry({ missionId: "a", nextRunAt: T(1) }), entry({ missionId: "b", nextRunAt: T(9) }), entry({ missionId: "c", nextRunAt: T(7) })],
      openTicks: 0,
      launchable: true,
      due: ["a"],
      wakeAt: T(7),
      idle: false,
    },
    {
      name: "not launchable (TICK_ENABLED=false or draining): nothing starts and nothing wakes",
      view: [entry({ missionId: "a", nextRunAt: T(1) }), entry({ missionId: "b", nextRunAt: T(9) })],
      openTicks: 0,
      launchable: false,
      due: [],
      wakeAt: null,
      idle: false,
    },
    {
      name: "a running entry is not started again and keeps the actor busy",
      view: [entry({ missionId: "a", nextRunAt: T(1), running: true })],
      openTicks: 0,
      launchable: true,
      due: [],
      wakeAt: null,
      idle: false,
    },
    {
      name: "a backing-off entry wakes at its retry",
      view: [entry({ missionId: "a", nextRunAt: T(1), retryAt: T(6) })],
      openTicks: 0,
      launchable: true,
      due: [],
      wakeAt: T(6),
      idle: false,
    },
    {
      name: "an entry whose slot was run waits for news: no wake-up, not idle",
      view: [entry({ missionId: "a", nextRunAt: T(1), ranSlot: T(1) })],
      openTicks: 0,
      launchable: true,
      due: [],
      wakeAt: null,
      idle: false,
    },
    {
      name: "removed and unscheduled entries count as nothing",
      view: [entry({ missionId: "a", nextRunAt: T(1), removed: true }), entry({ missionId: "b", nextRunAt: null })],
      openTicks: 0,
      launchable: true,
      due: [],
      wakeAt: null,
      idle: true,
    },
  ])("$name", ({ view, openTicks, launchable, due, wakeAt, idle }) => {
    const p = plan(viewOf(...view), openTicks, T(5), launchable)
    expect({ due: ids(p), wakeAt: p.wakeAt, idle: p.idle }).toEqual({ due, wakeAt, idle })
  })
})

describe("addToPart and the rendered tick errors", () => {
  const written = (over: Partial<OutcomeSummary> = {}): OutcomeSummary => ({ _tag: "Written", planProduced: true, parseFailures: 0, ...over })
  it.each([
    {
      name: "a written plan",
      result: RunResult.Outcome({ outcome: written({ parseFailures: 1 }) }),
      part: { ran: 1, plansProduced: 1, plansWrittenBack: 1, parseFailures: 1 },
      errors: [],
    },
    {
      name: "a written failed iteration",
      result: RunResult.Outcome({ outcome: written({ planProduced: false, failure: "PlanRejected" }) }),
      part: { ran: 1, plansProduced: 0, plansWrittenBack: 1, parseFailures: 0 },
      errors: ["mission m: PlanRejected"],
    },
    {
      name: "a skip",
      result: RunResult.Outcome({ outcome: { _tag: "Skipped", planProduced: false, parseFailures: 0 } as OutcomeSummary }),
      part: { ran: 1, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0 },
      errors: [],
    },
    {
      name: "a typed failure",
      result: RunResult.Failed({ error: { _tag: "MissionTimeout", message: "too slow" } }),
      part: { ran: 1, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0 },
      errors: ["mission m: MissionTimeout"],
    },
    {
      name: "not started while draining",
      result: RunResult.Aborted(),
      part: { ran: 0, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0 },
      errors: ["mission m: not started, shutting down"],
    },
    {
      name: "a defect",
      result: RunResult.Defect({ reason: "Error: boom" }),
      part: { ran: 1, plansProduced: 0, plansWrittenBack: 0, parseFailures: 0 },
      errors: ["mission m: defect"],
    },
  ])("$name", ({ result, part, errors }) => {
    const after = addToPart(emptyTickPart, result, "m")
    expect(after).toMatchObject(part)
    expect(after.errors.map(renderTickError)).toEqual(errors)
  })

  it.each([
    [TickError.ActorUnavailable({ userId: "u", reason: "quarantined" }), "user u: quarantined"],
    [TickError.ActorFailed({ userId: "u", reason: "Error: boom" }), "user u: actor failed (Error: boom)"],
    [TickError.DiscoveryFailed({ message: "connection refused" }), "discovery: connection refused"],
    [TickError.DueQueryFailed({ message: "connection refused" }), "due missions: connection refused"],
    [TickError.ShuttingDown(), "shutting-down"],
    [TickError.OverlapSkipped(), "overlap-skipped"],
  ] as const)("%o renders as %s", (error, text) => {
    expect(renderTickError(error)).toBe(text)
  })
})
