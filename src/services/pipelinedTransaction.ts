/**
 * A transaction of a few statements in two round trips (issue 16: what a run's SQL costs is the round
 * trip, and @effect/sql adds about a third to each): BEGIN and the statements go out as one extended-
 * protocol sequence with a single Sync (Parse, Bind, Describe, Execute for each, then Sync), and
 * COMMIT follows once their rows are in. `withTransaction` takes one round trip per statement plus
 * BEGIN and COMMIT: the run's claim-and-read transaction was 4 round trips, now 1 (its COMMIT goes with
 * the statements, below), and the write-back on the pre-check's basis 2 (WriteBack.ts `appendOnBasis`; was 4).
 *
 * The transaction is explicit (BEGIN), so the Sync does not end it: COMMIT is sent only when every
 * statement succeeded, and a failure or an interruption (the run's deadline) sends ROLLBACK on the
 * same connection before it goes back to the pool, as `withTransaction` does. The ROLLBACK queues
 * behind the sequence when that is still in flight, so an interrupted transaction never commits,
 * even when its statements reach the server after the deadline. A transaction-local setting
 * (`set_config(…, true)`, the RLS scope) and a transaction-level advisory lock taken by the first
 * statement hold for the next ones, as in any transaction.
 *
 * `commitWithStatements`: COMMIT goes in the same sequence, before the Sync: one round trip. The
 * backend skips it when a statement before it fails (the rest up to the Sync is skipped), and the
 * ROLLBACK follows as above; but an interrupted transaction may then commit, when its statements
 * reach the server after the interruption. Only for a transaction whose commit after the caller gave
 * up is harmless: the run's claim and read, whose interruption gives the claim back whether or not it
 * was committed (MissionRunner).
 *
 * Parameters stay parameters (Bind): nothing is spliced into SQL text. The statements cannot see
 * each other's results in JavaScript: a later one that depends on an earlier one reads it in SQL (a
 * row count, or a transaction-local `app.*` setting the earlier statement set).
 */
import { randomBytes } from "node:crypto"
import type * as SqlClient from "@effect/sql/SqlClient"
import { SqlError } from "@effect/sql/SqlError"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import Pg from "pg"
import { serialize } from "pg-protocol"
import { pgPoolOf, preparedStatementsOn } from "./Database.js"
import type { CompiledStatement } from "./sqlShapes.js"

/** The parts of pg's Connection (protocol writer) the sequence uses. */
interface PgProtocol {
  /** Writes one serialized message buffer to the socket (false, and nothing written, once it closed). */
  _send(buffer: Buffer): boolean
  sendCopyFail(message: string): void
}

/** The messages every statement of a sequence ends with, serialized once: Describe and Execute of the unnamed portal, and Sync. */
const DESCRIBE_PORTAL = serialize.describe({ type: "P", name: "" })
const EXECUTE_ALL = serialize.execute({ portal: "", rows: 0 })
const SYNC = serialize.sync()

/** pg's Result, which parses a data row with the client's type parsers (not in @types/pg). */
interface PgResult {
  readonly rows: Array<Record<string, unknown>>
  _types: unknown
  addFields(fields: unknown): void
  parseRow(fields: unknown): Record<string, unknown>
  addRow(row: Record<string, unknown>): void
}
const PgResultClass = (Pg as unknown as { Result: new (rowMode: undefined, types: unknown) => PgResult }).Result
/**
 * pg's own mapping of a parameter to its text form (Dates, arrays, Buffers, JSON), as its queries bind
 * them: `pg/lib/utils.js`, which pg's default export carries as `utils` (not in @types/pg). Taken from
 * the import rather than by `require`, so the bundle `npm start` runs uses its own copy of pg.
 */
const prepareValue = (Pg as unknown as { utils: { prepareValue: (value: unknown) => unknown } }).utils.prepareValue

type Rows = ReadonlyArray<Record<string, unknown>>

/**
 * The statements a connection has prepared (issue 16: Postgres spent about a third of its CPU per run
 * planning the run's statements, and a sixth parsing them). Each statement text is parsed once per
 * connection as a named prepared statement and bound by name from then on, so Postgres skips the parse
 * and, once its plan cache judges the generic plan no dearer than the custom ones (`plan_cache_mode`
 * auto, after five executions), the planning. Names carry this process's tag and the connection's own
 * serial number: the embedded database serves every connection from one backend (SPEC §11), where two
 * connections' statements of one name would collide, and so do the connections of other processes
 * pointed at the same server (a second runner, the tests' own pool): with the serial alone, each
 * process's first connection named its statements `mana_ai_1_…`, and a live process beside the tests'
 * pool on PGlite wrote nothing (every sequence failed on a name the other had prepared). A statement text is bounded by the query's shape (values are
 * parameters), and a connection names at most `MAX_NAMED_PER_CONNECTION` of them (the rest go unnamed).
 */
