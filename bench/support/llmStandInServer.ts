/**
 * The LLM stand-in as its own process (so it does not share the runner's event loop): an
 * OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers every request with the same
 * valid plan after a fixed latency, in the mode the request asks for: a fenced JSON answer, or (a
 * request with `tools`) the plan's tool calls and, once they are answered, its summary as text. Control endpoints: GET /__stats, POST /__config {latencyMs}
 * (which also resets the counters). Prints "LISTENING <port>" once ready.
 *
 *   bun bench/support/llmStandInServer.ts [latencyMs]
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { completion, defaultPlan, defaultUsage, planAnswer, planCalls, toolCallsCompletion } from "../../test/support/LlmStandIn.js"

const jsonBody = JSON.stringify(completion(planAnswer(defaultPlan), defaultUsage))
const callsBody = JSON.stringify(toolCallsCompletion(planCalls(defaultPlan), null, defaultUsage))
const summaryBody = JSON.stringify(completion(defaultPlan.summary, defaultUsage))

/** The answer for one request body: which mode, and (tools) whether the calls were answered already. */
const answerFor = (raw: string): string => {
  try {
    const request = JSON.parse(raw) as { tools?: unknown; messages?: ReadonlyArray<{ role?: string }> }
    if (!Array.isArray(request.tools)) return jsonBody
    return request.messages?.at(-1)?.role === "tool" ? summaryBody : callsBody
  } catch {
    return jsonBody
  }
}
let latencyMs = Number(process.argv[2] ?? 200)
let requests = 0
let inFlight = 0
let maxInFlight = 0

const server = createServer((req, res) => {
  const chunks: Array<Buffer> = []
  req.on("data", (c: Buffer) => chunks.push(c))
  req.on("end", () => {
    if (req.url === "/__stats") {
      res.writeHead(200, { "content-type": "application/json" })
      res.end(JSON.stringify({ requests, inFlight, maxInFlight, latencyMs }))
      return
    }
    if (req.url === "/__config") {
      const config = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}") as { latencyMs?: number }
      if (typeof config.latencyMs === "number") latencyMs = config.latencyMs
      requests = 0
      maxInFlight = inFlight
      res.writeHead(204)
      res.end()
      return
    }
    requests++
    inFlight++
    if (inFlight > maxInFlight) maxInFlight = inFlight
    let done = false
    const finish = () => {
      if (done) return
      done = true
      inFlight--
    }
    const body = answerFor(Buffer.concat(chunks).toString("utf8"))
    const timer = setTimeout(() => {
      finish()
      res.writeHead(200, { "content-type": "application/json", "content-length": String(Buffer.byteLength(body)) })
      res.end(body)
    }, latencyMs)
    res.on("close", () => {
      clearTimeout(timer)
      finish()
    })
  })
})

server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => {
  console.log(`LISTENING ${(server.address() as AddressInfo).port}`)
})
process.on("SIGTERM", () => {
  server.closeAllConnections()
  server.close(() => process.exit(0))
})
