// What every load generator of the benchmarks shares: receivers that count the writers' markers, and
// the drive loop (wait for sync, wait for "go" on stdin, write at a fixed rate, wait for stragglers,
// print the result line). Each generator only opens its protocol's writers and receivers.
import { performance } from 'node:perf_hooks'
import readline from 'node:readline'

export const now = () => performance.timeOrigin + performance.now() // wall clock in ms, sub-ms resolution
export const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

// Marker written by the writer: "|<seq>:<send time ms>|"; found in the raw update bytes by receivers.
const MARKER = /\|(\d+):(\d+\.\d+)\|/g
const stats = { latencies: [], deliveries: 0, duplicates: 0 }

export class Receiver {
  constructor (room) {
    this.room = room
    this.seen = new Set()
    this.synced = false
  }

  onUpdateBytes (bytes) {
    const received = now()
    const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')
    for (const match of text.matchAll(MARKER)) {
      const seq = Number(match[1])
      if (this.seen.has(seq)) { stats.duplicates++; continue }
      this.seen.add(seq)
      stats.deliveries++
      stats.latencies.push(received - Number(match[2]))
    }
  }
}

const waitFor = async (predicate, timeoutMs, what) => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) { out({ error: `timed out waiting for ${what}` }); process.exit(1) }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/**
 * Drive the load: `writers` are {room, doc, provider, text, seq}, `receivers` are Receivers with a
 * `close()`; `destroyWriter(writer)` releases a writer. Exits the process when done.
 */
export async function driveLoad ({ writers, receivers, receiversPerRoom, rate, duration, destroyWriter }) {
  await waitFor(() => writers.every((w) => w.provider.synced) && receivers.every((r) => r.synced), 60000,
    'every client to sync')
  out({ ready: true, writers: writers.length, receivers: receivers.length })

  const lines = readline.createInterface({ input: process.stdin })
  await new Promise((resolve) => lines.once('line', resolve))

  const start = now()
  const intervalMs = 1000 / rate
  let written = 0
  // One timer per process: each tick writes every update that is due, so timer jitter does not
  // lower the rate.
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const elapsed = now() - start
      if (elapsed >= duration * 1000) { clearInterval(timer); resolve(); return }
      const due = Math.floor(elapsed / intervalMs) + 1
      for (const writer of writers) {
        while (writer.seq < due) {
          // Keep the text short: replace the previous marker rather than growing the document.
          const marker = `|${writer.seq}:${now().toFixed(3)}|`
          writer.doc.transact(() => {
            if (writer.text.length > 0) writer.text.delete(0, writer.text.length)
            writer.text.insert(0, marker)
          })
          writer.seq++
          written++
        }
      }
    }, Math.max(1, Math.min(10, intervalMs / 2)))
  })
  const sendEnd = now()
  const expected = () => writers.reduce((sum, w) => sum + w.seq, 0) * receiversPerRoom
  const deadline = Date.now() + 10000
  while (stats.deliveries < expected() && Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, 50))
  }

  const lost = receivers.reduce((sum, r) => {
    const writer = writers.find((w) => w.room === r.room)
    return sum + (writer.seq - r.seen.size)
  }, 0)
  out({
    written,
    deliveries: stats.deliveries,
    expected: expected(),
    lost,
    duplicates: stats.duplicates,
    sendSeconds: (sendEnd - start) / 1000,
    latencies: stats.latencies.map((x) => Math.round(x * 100) / 100)
  })
  for (const r of receivers) r.close()
  for (const w of writers) destroyWriter(w)
  setTimeout(() => process.exit(0), 200)
}
