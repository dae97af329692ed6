/**
 * A TCP proxy the test owns (node:net on 127.0.0.1, a free port) in front of a server, to simulate
 * an outage without touching the shared server: drop every open connection, refuse new ones
 * (the listener closes: ECONNREFUSED), reset them (accepted, then RST), or blackhole them
 * (accepted, never forwarded, never answered), then resume on the same port.
 *
 *   const proxy = yield* makeTcpProxy({ host: "127.0.0.1", port: 5432 })
 *   const url = proxy.rewrite(runnerUrl)               // same URL, host:port of the proxy
 *   yield* proxy.outage({ mode: "refuse", forMs: 3000 }) // drops all, refuses for 3 s, resumes
 */
import net from "node:net"
import { Context, Effect, Layer, Redacted, type Scope } from "effect"

export type ProxyMode = "pass" | "refuse" | "reset" | "blackhole"

export interface ProxyStats {
  /** Connections accepted and forwarded to the target. */
  readonly forwarded: number
  /** Forwarded connections the proxy cut (dropAll). */
  readonly dropped: number
  /** Connections reset at once (mode reset) — refused ones never reach the proxy, so are not counted. */
  readonly reset: number
  /** Connections held silently (mode blackhole). */
  readonly blackholed: number
  /** Connection pairs open now. */
  readonly open: number
}

export interface TcpProxyShape {
  readonly host: string
  readonly port: number
  /** `url` (a postgres:// URL, plain or Redacted) with host and port replaced by the proxy's. */
  readonly rewrite: <U extends string | Redacted.Redacted<string>>(url: U) => U
  readonly mode: Effect.Effect<ProxyMode>
  readonly stats: Effect.Effect<ProxyStats>
  /** Destroys every open connection pair (both sides); returns how many. */
  readonly dropAll: Effect.Effect<number>
  /** New connections from now on: refused (listener closed), reset, or blackholed. */
  readonly setMode: (mode: Exclude<ProxyMode, "pass">) => Effect.Effect<void>
  /** Back to forwarding; blackholed connections are destroyed (the client has long given up on them). */
  readonly resume: Effect.Effect<void>
  /**
   * Arms a one-shot trap for the commit whose acknowledgement gets lost: on a connection that has sent
   * a message containing `after`, the next message containing `cut` is forwarded to the server, then
   * the client's side is cut at once and the server's side `lingerMs` later (so the server finishes
   * the statement). The effect returned waits until the trap fired.
   */
  readonly cutAfterForwarding: (options: {
    readonly after: string
    readonly cut: string
    readonly lingerMs?: number
  }) => Effect.Effect<Effect.Effect<void>>
  /**
   * Arms a one-shot trap that freezes a connection at a chosen statement: the first client message
   * containing `match` is held back, with everything that connection sends after it, so the server
   * never sees it. The effect returned waits until the trap caught a message; `release` forwards
   * what was held and lets the connection go on (if the client is still there).
   */
  readonly holdClientMessage: (options: { readonly match: string }) => Effect.Effect<{
    readonly caught: Effect.Effect<void>
    readonly release: Effect.Effect<void>
  }>
  /** dropAll + setMode(mode), a real-time wait of `forMs`, then resume. */
  readonly outage: (options: { readonly mode: Exclude<ProxyMode, "pass">; readonly forMs: number }) => Effect.Effect<void>
}

interface Target {
  readonly host: string
  readonly port: number
}

/** host:port of a postgres URL. */
export const targetOf = (url: string | Redacted.Redacted<string>): Target => {
  const u = new URL(typeof url === "string" ? url : Redacted.value(url))
  return { host: u.hostname || "127.0.0.1", port: Number(u.port || 5432) }
}

