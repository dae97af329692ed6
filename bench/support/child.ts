/**
 * Measurements that start the whole runner run it in a child process (bun bench/run.ts
 * --child=<task>): each gets a fresh process (no heap or JIT state from the one before), and the
 * parent ends it with SIGKILL once its result is in, so a slow shutdown of the runner (thousands of
 * actors and waiting runs) never eats the bench's time. The parent owns the database and drops it
 * afterwards. Protocol: input as JSON on stdin; the child prints log lines and one `RESULT <json>`.
 */
import { spawn } from "node:child_process"
import { fileURLToPath } from "node:url"
import { Duration, Effect, type Scope } from "effect"

const runScript = fileURLToPath(new URL("../run.ts", import.meta.url))
const RESULT = "RESULT "

export const runInChild = <O>(task: string, input: unknown, timeout: Duration.DurationInput): Effect.Effect<O> =>
  withChild<O, O>(task, input, timeout, (result) => Effect.succeed(result))

/**
 * As runInChild, but `use` runs while the child is still alive (it is killed afterwards): for a
 * measurement taken from outside the child, e.g. the CPU its HTTP server spends on requests.
 */
/**
 * `BENCH_CPU_PROF=<dir>`: each child runs under Bun's CPU profiler (`--cpu-prof-md`, a markdown
 * profile named after the task in <dir>) and exits once its result is out, so the profile is written.
 * For finding where a figure's CPU goes; its figures are taken with the profiler's cost in them.
 */
const cpuProfileDir = process.env.BENCH_CPU_PROF
const profileArgs = (task: string): Array<string> =>
  cpuProfileDir === undefined || cpuProfileDir === ""
    ? []
    : ["--cpu-prof-md", `--cpu-prof-dir=${cpuProfileDir}`, `--cpu-prof-name=${task}-${Date.now()}.md`]

export const withChild = <O, A>(
  task: string,
  input: unknown,
  timeout: Duration.DurationInput,
  use: (result: O, pid: number) => Effect.Effect<A>,
): Effect.Effect<A> =>
  Effect.acquireUseRelease(
    Effect.sync(() => spawn(process.execPath, [...profileArgs(task), runScript, `--child=${task}`], { stdio: ["pipe", "pipe", "inherit"] })),
    (child) =>
      Effect.async<O>((resume) => {
        let buffered = ""
        let done = false
        child.stdout!.on("data", (b: Buffer) => {
          buffered += b.toString("utf8")
          let newline = buffered.indexOf("\n")
          while (newline >= 0) {
            const line = buffered.slice(0, newline)
            buffered = buffered.slice(newline + 1)
            if (line.startsWith(RESULT)) {
              done = true
              resume(Effect.succeed(JSON.parse(line.slice(RESULT.length)) as O))
            } else {
              console.log(line)
            }
            newline = buffered.indexOf("\n")
          }
        })
        child.once("exit", (code, signal) => {
          if (!done) resume(Effect.dieMessage(`bench child ${task} exited without a result (${code ?? signal})`))
        })
        child.stdin!.end(JSON.stringify(input))
      }).pipe(
        Effect.timeoutFail({
          duration: timeout,
          onTimeout: () => new Error(`bench child ${task} gave no result within ${Duration.format(Duration.decode(timeout))}`),
        }),
        Effect.orDie,
        Effect.flatMap((result) => use(result, child.pid ?? -1)),
      ),
    // Only the child this measurement started, by its own handle.
    (child) =>
      Effect.async<void>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.void)
        child.once("exit", () => resume(Effect.void))
        // A profiled child is asked to exit, so that it writes its profile (killed after 60 s all the same).
        if (cpuProfileDir === undefined || cpuProfileDir === "") child.kill("SIGKILL")
        else {
          child.kill("SIGTERM")
          setTimeout(() => child.kill("SIGKILL"), 60_000).unref()
        }
      }),
  )

/**
 * The child's side: reads its input, runs the task, prints the result, then waits to be killed. The
 * task's scope stays open: the runner it started is never shut down, only killed with the process.
 */
export const serveChild = <I, O>(task: (input: I) => Effect.Effect<O, never, Scope.Scope>): Effect.Effect<void> =>
  Effect.scoped(Effect.gen(function* () {
    const text = yield* Effect.promise(async () => {
      const chunks: Array<Buffer> = []
      for await (const chunk of process.stdin) chunks.push(chunk as Buffer)
      return Buffer.concat(chunks).toString("utf8")
    })
    const output = yield* task(JSON.parse(text) as I)
    yield* Effect.sync(() => process.stdout.write(`${RESULT}${JSON.stringify(output)}\n`))
    // Under BENCH_CPU_PROF the profile is written on a normal exit only: the parent asks with SIGTERM.
    if (cpuProfileDir !== undefined && cpuProfileDir !== "") yield* Effect.sync(() => process.once("SIGTERM", () => process.exit(0)))
    yield* Effect.never
  }))