interface Prepared {
  readonly serial: number
  readonly names: Map<string, string>
}
const preparedByConnection = new WeakMap<object, Prepared>()
let connectionSerial = 0
/** Unique to this process among the clients of one server (8 base-36 characters; names stay under 63 bytes). */
const PROCESS_TAG = randomBytes(6).readUIntBE(0, 6).toString(36).padStart(10, "0").slice(-8)
const MAX_NAMED_PER_CONNECTION = 200

const preparedOn = (connection: object): Prepared => {
  let prepared = preparedByConnection.get(connection)
  if (prepared === undefined) {
    prepared = { serial: ++connectionSerial, names: new Map() }
    preparedByConnection.set(connection, prepared)
  }
  return prepared
}
type Callback = (error: Error | null, rows?: ReadonlyArray<Rows>) => void

/**
 * A statement with its parameters mapped as pg binds them (`prepareValue`: text, a Buffer sent as
 * binary, or null) and the UTF-8 sizes the messages need, computed once.
 */
interface BoundStatement {
  readonly text: string
  readonly textBytes: number
  readonly values: ReadonlyArray<string | Buffer | null>
  /** Each value's byte length; -1 for null. */
  readonly lengths: ReadonlyArray<number>
  /** The parameter values' part of the Bind message: a length word per value and the bytes. */
  readonly valuesBytes: number
}

const boundStatement = (text: string, values: ReadonlyArray<unknown>): BoundStatement => {
  const mapped: Array<string | Buffer | null> = new Array(values.length)
  const lengths: Array<number> = new Array(values.length)
  let valuesBytes = 0
  for (let i = 0; i < values.length; i++) {
    const value = prepareValue(values[i])
    if (value === null || value === undefined) {
      mapped[i] = null
      lengths[i] = -1
      valuesBytes += 4
    } else if (value instanceof Buffer) {
      mapped[i] = value
      lengths[i] = value.length
      valuesBytes += 4 + value.length
    } else {
      const string = typeof value === "string" ? value : String(value)
      const bytes = Buffer.byteLength(string)
      mapped[i] = string
      lengths[i] = bytes
      valuesBytes += 4 + bytes
    }
  }
  return { text, textBytes: Buffer.byteLength(text), values: mapped, lengths, valuesBytes }
}

const PARSE = 0x50
const BIND = 0x42

/** The size of a Parse (when `parse`) and Bind of `statement` under the name `name` (ASCII), and of Describe and Execute. */
const statementBytes = (statement: BoundStatement, name: string, parse: boolean): number =>
  (parse ? 1 + 4 + name.length + 1 + statement.textBytes + 1 + 2 : 0) +
  (1 + 4 + 1 + name.length + 1 + 2 + 2 * statement.values.length + 2 + statement.valuesBytes + 2 + 2) +
  DESCRIBE_PORTAL.length +
  EXECUTE_ALL.length

/**
 * Writes Parse (when `parse`), Bind, Describe and Execute of `statement` at `offset`; the offset after.
 * The bytes pg-protocol's `serialize.parse` / `serialize.bind` (text results) would give, written into
 * one buffer: the sequence's messages cost one allocation instead of one per message, plus a copy
 * of each grown writer buffer and the concatenation (issue 16: about 5 % of a run's CPU).
 */
const writeStatement = (buffer: Buffer, offset: number, statement: BoundStatement, name: string, parse: boolean): number => {
  let at = offset
  if (parse) {
    const start = at
    buffer[at] = PARSE
    at += 5
    at += buffer.write(name, at, "latin1")
    buffer[at++] = 0
    at += buffer.write(statement.text, at, "utf8")
    buffer[at++] = 0
    at = buffer.writeInt16BE(0, at)
    buffer.writeInt32BE(at - start - 1, start + 1)
  }
  const start = at
  const count = statement.values.length
  buffer[at] = BIND
  at += 5
  buffer[at++] = 0 // the unnamed portal
  at += buffer.write(name, at, "latin1")
  buffer[at++] = 0
  at = buffer.writeInt16BE(count, at)
  for (let i = 0; i < count; i++) at = buffer.writeInt16BE(statement.values[i] instanceof Buffer ? 1 : 0, at)
  at = buffer.writeInt16BE(count, at)
  for (let i = 0; i < count; i++) {
    const value = statement.values[i]!
    const length = statement.lengths[i]!
    at = buffer.writeInt32BE(length, at)
    if (value === null) continue
    if (typeof value === "string") at += buffer.write(value, at, length, "utf8")
    else at += value.copy(buffer, at)
  }
  at = buffer.writeInt16BE(1, at) // one result format code for all columns:
  at = buffer.writeInt16BE(0, at) // text
  buffer.writeInt32BE(at - start - 1, start + 1)
  at += DESCRIBE_PORTAL.copy(buffer, at)
  at += EXECUTE_ALL.copy(buffer, at)
  return at
}