export const makeTcpProxy = (target: Target): Effect.Effect<TcpProxyShape, never, Scope.Scope> =>
  Effect.gen(function* () {
    // Per-instance state, touched only from node's event-loop callbacks and Effect.sync.
    let mode: ProxyMode = "pass"
    const pairs = new Set<{ client: net.Socket; upstream: net.Socket }>()
    const held = new Set<net.Socket>()
    const counts = { forwarded: 0, dropped: 0, reset: 0, blackholed: 0 }
    let trap: { after: string; cut: string; lingerMs: number; fired: () => void } | undefined
    let hold: { match: string; caught: (release: () => void) => void } | undefined

    const onConnection = (client: net.Socket) => {
      client.on("error", () => {})
      if (mode === "reset") {
        counts.reset++
        client.resetAndDestroy()
        return
      }
      if (mode === "blackhole") {
        counts.blackholed++
        held.add(client)
        client.on("close", () => held.delete(client))
        client.pause() // read nothing, answer nothing
        return
      }
      counts.forwarded++
      const upstream = net.connect(target.port, target.host)
      upstream.setNoDelay(true)
      client.setNoDelay(true)
      const pair = { client, upstream }
      pairs.add(pair)
      upstream.on("error", () => client.destroy())
      client.on("close", () => {
        upstream.destroy()
        pairs.delete(pair)
      })
      upstream.on("close", () => {
        client.destroy()
        pairs.delete(pair)
      })
      let armedFor: typeof trap // the trap this connection has met `after` for

      let frozen: Array<Buffer> | undefined // data held back by holdClientMessage
      client.on("data", (chunk: Buffer) => {
        if (frozen !== undefined) {
          frozen.push(chunk)
          return
        }
        const h = hold
        if (h !== undefined && chunk.toString("latin1").includes(h.match)) {
          hold = undefined
          frozen = [chunk]
          h.caught(() => {
            const pending = frozen ?? []
            frozen = undefined
            for (const c of pending) if (!upstream.destroyed) upstream.write(c)
          })
          return
        }
        const t = trap
        if (t !== undefined) {
          const text = chunk.toString("latin1")
          if (armedFor === t && text.includes(t.cut)) {
            trap = undefined
            upstream.write(chunk)
            client.destroy()
            pairs.delete(pair)
            setTimeout(() => upstream.destroy(), t.lingerMs)
            t.fired()
            return
          }
          if (text.includes(t.after)) armedFor = t
        }
        if (!upstream.write(chunk)) client.pause()
      })
      upstream.on("drain", () => client.resume())
      upstream.pipe(client)
    }

    let server = net.createServer(onConnection)
    const listen = (port: number) =>
      Effect.async<number>((resume) => {
        server = net.createServer(onConnection)
        server.once("error", (e) => resume(Effect.die(e)))
        server.listen(port, "127.0.0.1", () => resume(Effect.succeed((server.address() as net.AddressInfo).port)))
      })
    // close() stops accepting at once; its callback would wait for open connections, so it is not awaited.
    const closeListener = Effect.sync(() => {
      if (server.listening) server.close()
    })

    const destroyAll = () => {
      let n = 0
      for (const pair of [...pairs]) {
        pair.client.destroy()
        pair.upstream.destroy()
        pairs.delete(pair)
        n++
      }
      counts.dropped += n
      return n
    }
    const releaseHeld = () => {
      for (const s of [...held]) s.destroy()
      held.clear()
    }

    const port = yield* Effect.acquireRelease(listen(0), () =>
      Effect.zipRight(
        Effect.sync(() => {
          destroyAll()
          releaseHeld()
        }),
        closeListener,
      ),
    )

    const setMode = (next: Exclude<ProxyMode, "pass">) =>
      Effect.gen(function* () {
        if (next === "refuse") yield* closeListener
        else if (mode === "refuse") yield* listen(port)
        mode = next
      })

    // Re-listening on the same port after "refuse": on loopback nobody else takes it in a few seconds.
    const resume = Effect.gen(function* () {
      if (mode === "refuse") yield* listen(port)
      releaseHeld()
      mode = "pass"
    })

    const rewrite = <U extends string | Redacted.Redacted<string>>(url: U): U => {
      const u = new URL(typeof url === "string" ? url : Redacted.value(url as Redacted.Redacted<string>))
      u.hostname = "127.0.0.1"
      u.port = String(port)
      return (typeof url === "string" ? u.toString() : Redacted.make(u.toString())) as U
    }

    return {
      host: "127.0.0.1",
      port,
      rewrite,
      mode: Effect.sync(() => mode),
      stats: Effect.sync(() => ({ ...counts, open: pairs.size })),
      dropAll: Effect.sync(destroyAll),
      setMode,
      resume,
      cutAfterForwarding: ({ after, cut, lingerMs = 300 }) =>
        Effect.sync(() => {
          let done = false
          const waiters: Array<() => void> = []
          trap = {
            after,
            cut,
            lingerMs,
            fired: () => {
              done = true
              for (const w of waiters.splice(0)) w()
            },
          }
          return Effect.async<void>((resume) => {
            if (done) return resume(Effect.void)
            waiters.push(() => resume(Effect.void))
          })
        }),
      holdClientMessage: ({ match }) =>
        Effect.sync(() => {
          let release: (() => void) | undefined
          const waiters: Array<() => void> = []
          hold = {
            match,
            caught: (r) => {
              release = r
              for (const w of waiters.splice(0)) w()
            },
          }
          return {
            caught: Effect.async<void>((resume) => {
              if (release !== undefined) return resume(Effect.void)
              waiters.push(() => resume(Effect.void))
            }),
            release: Effect.sync(() => release?.()),
          }
        }),
      outage: ({ mode: m, forMs }) =>
        Effect.gen(function* () {
          yield* setMode(m)
          yield* Effect.sync(destroyAll)
          // Real time on purpose: the outage is seen by real sockets, not by the test's clock.
          yield* Effect.promise(() => new Promise((r) => setTimeout(r, forMs)))
          yield* resume
        }),
    } satisfies TcpProxyShape
  })

export class TcpProxy extends Context.Tag("test/TcpProxy")<TcpProxy, TcpProxyShape>() {
  /** A proxy in front of `target`. */
  static readonly layer = (target: Target) => Layer.scoped(TcpProxy, makeTcpProxy(target))
}
