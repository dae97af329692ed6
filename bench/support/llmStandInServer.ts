/**
 * The LLM stand-in as its own process (so it does not share the runner's event loop): an
 * OpenAI-compatible /v1/chat/completions on 127.0.0.1 that answers every request with the same
 * valid plan after a fixed latency. Control endpoints: GET /__stats, POST /__config {latencyMs}
 * (which also resets the counters). Prints "LISTENING <port>" once ready.
 *
 *   bun bench/support/llmStandInServer.ts [latencyMs]
 */
import { createServer } from "node:http"
import type { AddressInfo } from "node:net"
import { completion, defaultPlan, defaultUsage, planAnswer } from "../../test/support/LlmStandIn.js"

const body = JSON.stringify(completion(planAnswer(defaultPlan), defaultUsage))
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
