// Hocuspocus load for run.py, with the same config and stdin/stdout protocol as
// benchmarks/item_socket/load_clients.mjs. It is a separate copy because Hocuspocus frames every
// message as <varString document name><varUint type><payload> and wants an Auth message before it
// handles a document, which neither WebsocketProvider nor load_clients.mjs's raw receivers speak.
// The writer is a real HocuspocusProvider; receivers speak the framing by hand and skip Y.Doc work.
//
// Usage: node load_hocuspocus.mjs '{"url", "rooms": [names], "receivers": 3, "rate", "duration"}'
import { performance } from 'node:perf_hooks'
import readline from 'node:readline'

import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import WebSocket from 'ws'
import * as Y from 'yjs'

console.log = console.error
const config = JSON.parse(process.argv[2])
const { url, rooms, receivers: receiversPerRoom, rate, duration } = config
const now = () => performance.timeOrigin + performance.now()
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const MARKER = /\|(\d+):(\d+\.\d+)\|/g
// Hocuspocus message types (@hocuspocus/common MessageType) and y-protocols sync subtypes.
const SYNC = 0
const AUTH = 2
const SYNC_REPLY = 4
const STEP1 = 0
const STEP2 = 1
const UPDATE = 2

const latencies = []
let deliveries = 0
let duplicates = 0

const frame = (room, type, write) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarString(encoder, room)
  encoding.writeVarUint(encoder, type)
  write(encoder)
  return encoding.toUint8Array(encoder)
}

const openReceiver = (room) => {
  const receiver = { room, seen: new Set(), synced: false }
  const ws = new WebSocket(url.replace(/^http/, 'ws'))
  ws.binaryType = 'nodebuffer'
  ws.on('open', () => {
    // Auth with an empty token (the server has no onAuthenticate hook), then SyncStep1 with an
    // empty state vector: we want nothing but the live updates.
    ws.send(frame(room, AUTH, (e) => { encoding.writeVarUint(e, 0); encoding.writeVarString(e, '') }))
    ws.send(frame(room, SYNC, (e) => { encoding.writeVarUint(e, STEP1); encoding.writeVarUint8Array(e, Uint8Array.from([0])) }))
  })
  ws.on('message', (data) => {
    const decoder = decoding.createDecoder(new Uint8Array(data))
    decoding.readVarString(decoder)
    const type = decoding.readVarUint(decoder)
    if (type !== SYNC && type !== SYNC_REPLY) return
    const subtype = decoding.readVarUint(decoder)
    if (subtype === STEP1) {
      // Server's SyncStep1: answer with an empty SyncStep2 (as a SyncReply so it asks nothing back).
      ws.send(frame(room, SYNC_REPLY, (e) => { encoding.writeVarUint(e, STEP2); encoding.writeVarUint8Array(e, Uint8Array.from([0, 0])) }))
    } else if (subtype === STEP2) {
      receiver.synced = true
    } else if (subtype === UPDATE) {
      const received = now()
      const bytes = decoding.readVarUint8Array(decoder)
      const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1')
      for (const match of text.matchAll(MARKER)) {
        const seq = Number(match[1])
        if (receiver.seen.has(seq)) { duplicates++; continue }
        receiver.seen.add(seq)
        deliveries++
        latencies.push(received - Number(match[2]))
      }
    }
  })
  ws.on('error', (err) => console.error('receiver error', room, err.message))
  receiver.close = () => ws.close()
  return receiver
}

const openWriter = (room) => {
  const doc = new Y.Doc()
  // Node 20 has no global WebSocket: give the provider's socket `ws` explicitly.
  const websocketProvider = new HocuspocusProviderWebsocket({ url, WebSocketPolyfill: WebSocket })
  const provider = new HocuspocusProvider({ name: room, document: doc, websocketProvider })
  provider.attach()
  return { room, doc, provider, websocketProvider, text: doc.getText('text'), seq: 0 }
}

const writers = rooms.map(openWriter)
const receivers = rooms.flatMap((room) => Array.from({ length: receiversPerRoom }, () => openReceiver(room)))

const waitFor = async (predicate, timeoutMs, what) => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) { out({ error: `timed out waiting for ${what}` }); process.exit(1) }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

await waitFor(() => writers.every((w) => w.provider.synced) && receivers.every((r) => r.synced), 60000,
  'every client to sync')
out({ ready: true, writers: writers.length, receivers: receivers.length })

const lines = readline.createInterface({ input: process.stdin })
await new Promise((resolve) => lines.once('line', resolve))

const start = now()
const intervalMs = 1000 / rate
let written = 0
await new Promise((resolve) => {
  const timer = setInterval(() => {
    const elapsed = now() - start
    if (elapsed >= duration * 1000) { clearInterval(timer); resolve(); return }
    const due = Math.floor(elapsed / intervalMs) + 1
    for (const writer of writers) {
      while (writer.seq < due) {
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
while (deliveries < expected() && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 50))

const bySeqLost = receivers.reduce((sum, r) => {
  const writer = writers.find((w) => w.room === r.room)
  return sum + (writer.seq - r.seen.size)
}, 0)
out({
  written, deliveries, expected: expected(), lost: bySeqLost, duplicates,
  sendSeconds: (sendEnd - start) / 1000, latencies: latencies.map((x) => Math.round(x * 100) / 100)
})
for (const r of receivers) r.close()
for (const w of writers) { w.provider.destroy(); w.websocketProvider.destroy() }
setTimeout(() => process.exit(0), 200)
