/** Progress lines, stamped with the time since the bench started (the same clock in its children). */
import { Console, Effect } from "effect"
import { benchStartedAt, nowMs, round } from "./stats.js"

export const benchLog = (line: string): Effect.Effect<void> =>
  Effect.suspend(() => Console.log(`[bench +${round((nowMs() - benchStartedAt()) / 1000, 1)}s] ${line}`))