/**
 * A pg "submittable" (the interface pg-cursor uses): pg queues it like a query, calls `submit` when
 * the connection is free, and hands it the backend's answers until ReadyForQuery.
 */
class Sequence {
  /**
   * For pg's log and error messages, and bench/tools/runStatements.ts: built when read (issue 16: joining
   * the statements' texts for every sequence was about 1 % of a run's CPU, and pg reads it only for a
   * named query).
   */
  get text(): string {
    return `/* pipelined */ ${this.statements.map(({ text }) => text.trim()).join("; ")}`
  }
  callback: Callback | undefined = undefined
  /** pg sets `_result._types` to the client's type parsers before submitting. */
  readonly _result: PgResult = new PgResultClass(undefined, undefined)
  private readonly results: Array<Rows> = []
  private current: PgResult | undefined = undefined
  private failed: Error | undefined = undefined

  constructor(
    /** Mapped and measured here, so a value pg cannot bind fails the sequence before it is queued. */
    private readonly statements: ReadonlyArray<BoundStatement>,
    /** Parse each statement once per connection under a name (see `Prepared`); only where a failure destroys the connection. */
    private readonly named: boolean,
  ) {}

  /**
   * Whether this sequence parsed a statement under a new name: if it then fails, the backend skipped the
   * Parse messages after the failing statement, so the connection's list of names is no longer known
   * to be true and the connection is not pooled again (`onPool`).
   */
  namedNew = false

  submit(connection: PgProtocol): null {
    connection._send(this.messages(this.named ? preparedOn(connection) : undefined))
    return null
  }

  /**
   * The whole sequence as one buffer: one socket write. pg corks its own Parse…Sync instead, but
   * Bun's net.Socket sends the first chunk written while corked at once and the rest on uncork: two
   * socket writes per sequence (issue 16). With `prepared`, a statement this connection has not
   * parsed yet is parsed under a new name (recorded), one it has is bound by its name.
   */
  messages(prepared: Prepared | undefined): Buffer {
    const statements = this.statements
    const names: Array<string> = new Array(statements.length)
    const parses: Array<boolean> = new Array(statements.length)
    let size = SYNC.length
    for (let i = 0; i < statements.length; i++) {
      const statement = statements[i]!
      let name = prepared?.names.get(statement.text)
      const parse = name === undefined
      if (name === undefined) {
        name = prepared !== undefined && prepared.names.size < MAX_NAMED_PER_CONNECTION ? `mana_ai_${PROCESS_TAG}_${prepared.serial}_${prepared.names.size}` : ""
        if (prepared !== undefined && name !== "") {
          prepared.names.set(statement.text, name)
          this.namedNew = true
        }
      }
      names[i] = name
      parses[i] = parse
      size += statementBytes(statement, name, parse)
    }
    const buffer = Buffer.allocUnsafe(size)
    let at = 0
    for (let i = 0; i < statements.length; i++) at = writeStatement(buffer, at, statements[i]!, names[i]!, parses[i]!)
    SYNC.copy(buffer, at)
    return buffer
  }

  handleRowDescription(message: { readonly fields: unknown }): void {
    this.current = new PgResultClass(undefined, this._result._types)
    this.current.addFields(message.fields)
  }

  handleDataRow(message: { readonly fields: unknown }): void {
    if (this.current === undefined || this.failed !== undefined) return
    try {
      this.current.addRow(this.current.parseRow(message.fields))
    } catch (error) {
      this.failed = error instanceof Error ? error : new Error(String(error))
    }
  }

  handleCommandComplete(): void {
    this.results.push(this.current?.rows ?? [])
    this.current = undefined
  }

  handleEmptyQuery(): void {
    this.results.push([])
  }

  handlePortalSuspended(): void {}

  handleCopyInResponse(connection: PgProtocol): void {
    connection.sendCopyFail("No source stream defined")
  }

