/**
 * Wake-ups, earliest first: one fiber sleeps until the earliest entry instead of one timer fiber per
 * entry (the actor host's wake-ups of every user actor, SPEC §8; the deadlines of `Deadline.ts`).
 * Entries are dropped lazily: a replaced or cancelled one is marked dead and skipped when it reaches
 * the top.
 */
export interface WakeEntry<A> {
  readonly at: number
  readonly target: A
  live: boolean
}

export class WakeHeap<A> {
  private items: Array<WakeEntry<A>> = []
  private dead = 0

  /** A new live entry; the caller marks the one it replaces dead with `cancel`. */
  add(at: number, target: A): WakeEntry<A> {
    const entry: WakeEntry<A> = { at, target, live: true }
    this.items.push(entry)
    this.up(this.items.length - 1)
    // Dead entries far in the future would otherwise pile up until their time comes.
    if (this.dead > 1024 && this.dead > this.items.length / 2) this.compact()
    return entry
  }

  /** How many entries are live. */
  get size(): number {
    return this.items.length - this.dead
  }

  cancel(entry: WakeEntry<A>): void {
    if (!entry.live) return
    entry.live = false
    this.dead++
  }

  /** The earliest live wake-up, or undefined when none is left. */
  peek(): WakeEntry<A> | undefined {
    this.dropDeadTop()
    return this.items[0]
  }

  /** Removes and returns every live entry due at `now`, earliest first; they are no longer live. */
  takeDue(now: number): Array<WakeEntry<A>> {
    const due: Array<WakeEntry<A>> = []
    for (let top = this.peek(); top !== undefined && top.at <= now; top = this.peek()) {
      this.pop()
      top.live = false
      due.push(top)
    }
    return due
  }

  private dropDeadTop() {
    while (this.items.length > 0 && !this.items[0]!.live) {
      this.pop()
      this.dead--
    }
  }

  private compact() {
    this.items = this.items.filter((e) => e.live)
    this.dead = 0
    for (let i = (this.items.length >> 1) - 1; i >= 0; i--) this.down(i)
  }

  private pop() {
    const last = this.items.pop()!
    if (this.items.length > 0) {
      this.items[0] = last
      this.down(0)
    }
  }

  private up(i: number) {
    const items = this.items
    const item = items[i]!
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (items[parent]!.at <= item.at) break
      items[i] = items[parent]!
      i = parent
    }
    items[i] = item
  }

  private down(i: number) {
    const items = this.items
    const n = items.length
    const item = items[i]!
    while (true) {
      const left = 2 * i + 1
      if (left >= n) break
      const right = left + 1
      const child = right < n && items[right]!.at < items[left]!.at ? right : left
      if (items[child]!.at >= item.at) break
      items[i] = items[child]!
      i = child
    }
    items[i] = item
  }
}
