// The operator page (issue 18). Plain JS, no build step, no third-party code. It asks once for the
// service key, keeps it in this tab's sessionStorage and sends it only as the X-Service-Key header
// (never in a URL). It polls GET /internal/overview every 2 s (plus the selected user's missions)
// and writes every value as text, never as HTML.

const KEY_STORAGE = "mana-ai.service-key"
const REFRESH_MS = 2000
const PAGE_SIZE = 50
const ITERATIONS_SHOWN = 3

const view = {
  key: sessionStorage.getItem(KEY_STORAGE),
  offset: 0,
  stateFilter: "",
  userFilter: "",
  selected: null,
  timer: null,
  generation: 0,
}

const $ = (id) => document.getElementById(id)

/** An element with text children only: data never becomes markup. */
const el = (tag, attributes, ...children) => {
  const node = document.createElement(tag)
  for (const [name, value] of Object.entries(attributes ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (name === "className") node.className = value
    else node.setAttribute(name, value === true ? "" : String(value))
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue
    node.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return node
}

const na = () => el("span", { className: "na" }, "n/a")

const shortTime = (iso) => {
  if (typeof iso !== "string") return null
  const ms = Date.parse(iso)
  if (Number.isNaN(ms)) return iso
  const delta = Math.round((ms - Date.now()) / 1000)
  const abs = Math.abs(delta)
  const span = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : abs < 172800 ? `${Math.round(abs / 3600)} h` : `${Math.round(abs / 86400)} d`
  const when = new Date(ms).toISOString().replace("T", " ").replace(/\.\d{3}Z$/, "Z")
  return `${when} (${delta >= 0 ? `in ${span}` : `${span} ago`})`
}

const timeCell = (iso) => shortTime(iso) ?? "—"

const cadenceText = (cadence) => {
  if (cadence === null || typeof cadence !== "object") return "—"
  const two = (n) => String(n ?? 0).padStart(2, "0")
  switch (cadence.kind) {
    case "manual":
      return "manual"
    case "interval":
      return `every ${cadence.everyMinutes} min`
    case "daily":
      return `daily at ${two(cadence.atHour)}:${two(cadence.atMinute)}`
    case "weekly":
      return `weekly on ${["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"][cadence.dayOfWeek] ?? cadence.dayOfWeek} at ${two(cadence.atHour)}:${two(cadence.atMinute)}`
    case "cron":
      return `cron ${cadence.expression}`
    default:
      return JSON.stringify(cadence)
  }
}

// ------------------------------------------------------------------ talking to the runner

class Refused extends Error {}

const api = async (method, path) => {
  const response = await fetch(path, {
    method,
    headers: { "X-Service-Key": view.key ?? "" },
    cache: "no-store",
    credentials: "omit",
  })
  let body = null
  try {
    body = await response.json()
  } catch {
    body = null
  }
  if (response.status === 401) throw new Refused()
  return { status: response.status, body }
}

const overviewPath = () => {
  const params = new URLSearchParams({ offset: String(view.offset), limit: String(PAGE_SIZE) })
  if (view.stateFilter !== "") params.set("state", view.stateFilter)
  if (view.userFilter !== "") params.set("user", view.userFilter)
  if (view.selected !== null) params.set("detail", view.selected)
  return `/internal/overview?${params}`
}

// ------------------------------------------------------------------ key handling

const clearData = () => {
  for (const id of ["process", "detail-body"]) $(id).replaceChildren()
  for (const id of ["actors", "failures"]) $(id).querySelector("tbody").replaceChildren()
  $("header-info").textContent = ""
  $("actor-range").textContent = ""
  $("failure-count").textContent = ""
  $("detail").hidden = true
}

const showKeyPanel = (message) => {
  view.generation++
  clearTimeout(view.timer)
  view.key = null
  sessionStorage.removeItem(KEY_STORAGE)
  clearData()
  $("dashboard").hidden = true
  $("tick-button").hidden = true
  $("forget-key").hidden = true
  $("status-line").hidden = true
  $("answer").hidden = true
  $("key-panel").hidden = false
  $("key-message").textContent = message
  $("key-input").focus()
}

const showDashboard = () => {
  $("key-panel").hidden = true
  $("key-message").textContent = ""
  $("dashboard").hidden = false
  $("tick-button").hidden = false
  $("forget-key").hidden = false
}

const REFUSED = "The runner refused this key (401 Unauthorized). No data is shown: enter the right service key."
const NO_KEY = "No service key entered: no data is shown until you enter one."

$("key-form").addEventListener("submit", async (event) => {
  event.preventDefault()
  const key = $("key-input").value.trim()
  $("key-input").value = ""
  if (key === "") {
    $("key-message").textContent = NO_KEY
    return
  }
  view.key = key
  try {
    await api("GET", "/internal/overview?limit=1")
  } catch (error) {
    if (error instanceof Refused) showKeyPanel(REFUSED)
    else showKeyPanel(`The runner could not be reached (${error.message}). No data is shown.`)
    return
  }
  sessionStorage.setItem(KEY_STORAGE, key)
  showDashboard()
  poll()
})

$("forget-key").addEventListener("click", () => showKeyPanel("Key forgotten. " + NO_KEY))

// ------------------------------------------------------------------ rendering

const fact = (label, value, testId) =>
  el("div", { "data-testid": testId }, el("dt", {}, label), el("dd", {}, value === null || value === undefined ? na() : value))

const renderProcess = (p, at) => {
  $("header-info").textContent = `${p.service} ${p.version} · ${p.phase} · updated ${shortTime(at)}`
  const states = ["quarantined", "backing-off", "running", "idle"]
    .filter((s) => (p.actors[s] ?? 0) > 0)
    .map((s) => `${p.actors[s]} ${s}`)
    .join(", ")
  const breaker =
    p.breaker === null ? null : [p.breaker.state, ...Object.entries(p.breaker).filter(([k]) => k !== "state").map(([k, v]) => `${k} ${v}`)].join(" · ")
  const tokens =
    p.tokensInWindow === null
      ? null
      : `${p.tokensInWindow.spent}${p.tokensInWindow.budget === null ? "" : ` of ${p.tokensInWindow.budget}`} in ${p.tokensInWindow.windowHours} h`
  $("process").replaceChildren(
    fact("phase", p.phase, "phase"),
    fact("tick", `${p.tick.enabled ? "enabled" : "disabled"}${p.tick.running ? " · running now" : ""}`, "tick"),
    fact("LLM breaker", breaker, "breaker"),
    fact("runs in flight", p.runsInFlight, "runs-in-flight"),
    fact("LLM requests in flight", p.llmRequestsInFlight, "llm-in-flight"),
    fact("tokens spent in the window", tokens, "tokens"),
    fact("actors", `${p.actors.total}${states === "" ? "" : ` (${states})`}`, "actor-total"),
  )
}

const actionButton = (actor) =>
  el(
    "button",
    {
      type: "button",
      className: actor.state === "quarantined" ? "primary" : undefined,
      "data-action": "restart",
      "data-user": actor.userId,
    },
    actor.state === "quarantined" ? "Lift quarantine" : "Restart",
  )

const renderActors = (actors) => {
  const first = actors.total === 0 ? 0 : actors.offset + 1
  const last = actors.offset + actors.items.length
  $("actor-range").textContent = `${first}–${last} of ${actors.total}`
  $("prev-page").disabled = actors.offset === 0
  $("next-page").disabled = last >= actors.total
  const rows = actors.items.map((a) =>
    el(
      "tr",
      { "data-user": a.userId, className: a.userId === view.selected ? "selected" : undefined },
      el("td", {}, a.userId),
      el("td", {}, el("span", { className: `state state-${a.state}`, "data-testid": "state" }, a.state)),
      el("td", {}, a.missions.length),
      el("td", {}, a.inFlight),
      el("td", {}, timeCell(a.nextWakeAt)),
      el("td", {}, a.restarts),
      el("td", { className: "error-text" }, a.lastError ?? ""),
      el("td", {}, actionButton(a)),
    ),
  )
  $("actors").querySelector("tbody").replaceChildren(...rows)
}

const failureRows = (items) =>
  items.map((f) =>
    el(
      "tr",
      {},
      el("td", {}, timeCell(f.at)),
      el("td", {}, f.level),
      el("td", {}, f.userId ?? "—"),
      el("td", {}, f.missionId ?? "—"),
      el("td", {}, f.message),
      el("td", { className: "error-text" }, f.reason ?? ""),
    ),
  )

const renderFailures = (failures) => {
  $("failure-count").textContent = `(${failures.items.length} shown, ${failures.total} since start)`
  $("failures").querySelector("tbody").replaceChildren(...failureRows(failures.items))
}

const renderIteration = (it) =>
  el(
    "li",
    { "data-iteration": it.id },
    el("span", { className: `status-${it.overallStatus}` }, it.overallStatus),
    ` · ${shortTime(it.startedAt) ?? "?"}${it.source ? ` · ${it.source}` : ""} · `,
    it.summary ?? "",
    Array.isArray(it.plan) && it.plan.length > 0
      ? el("ol", { className: "steps" }, it.plan.map((s) => el("li", {}, `${s.summary} [${s.status}]`)))
      : null,
  )

/** Why the mission's agent holds it (SPEC §14) and until when: `/internal/actors`' `held`. */
const HOLD_TEXT = {
  "skipped-paused": "its agent is paused",
  "skipped-archived": "its agent is archived",
  "skipped-budget": "its agent's token budget is spent",
  "agent-malformed": "its agent's record is malformed",
}
const heldText = (held) =>
  `held: ${HOLD_TEXT[held.reason] ?? held.reason}, ${held.until === null ? "until the mission or its agent changes" : `until ${timeCell(held.until)}`}`

const renderDetail = (detail, missions) => {
  $("detail").hidden = false
  $("detail-user").textContent = detail.userId
  const actor = detail.actor
  const byMission = new Map((actor?.missions ?? []).map((m) => [m.missionId, m]))
  const summary = actor === null
    ? el("p", { className: "muted" }, "The runner has no actor for this user (no active mission, or retired while idle).")
    : el(
        "p",
        {},
        el("span", { className: `state state-${actor.state}` }, actor.state),
        ` · ${actor.inFlight} in flight · ${actor.restarts} restarts · next wake-up ${timeCell(actor.nextWakeAt)}`,
        actor.lastError ? el("div", { className: "error-text" }, `last error: ${actor.lastError}`) : null,
      )
  const list =
    missions === null
      ? [el("p", { className: "message" }, "The missions could not be read (see the status line).")]
      : missions.missions.map((m) => {
          const live = byMission.get(m.id)
          const iterations = Array.isArray(m.iterations) ? m.iterations.slice(-ITERATIONS_SHOWN).reverse() : []
          return el(
            "div",
            { className: "mission", "data-mission": m.id },
            el("h3", {}, `${m.title ?? "(untitled)"} `, el("span", { className: "muted" }, m.id)),
            el(
              "div",
              {},
              `${m.state ?? "?"} · ${cadenceText(m.cadence)} · next run ${timeCell(m.nextRunAt)} · ${Array.isArray(m.iterations) ? m.iterations.length : 0} iterations`,
              live === undefined
                ? ""
                : ` · actor: ${live.running ? "running now" : live.held ? heldText(live.held) : "waiting"}${live.consecutiveFailures > 0 ? `, ${live.consecutiveFailures} failed in a row, retry ${timeCell(live.retryAt)}` : ""}`,
            ),
            iterations.length === 0
              ? el("div", { className: "muted" }, "no iterations yet")
              : el("ul", { className: "iterations" }, iterations.map(renderIteration)),
          )
        })
  const malformed = (missions?.malformed ?? []).map((m) =>
    el("p", { className: "error-text" }, `mission ${m.missionId} is skipped: ${m.reason}`),
  )
  const failures =
    detail.failures.length === 0
      ? []
      : [
          el("h3", {}, "This user's recent failures"),
          el("table", {}, el("tbody", {}, failureRows(detail.failures))),
        ]
  $("detail-body").replaceChildren(summary, ...list, ...malformed, ...failures)
}

// ------------------------------------------------------------------ polling

const status = (text) => {
  $("status-line").hidden = text === ""
  $("status-line").textContent = text
}

const refresh = async () => {
  const generation = view.generation
  const selected = view.selected
  const [overview, missions] = await Promise.all([
    api("GET", overviewPath()),
    selected === null ? Promise.resolve(null) : api("GET", `/internal/missions/${encodeURIComponent(selected)}`),
  ])
  if (generation !== view.generation) return
  if (overview.status !== 200) {
    status(`The runner answered ${overview.status}: ${overview.body?.reason ?? "no reason given"}`)
    return
  }
  const problems = missions !== null && missions.status !== 200 ? `Missions of ${selected}: ${missions.status} ${missions.body?.reason ?? ""}` : ""
  status(problems)
  const o = overview.body
  renderProcess(o.process, o.at)
  renderActors(o.actors)
  renderFailures(o.failures)
  if (o.detail !== null && o.detail.userId === view.selected) {
    renderDetail(o.detail, missions !== null && missions.status === 200 ? missions.body : null)
  } else {
    $("detail").hidden = true
  }
}

const poll = async () => {
  clearTimeout(view.timer)
  const generation = view.generation
  try {
    await refresh()
  } catch (error) {
    if (error instanceof Refused) {
      showKeyPanel(REFUSED)
      return
    }
    status(`The runner could not be reached (${error.message}); trying again.`)
  }
  if (generation === view.generation && view.key !== null) view.timer = setTimeout(poll, REFRESH_MS)
}

/** Re-reads now (a filter, a page or a selection changed). */
const refreshNow = () => {
  view.generation++
  poll()
}

// ------------------------------------------------------------------ actions

const answer = (text, failed) => {
  $("answer").hidden = false
  $("answer").textContent = text
  $("answer").classList.toggle("failed", failed)
}

const act = async (label, method, path) => {
  answer(`${label}: waiting for the runner…`, false)
  try {
    const r = await api(method, path)
    answer(`${label} → ${r.status} ${JSON.stringify(r.body, null, 1)}`, r.status !== 200)
  } catch (error) {
    if (error instanceof Refused) showKeyPanel(REFUSED)
    else answer(`${label} failed: ${error.message}`, true)
    return
  }
  refreshNow()
}

$("tick-button").addEventListener("click", async () => {
  $("tick-button").disabled = true
  try {
    await act("POST /internal/tick", "POST", "/internal/tick")
  } finally {
    $("tick-button").disabled = false
  }
})

$("actors").addEventListener("click", (event) => {
  const button = event.target.closest("button[data-action=restart]")
  if (button !== null) {
    const userId = button.getAttribute("data-user")
    act(`POST /internal/actors/${userId}/restart`, "POST", `/internal/actors/${encodeURIComponent(userId)}/restart`)
    return
  }
  const row = event.target.closest("tr[data-user]")
  if (row !== null) {
    view.selected = row.getAttribute("data-user")
    refreshNow()
  }
})

$("state-filter").addEventListener("change", (event) => {
  view.stateFilter = event.target.value
  view.offset = 0
  refreshNow()
})

let typing = null
$("user-filter").addEventListener("input", (event) => {
  clearTimeout(typing)
  typing = setTimeout(() => {
    view.userFilter = event.target.value.trim()
    view.offset = 0
    refreshNow()
  }, 300)
})

$("prev-page").addEventListener("click", () => {
  view.offset = Math.max(0, view.offset - PAGE_SIZE)
  refreshNow()
})

$("next-page").addEventListener("click", () => {
  view.offset += PAGE_SIZE
  refreshNow()
})

// ------------------------------------------------------------------ start

if (view.key === null) showKeyPanel(NO_KEY)
else {
  showDashboard()
  poll()
}