  handleCopyData(): void {}

  /** The backend failed a statement (it skips the rest to the Sync and rolls back); pg then forgets this sequence. */
  handleError(error: Error): void {
    const callback = this.callback
    this.callback = undefined
    callback?.(error)
  }

  handleReadyForQuery(): void {
    const callback = this.callback
    this.callback = undefined
    if (this.failed !== undefined) callback?.(this.failed)
    else callback?.(null, this.results)
  }
}

/**
 * The bytes a sequence of `statements` sends (no BEGIN or COMMIT added), for the test that holds them
 * to pg-protocol's own serializer. `prepared`: the connection's names, as `Prepared` keeps them.
 */
export const sequenceMessages = (
  statements: ReadonlyArray<readonly [string, ReadonlyArray<unknown>]>,
  prepared?: { readonly serial: number; readonly names: Map<string, string> },
): Buffer => new Sequence(statements.map(([text, values]) => boundStatement(text, values)), false).messages(prepared)

/** BEGIN, the statements, and COMMIT too when it goes with them (`commitWithStatements`). */
const BEGIN = boundStatement("BEGIN", [])
const COMMIT = boundStatement("COMMIT", [])
const sequenceOf = (statements: ReadonlyArray<CompiledStatement>, commitWith: boolean) => {
  const body: Array<BoundStatement> = [BEGIN]
  for (const statement of statements) {
    const [text, values] = statement.compile()
    body.push(boundStatement(text, values))
  }
  if (commitWith) body.push(COMMIT)
  return body
}

/** Failed, as @effect/sql-pg fails a statement. */
const statementFailed = (cause: unknown) => new SqlError({ cause, message: "Failed to execute statement" })

/**
 * The transaction on a connection taken from the pool directly, in one asynchronous step (issue 16:
 * `sql.reserve` in a scope, the two `executeRaw` and their exits made about a hundred run-loop
 * instructions per transaction). It does what the path below does, in the same order: the connection
 * taken from the pool, its `error` watched (a connection that failed is destroyed, not pooled again);
 * a failed statement or COMMIT rolls back (a failing ROLLBACK is ignored) before the connection goes
 * back. Interrupted while the sequence or the COMMIT runs, it cancels the backend's statement
 * (`pg_cancel_backend`, best effort, at most 5 s, as @effect/sql-pg cancels an interrupted query),
 * then sends ROLLBACK on the same connection, queued behind what is in flight, and gives the
 * connection back once that answered; the interruption completes after that. Interrupted while
 * waiting for a connection, it gives the connection back as soon as it comes.
 */
