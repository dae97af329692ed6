/**
 * What bench/tools/runOps.ts and actorOps.ts count in Effect's runtime (issue 16, CPU per run): a tally
 * by key, each run-loop instruction by op code and origin (the function it carries), and the fibers'
 * FiberRef reads and writes (FiberRuntime's own methods, wrapped while the process runs).
 */
import { Effect, Supervisor } from "effect"

export interface Tally {
  readonly counts: Map<string, number>
  readonly bump: (key: string, n?: number) => void
  /** The largest tallies, most first. */
  readonly top: (n: number) => ReadonlyArray<readonly [string, number]>
}

export const makeTally = (): Tally => {
  const counts = new Map<string, number>()
  return {
    counts,
    bump: (key, n = 1) => {
      counts.set(key, (counts.get(key) ?? 0) + n)
    },
    top: (n) => [...counts].sort((a, b) => b[1] - a[1]).slice(0, n),
  }
}

/** A short name for where an instruction's function comes from. */
export const whereFrom = (f: unknown): string => {
  if (typeof f !== "function") return typeof f
  const text = Function.prototype.toString.call(f).replace(/\s+/g, " ")
  return `${f.name || "anon"}: ${text.slice(0, 90)}`
}

interface Instruction {
  readonly _op?: string
  readonly effect_instruction_i0?: unknown
  readonly effect_instruction_i1?: unknown
  readonly effect_instruction_i2?: unknown
  readonly commit?: unknown
  readonly constructor?: { readonly name?: string }
}

/** The instruction's op code and the function it carries, shortened: one line of a trace. */
export const describeInstruction = (effect: unknown): string => {
  const e = effect as Instruction
  const op = e._op ?? "?"
  const f =
    op === "OnSuccess" || op === "OnFailure"
      ? e.effect_instruction_i1
      : op === "OnSuccessAndFailure"
        ? e.effect_instruction_i2
        : op === "Commit"
          ? e.commit
          : e.effect_instruction_i0
  return `${op} ${whereFrom(f).slice(0, 70)}`
}

/** Counts one instruction: all, by op code, and for the op codes that carry a function, by its origin. */
export const countInstruction = (tally: Tally, effect: unknown): void => {
  const e = effect as Instruction
  const op = e._op ?? "?"
  tally.bump(`op ${op}`)
  tally.bump("op (all)")
  if (op === "Sync" || op === "Async") tally.bump(`${op} ${whereFrom(e.effect_instruction_i0)}`)
  else if (op === "OnSuccess" || op === "OnFailure") tally.bump(`${op} ${whereFrom(e.effect_instruction_i1)}`)
  else if (op === "OnSuccessAndFailure") tally.bump(`${op} ${whereFrom(e.effect_instruction_i2)}`)
  else if (op === "Commit") tally.bump(`Commit ${e.constructor?.name ?? "?"} ${whereFrom(e.commit)}`)
  else if (op === "WithRuntime") tally.bump(`WithRuntime ${whereFrom(e.effect_instruction_i0)}`)
}

/**
 * A Supervisor calling `onInstruction` for every instruction and `onFiber` for every fiber started by
 * the effects it supervises (`Effect.supervised`, with `RuntimeFlags.OpSupervision` enabled).
 */
export const instructionSupervisor = (hooks: {
  readonly onFiber?: (fiber: object, effect: unknown) => void
  readonly onInstruction: (fiber: object, effect: unknown) => void
}): Supervisor.Supervisor<void> =>
  new (class extends Supervisor.AbstractSupervisor<void> {
    override get value() {
      return Effect.void
    }
    override onStart(_context: unknown, effect: unknown, _parent: unknown, fiber: unknown): void {
      hooks.onFiber?.(fiber as object, effect)
    }
    override onEffect(fiber: unknown, effect: unknown): void {
      hooks.onInstruction(fiber as object, effect)
    }
  })()

/** The FiberRef's initial value, as a name (its identity is not printable). */
const refName = (ref: unknown): string => {
  const initial = (ref as { initial?: unknown }).initial
  const text = typeof initial === "object" && initial !== null ? (initial.constructor?.name ?? "object") : String(initial)
  return text.slice(0, 40)
}

/**
 * Counts every FiberRef read and write while `counting()` says so (FiberRuntime's getFiberRef and
 * setFiberRef, wrapped for the rest of the process): all, and with `byRef` also by the FiberRef.
 */
export const countFiberRefCalls = async (tally: Tally, counting: () => boolean, byRef = false): Promise<void> => {
  const fiberRuntimeModule = (await import(
    new URL("../../node_modules/effect/dist/esm/internal/fiberRuntime.js", import.meta.url).href
  )) as { FiberRuntime: { prototype: Record<string, (...args: Array<unknown>) => unknown> } }
  const proto = fiberRuntimeModule.FiberRuntime.prototype
  for (const method of ["getFiberRef", "setFiberRef"] as const) {
    const original = proto[method]!
    proto[method] = function (this: unknown, ...args: Array<unknown>) {
      if (counting()) {
        tally.bump(`${method} (all)`)
        if (byRef) tally.bump(`${method} ${refName(args[0])}`)
      }
      return original.apply(this, args)
    }
  }
}
