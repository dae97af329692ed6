/**
 * The operator page's "recent failures": the last few hundred failures the process logged, kept in
 * a bounded ring in memory. They are taken from the log itself (a Logger beside the process's own),
 * so every failure the runner reports to its log (a run that failed, an actor that crashed, a
 * quarantine, a failed discovery pass) shows up here with the same reason, and nothing that the log
 * would not show (the log carries no secret).
 *
 * Captured: every line at WARN or above, and an INFO line whose `overallStatus` annotation is
 * `failed` (a failed iteration written). Lines below LOG_LEVEL never reach a logger, so with
 * LOG_LEVEL=error only errors are kept.
 */
import * as Cause from "effect/Cause"
import * as HashMap from "effect/HashMap"
import type * as Layer from "effect/Layer"
import * as Logger from "effect/Logger"
import * as LogLevel from "effect/LogLevel"
import * as Option from "effect/Option"

export interface FailureEntry {
  readonly at: string
  readonly level: string
  readonly userId: string | null
  readonly missionId: string | null
  readonly message: string
  /** The log line's `reason` (or `error`, or the logged cause), when it has one. */
  readonly reason: string | null
}

export interface RecentFailuresShape {
  readonly record: (entry: FailureEntry) => void
  /** Newest first; only `userId`'s when given. */
  readonly recent: (limit: number, userId?: string) => ReadonlyArray<FailureEntry>
  /** Failures recorded since start (the ring keeps the last `capacity`). */
  readonly total: () => number
  readonly capacity: number
}

const DEFAULT_FAILURE_CAPACITY = 200

const MAX_TEXT = 500

const clip = (text: string): string => (text.length > MAX_TEXT ? `${text.slice(0, MAX_TEXT - 1)}…` : text)

/** A fixed-size ring: recording is O(1) and the memory stays bounded however long the process runs. */
export const makeRecentFailures = (capacity = DEFAULT_FAILURE_CAPACITY): RecentFailuresShape => {
  const ring: Array<FailureEntry | undefined> = new Array(capacity)
  let written = 0
  return {
    capacity,
    record: (entry) => {
      ring[written % capacity] = entry
      written++
    },
    recent: (limit, userId) => {
      const out: Array<FailureEntry> = []
      const oldest = Math.max(0, written - capacity)
      for (let i = written - 1; i >= oldest && out.length < limit; i--) {
        const entry = ring[i % capacity]
        if (entry !== undefined && (userId === undefined || entry.userId === userId)) out.push(entry)
      }
      return out
    },
    total: () => written,
  }
}

const textOf = (value: unknown): string | null => {
  if (value === undefined || value === null) return null
  if (typeof value === "string") return value
  if (typeof value === "number" || typeof value === "boolean") return String(value)
  return null
}

const partsOf = (message: unknown): ReadonlyArray<unknown> => (Array.isArray(message) ? message : [message])

/** The text parts of a log message (Effect.log("a", x, …) logs an array). */
const messageText = (message: unknown): string =>
  partsOf(message)
    .flatMap((m) => {
      const t = textOf(m)
      return t === null ? [] : [t]
    })
    .join(" ")

/** An Error logged beside the message (Effect.logError("…", error)) is the reason. */
const errorInMessage = (message: unknown): string | null => {
  const e = partsOf(message).find((m) => m instanceof Error)
  return e instanceof Error ? `${e.name}: ${e.message}` : null
}

const causeText = (cause: Cause.Cause<unknown>): string | null => {
  if (Cause.isEmpty(cause)) return null
  const e = Cause.squash(cause)
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e)
}

/** The Logger that feeds `failures`; add it beside the process's own loggers. */
export const failureLogger = (failures: RecentFailuresShape): Logger.Logger<unknown, void> =>
  Logger.make(({ logLevel, message, annotations, cause, date }) => {
    const get = (key: string) => textOf(Option.getOrUndefined(HashMap.get(annotations, key)))
    const failedIteration = logLevel._tag === "Info" && get("overallStatus") === "failed"
    if (!LogLevel.greaterThanEqual(logLevel, LogLevel.Warning) && !failedIteration) return
    const reason = get("reason") ?? get("error") ?? causeText(cause) ?? errorInMessage(message)
    failures.record({
      at: date.toISOString(),
      level: logLevel.label,
      userId: get("userId"),
      missionId: get("missionId"),
      message: clip(messageText(message)),
      reason: reason === null ? null : clip(reason),
    })
  })

/** Adds the capturing logger for everything built after (and forked from) this layer. */
export const captureFailures = (failures: RecentFailuresShape): Layer.Layer<never> => Logger.add(failureLogger(failures))
