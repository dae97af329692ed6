/**
 * The deterministic offline planner (SPEC §11): embedded mode without MANA_LLM_URL still produces a
 * valid plan for the default catalogue, labelled as offline. Same mission and inputs → same plan.
 */
import type { Mission } from "./mission.js"
import type { PlanDraft, PlannedStep } from "./planParser.js"
import type { PromptInput } from "./prompt.js"
import { ENCRYPTED_PREFIX } from "./prompt.js"

export const OFFLINE_SUMMARY_PREFIX = "Offline planner:"

const clip = (value: string, max: number): string => (value.length > max ? `${value.slice(0, max - 1)}…` : value)

/** A field the planner may quote: present, not ciphertext, not blank. */
const readable = (value: string | undefined): string | undefined => {
  const v = value?.trim()
  return v === undefined || v === "" || v.startsWith(ENCRYPTED_PREFIX) ? undefined : v.replace(/\s+/g, " ")
}

export const offlinePlan = (mission: Mission, resolvedInputs: ReadonlyArray<PromptInput> = []): PlanDraft => {
  const title = readable(mission.title)
  const objective = readable(mission.objective)
  const first: PlannedStep = {
    summary: title === undefined ? "Plan the next step of your mission" : clip(`Next step: ${title}`, 120),
    toolName: "create_task",
    params: {
      title: title === undefined ? "Next step for your mission" : clip(`Next step: ${title}`, 120),
      priority: "medium",
      ...(objective === undefined ? {} : { description: clip(`Objective: ${objective}`, 500) }),
    },
    rationale: "Without a language model configured, the offline planner proposes one concrete task toward the objective so the mission keeps moving; adjust it as you like.",
  }
  const input = resolvedInputs.find((i) => readable(i.title) !== undefined)
  const inputTitle = readable(input?.title)
  const steps: Array<PlannedStep> = [first]
  if (input !== undefined && inputTitle !== undefined) {
    const content = readable(input.content)
    steps.push({
      summary: clip(`Review progress: ${inputTitle}`, 120),
      toolName: "create_task",
      params: {
        title: clip(`Review progress: ${inputTitle}`, 120),
        priority: "low",
        ...(content === undefined ? {} : { description: clip(content, 500) }),
      },
      rationale: "This input is linked to the mission; checking it keeps the next steps grounded in where things stand.",
    })
  }
  const about = title === undefined ? "your mission" : `"${clip(title, 80)}"`
  return {
    summary: `${OFFLINE_SUMMARY_PREFIX} ${steps.length === 1 ? "one task" : `${steps.length} tasks`} proposed for ${about} (no language model configured).`,
    steps,
  }
}