const onPool = (
  pool: Pg.Pool,
  statements: ReadonlyArray<CompiledStatement>,
  named: boolean,
  commitWith: boolean,
): Effect.Effect<ReadonlyArray<Rows>, SqlError> =>
  Effect.async<ReadonlyArray<Rows>, SqlError>((resume) => {
    let compiled: Sequence
    try {
      compiled = new Sequence(sequenceOf(statements, commitWith), named)
    } catch (cause) {
      resume(Effect.fail(statementFailed(cause)))
      return
    }
    const sequence = compiled
    /** acquiring: waiting for a connection; running: the sequence or the COMMIT in flight; ending: rolling back; done: the connection is back. */
    let phase: "acquiring" | "running" | "ending" | "done" = "acquiring"
    let interrupted = false
    /** The interruption waiting for a rollback under way to end. */
    let onDone: (() => void) | undefined
    let client: Pg.PoolClient | undefined
    let release: ((error?: Error) => void) | undefined
    /** An `error` the connection emitted while held: it is destroyed on release, not pooled again. */
    let broken: Error | undefined
    const onError = (error: Error) => {
      broken = error
    }
    const giveBack = () => {
      phase = "done"
      client?.off("error", onError)
      release?.(broken)
      release = undefined
      const waiting = onDone
      onDone = undefined
      waiting?.()
    }
    /** ROLLBACK (a failure ignored: the connection is then broken, and destroyed), the connection back, then `after`. */
    const rollBack = (after: () => void) => {
      phase = "ending"
      // The names this sequence prepared may not all exist on the backend (see Sequence#namedNew).
      if (sequence.namedNew) broken ??= new Error("a sequence that prepared statements failed")
      client!.query("ROLLBACK", () => {
        giveBack()
        after()
      })
    }
    pool.connect((error, connected, done) => {
      if (error || connected === undefined) {
        phase = "done"
        if (!interrupted) {
          resume(
            Effect.fail(new SqlError({ cause: error ?? new Error("No client returned"), message: "Failed to acquire connection for transaction" })),
          )
        }
        return
      }
      if (interrupted) {
        phase = "done"
        done()
        return
      }
      client = connected
      release = done
      phase = "running"
      connected.on("error", onError)
      // pg's Client#query takes a submittable as a query.
      connected.query(sequence as unknown as string, (seqError: Error | null, results?: unknown) => {
        // Interrupted meanwhile: the interruption rolls back and gives the connection back.
        if (interrupted) return
        if (seqError) return rollBack(() => resume(Effect.fail(statementFailed(seqError))))
        const all = results as ReadonlyArray<Rows>
        const expected = statements.length + (commitWith ? 2 : 1)
        if (all.length !== expected) {
          return rollBack(() => resume(Effect.fail(new SqlError({ message: `expected the results of ${expected} statements, got ${all.length}` }))))
        }
        if (commitWith) {
          giveBack()
          return resume(Effect.succeed(all.slice(1, -1)))
        }
        connected.query("COMMIT", (commitError: Error | null) => {
          if (interrupted) return
          if (commitError) return rollBack(() => resume(Effect.fail(statementFailed(commitError))))
          giveBack()
          resume(Effect.succeed(all.slice(1)))
        })
      })
    })
    return Effect.async<void>((cancelled) => {
      interrupted = true
      if (phase === "acquiring" || phase === "done") return cancelled(Effect.void)
      if (phase === "ending") {
        onDone = () => cancelled(Effect.void)
        return
      }
      // Running: cancel the backend's statement, then roll back behind it.
      const thenRollBack = () => rollBack(() => cancelled(Effect.void))
      const pid = (client as unknown as { processID?: number }).processID
      if (pid === undefined || (pool as unknown as { ending?: boolean }).ending === true) return thenRollBack()
      let moved = false
      const next = () => {
        if (moved) return
        moved = true
        clearTimeout(timer)
        thenRollBack()
      }
      const timer = setTimeout(next, 5000)
      pool.query("SELECT pg_cancel_backend($1)", [pid], next)
    })
  })

/**
 * Runs `statements` in one transaction on a pooled connection of its own (never inside the caller's
 * transaction): BEGIN and the statements in one round trip, COMMIT in a second (or in the first, with
 * `commitWithStatements`); the rows of each statement, in order. Failed or interrupted, it rolls back
 * (see the header).
 */
export const pipelinedTransaction = (
  sql: SqlClient.SqlClient,
  statements: ReadonlyArray<CompiledStatement>,
  options: { readonly commitWithStatements?: boolean } = {},
): Effect.Effect<ReadonlyArray<Rows>, SqlError> => {
  const pool = pgPoolOf(sql)
  const commitWith = options.commitWithStatements === true
  return pool === undefined ? onReserved(sql, statements, commitWith) : onPool(pool, statements, preparedStatementsOn(sql), commitWith)
}

/** The same on a connection `sql.reserve` gives (a client `pgClientLayer` did not build). */
const onReserved = (
  sql: SqlClient.SqlClient,
  statements: ReadonlyArray<CompiledStatement>,
  commitWith: boolean,
): Effect.Effect<ReadonlyArray<Rows>, SqlError> =>
  Effect.scoped(
    Effect.flatMap(sql.reserve, (connection) =>
      Effect.uninterruptibleMask((restore) =>
        Effect.suspend(() => {
          const sequence = new Sequence(sequenceOf(statements, commitWith), false)
          // executeRaw hands its first argument to pg's Client#query, which takes a submittable as a query.
          return restore(connection.executeRaw(sequence as unknown as string, []) as Effect.Effect<ReadonlyArray<Rows>, SqlError>)
        }).pipe(
          Effect.flatMap((results) => {
            const expected = statements.length + (commitWith ? 2 : 1)
            if (results.length !== expected) return Effect.fail(new SqlError({ message: `expected the results of ${expected} statements, got ${results.length}` }))
            return commitWith ? Effect.succeed(results.slice(1, -1)) : Effect.as(restore(connection.executeRaw("COMMIT", [])), results.slice(1))
          }),
          // Failed (a statement, or the COMMIT: then this is a no-op) or interrupted: never leave the
          // transaction open on a pooled connection. A ROLLBACK that fails has lost its connection.
          Effect.onExit((exit) => (Exit.isSuccess(exit) ? Effect.void : Effect.ignore(connection.executeRaw("ROLLBACK", [])))),
        ),
      ),
    ),
  )
