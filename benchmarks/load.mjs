// The one load generator of benchmarks/run.py, for every server and every profile.
//
// Usage: node benchmarks/load.mjs '<json config>'   (stdin/stdout: JSON lines, see each mode below)
//
// Config (run.py writes it; every field is required unless marked):
//   mode       "throughput" | "idle" | "docs" | "large" | "presence"
//   protocol   "ywebsocket" (npm y-websocket's wire format), "sio" (y-socket.io over Socket.IO v5)
//              or "hocuspocus" (Hocuspocus' framing: <docName><type><payload>)
//   url        ws://127.0.0.1:<port><prefix>: a y-websocket room is `${url}/${room}`; Socket.IO and
//              Hocuspocus connect to `url` itself
//   rooms      room (document) names this process hosts
//
// Writers are the real npm providers (y-websocket WebsocketProvider, y-socket.io SocketIOProvider,
// @hocuspocus/provider) editing a yjs Y.Doc. The other clients speak the same wire protocol by hand
// ("raw" clients) and skip Y.Doc work, so one load core can drive a server core: with a Y.Doc per
// receiver the generator, not the server, would be the limit (`receivers: "provider"` makes every
// client a real provider, for checking that the raw clients see what real ones see).
//
// Every update carries a marker `|<step>:<writer>:<seq>:<send time ms>|` followed by the payload,
// as the value of the writer's own key of a Y.Map, so receivers find it in the raw update bytes.
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import readline from 'node:readline'

import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import WebSocket from 'ws'
import { SocketIOProvider } from 'y-socket.io'
import { WebsocketProvider } from 'y-websocket'
import * as Y from 'yjs'

console.log = console.error // libraries' chatter must not corrupt the JSON lines on stdout
const config = JSON.parse(process.argv[2])
const now = () => performance.timeOrigin + performance.now() // wall clock, ms, sub-ms resolution
const out = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const lines = readline.createInterface({ input: process.stdin })
const pendingLines = []
const lineWaiters = []
lines.on('line', (line) => { const w = lineWaiters.shift(); if (w) w(line); else pendingLines.push(line) })
lines.on('close', () => { for (const w of lineWaiters.splice(0)) w('stop') })
const nextLine = () => pendingLines.length ? Promise.resolve(pendingLines.shift()) : new Promise((resolve) => lineWaiters.push(resolve))

/** Poll `predicate` every 20 ms until true; false after `timeoutMs`. */
const waitFor = async (predicate, timeoutMs) => {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) return false
    await sleep(20)
  }
  return true
}

// ---------------------------------------------------------------------------------------------
// Raw clients: one WebSocket speaking a protocol by hand. `on` = {update(bytes), awareness(bytes),
// synced()}; returns {sendUpdate(bytes), sendAwareness(bytes), sync(), close()}. `sync()` asks the
// server for the document (SyncStep1, empty state vector): its reply, after everything sent before
// it was applied, fires `on.synced`.

const varBytes = (prefix, bytes) => {
  const encoder = encoding.createEncoder()
  for (const n of prefix) encoding.writeVarUint(encoder, n)
  encoding.writeVarUint8Array(encoder, bytes)
  return encoding.toUint8Array(encoder)
}
const EMPTY_SV = Uint8Array.from([0])
const EMPTY_UPDATE = Uint8Array.from([0, 0])

const rawYWebsocket = (room, on) => {
  const ws = new WebSocket(`${config.url}/${room}`, { perMessageDeflate: false })
  ws.binaryType = 'nodebuffer'
  const opened = new Promise((resolve) => ws.once('open', resolve))
  ws.on('message', (data) => {
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
    const decoder = decoding.createDecoder(bytes)
    const type = decoding.readVarUint(decoder)
    if (type === 1) { on.awareness?.(decoding.readVarUint8Array(decoder)); return }
    if (type !== 0) return
    const subtype = decoding.readVarUint(decoder)
    if (subtype === 0) ws.send(varBytes([0, 1], EMPTY_UPDATE)) // answer the server's SyncStep1
    else if (subtype === 1) on.synced?.()
    else on.update?.(decoding.readVarUint8Array(decoder))
  })
  ws.on('error', (err) => console.error('client error', room, err.message))
  const send = (msg) => opened.then(() => ws.readyState === WebSocket.OPEN && ws.send(msg))
  return {
    sendUpdate: (u) => send(varBytes([0, 2], u)),
    sendAwareness: (a) => send(varBytes([1], a)),
    sync: () => send(varBytes([0, 0], EMPTY_SV)),
    close: () => ws.terminate()
  }
}

// Engine.IO v4 + Socket.IO v5 by hand: a binary event is a text header with a placeholder, then
// the attachment as a binary frame.
const rawSocketIO = (room, on) => {
  const nsp = `/yjs|${room}`
  const base = config.url.replace(/\/$/, '')
  const ws = new WebSocket(`${base}/socket.io/?EIO=4&transport=websocket`, { perMessageDeflate: false })
  ws.binaryType = 'nodebuffer'
  let connected
  const joined = new Promise((resolve) => { connected = resolve })
  let pending = null // the event whose binary attachment comes next
  let nextAck = 1
  const acks = new Map()
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      const event = pending
      pending = null
      if (event === null) return
      const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength)
      if (event.reply !== null) { acks.get(event.reply)?.(); acks.delete(event.reply) } else if (event.name === 'sync-update') on.update?.(bytes)
      else if (event.name === 'awareness-update') on.awareness?.(bytes)
      else if (event.name === 'sync-step-1' && event.ack !== null) {
        ws.send(`461-${nsp},${event.ack}[{"_placeholder":true,"num":0}]`)
        ws.send(EMPTY_UPDATE)
      }
      return
    }
    const text = data.toString()
    if (text === '2') { ws.send('3'); return }
    if (text.startsWith('0')) { ws.send(`40${nsp},`); return }
    if (text.startsWith('40')) { connected(); return }
    // 451-<nsp>,[<ack id>]["<event>",{...}]  or the answer to our ack: 461-<nsp>,<id>[{...}]
    if (text.startsWith('451-') || text.startsWith('461-')) {
      const comma = text.indexOf(',', 4)
      const bracket = text.indexOf('[', comma)
      const id = bracket > comma + 1 ? Number(text.slice(comma + 1, bracket)) : null
      if (text[1] === '6') { pending = { reply: id }; return }
      const nameEnd = text.indexOf('"', bracket + 2)
      pending = { name: text.slice(bracket + 2, nameEnd), ack: id, reply: null }
    }
  })
  ws.on('error', (err) => console.error('client error', room, err.message))
  const emit = (name, bytes, ack) => joined.then(() => {
    if (ws.readyState !== WebSocket.OPEN) return
    ws.send(`451-${nsp},${ack ?? ''}["${name}",{"_placeholder":true,"num":0}]`)
    ws.send(bytes)
  })
  return {
    sendUpdate: (u) => emit('sync-update', u),
    sendAwareness: (a) => emit('awareness-update', a),
    sync: () => {
      const id = nextAck++
      acks.set(id, () => on.synced?.())
      return emit('sync-step-1', EMPTY_SV, id)
    },
    close: () => ws.terminate()
  }
}

// Hocuspocus: every message is <varString docName><varUint type>..., and a document's messages
// wait for an Auth message (empty token: the benchmark server has no onAuthenticate hook).
const HP_SYNC = 0
const HP_AWARENESS = 1
const HP_AUTH = 2
const HP_SYNC_REPLY = 4
const hpFrame = (room, type, prefix, bytes) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarString(encoder, room)
  encoding.writeVarUint(encoder, type)
  for (const n of prefix) encoding.writeVarUint(encoder, n)
  if (bytes !== null) encoding.writeVarUint8Array(encoder, bytes)
  return encoding.toUint8Array(encoder)
}
const rawHocuspocus = (room, on) => {
  const ws = new WebSocket(config.url, { perMessageDeflate: false })
  ws.binaryType = 'nodebuffer'
  const opened = new Promise((resolve) => ws.once('open', () => {
    const auth = encoding.createEncoder()
    encoding.writeVarString(auth, room)
    encoding.writeVarUint(auth, HP_AUTH)
    encoding.writeVarUint(auth, 0)
    encoding.writeVarString(auth, '')
    ws.send(encoding.toUint8Array(auth))
    resolve()
  }))
  ws.on('message', (data) => {
    const decoder = decoding.createDecoder(new Uint8Array(data.buffer, data.byteOffset, data.byteLength))
    decoding.readVarString(decoder)
    const type = decoding.readVarUint(decoder)
    if (type === HP_AWARENESS) { on.awareness?.(decoding.readVarUint8Array(decoder)); return }
    if (type !== HP_SYNC && type !== HP_SYNC_REPLY) return
    const subtype = decoding.readVarUint(decoder)
    if (subtype === 0) ws.send(hpFrame(room, HP_SYNC_REPLY, [1], EMPTY_UPDATE)) // a reply asks nothing back
    else if (subtype === 1) on.synced?.()
    else on.update?.(decoding.readVarUint8Array(decoder))
  })
  ws.on('error', (err) => console.error('client error', room, err.message))
  const send = (msg) => opened.then(() => ws.readyState === WebSocket.OPEN && ws.send(msg))
  return {
    sendUpdate: (u) => send(hpFrame(room, HP_SYNC, [2], u)),
    sendAwareness: (a) => send(hpFrame(room, HP_AWARENESS, [], a)),
    sync: () => send(hpFrame(room, HP_SYNC, [0], EMPTY_SV)),
    close: () => ws.terminate()
  }
}

const RAW = { ywebsocket: rawYWebsocket, sio: rawSocketIO, hocuspocus: rawHocuspocus }
const openRaw = (room, on) => RAW[config.protocol](room, on)

/** A real npm provider on `doc`; returns {provider, destroy()}; `provider.synced` is its own flag. */
const openProvider = (room, doc) => {
  if (config.protocol === 'ywebsocket') {
    const provider = new WebsocketProvider(config.url, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
    return { provider, destroy: () => provider.destroy() }
  }
  if (config.protocol === 'sio') {
    const url = config.url.replace(/^ws/, 'http')
    const provider = new SocketIOProvider(url, room, doc, { disableBc: true }, {})
    return { provider, destroy: () => provider.destroy() }
  }
  const websocketProvider = new HocuspocusProviderWebsocket({ url: config.url, WebSocketPolyfill: WebSocket })
  const provider = new HocuspocusProvider({ name: room, document: doc, websocketProvider })
  provider.attach()
  return { provider, destroy: () => { provider.destroy(); websocketProvider.destroy() } }
}

// ---------------------------------------------------------------------------------------------
// throughput: R rooms x C clients, K writers per room; steps of {rate, duration} on stdin.
// stdout: {"ready", "connections"}; then for each stdin line "go <json {rate, duration, step}>":
// one result line; "stop" ends the process.

const MARKER = /\|(\d+):(\d+):(\d+):(\d+\.\d+)\|/g
const step = { index: -1, latencies: [], delivered: 0, duplicates: 0, outOfOrder: 0 }

/** What one client has seen of its room's writers this step: per writer, the sequence numbers. */
class Tracker {
  constructor () { this.seen = new Map(); this.synced = false }
  onText (text, received) {
    for (const m of text.matchAll(MARKER)) {
      if (Number(m[1]) !== step.index) continue // a straggler of an earlier step: counted lost there
      const writer = Number(m[2])
      const seq = Number(m[3])
      let seen = this.seen.get(writer)
      if (seen === undefined) { seen = { max: -1, seqs: new Set() }; this.seen.set(writer, seen) }
      if (seen.seqs.has(seq)) { step.duplicates++; continue }
      // Servers that merge several updates into one message (Hocuspocus) may list them in any order.
      if (seq < seen.max) step.outOfOrder++
      seen.seqs.add(seq)
      if (seq > seen.max) seen.max = seq
      step.delivered++
      step.latencies.push(received - Number(m[4]))
    }
  }

  /** Holes: sequence numbers below the highest one seen that never arrived (not trailing losses). */
  gaps () {
    let holes = 0
    for (const { max, seqs } of this.seen.values()) holes += max + 1 - seqs.size
    return holes
  }

  onBytes (bytes) {
    const received = now()
    this.onText(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('latin1'), received)
  }
}

async function throughput () {
  const { rooms, clients, writers: writersPerRoom, payload } = config
  const filler = 'x'.repeat(payload)
  const writers = []
  const trackers = []
  const closers = []
  let nextWriterId = 0
  const openClient = (room, k) => {
    const tracker = new Tracker()
    trackers.push(tracker)
    if (k < writersPerRoom || config.receivers === 'provider') {
      const doc = new Y.Doc()
      const map = doc.getMap('bench')
      map.observe((event) => {
        if (event.transaction.local) return
        const received = now()
        for (const key of event.keysChanged) {
          const value = map.get(key)
          if (typeof value === 'string') tracker.onText(value, received)
        }
      })
      const { provider, destroy } = openProvider(room, doc)
      closers.push(destroy)
      Object.defineProperty(tracker, 'synced', { get: () => provider.synced })
      if (k < writersPerRoom) writers.push({ id: nextWriterId++, room, map, key: `w${k}`, seq: 0 })
    } else {
      const raw = openRaw(room, { update: (u) => tracker.onBytes(u), synced: () => { tracker.synced = true } })
      raw.sync()
      closers.push(raw.close)
    }
  }
  // Each room's first client joins alone: pycrdt-websocket serves only the first of several clients
  // that open a not-yet-open room at the same moment (the others wait forever).
  for (const room of rooms) openClient(room, 0)
  await waitFor(() => trackers.every((t) => t.synced), config.syncTimeoutMs ?? 120000)
  for (const room of rooms) for (let k = 1; k < clients; k++) openClient(room, k)
  // Writers are numbered per process; receivers only compare numbers within their room.
  const ok = await waitFor(() => trackers.every((t) => t.synced), config.syncTimeoutMs ?? 120000)
  if (!ok) {
    out({ error: `only ${trackers.filter((t) => t.synced).length} of ${trackers.length} clients synced` })
    process.exit(1)
  }
  out({ ready: true, connections: trackers.length })
  const receiversPerUpdate = clients - 1
  for (;;) {
    const line = await nextLine()
    if (!line.startsWith('go ')) break
    const { rate, duration, index } = JSON.parse(line.slice(3))
    Object.assign(step, { index, latencies: [], delivered: 0, duplicates: 0, outOfOrder: 0 })
    for (const t of trackers) t.seen.clear()
    for (const w of writers) w.seq = 0
    const loopDelay = monitorEventLoopDelay({ resolution: 10 })
    loopDelay.enable()
    const cpuBefore = process.cpuUsage()
    const start = now()
    const intervalMs = 1000 / rate
    let sent = 0
    // One timer: each tick writes every update that is due, so timer jitter does not lower the rate.
    await new Promise((resolve) => {
      const timer = setInterval(() => {
        const elapsed = now() - start
        if (elapsed >= duration * 1000) { clearInterval(timer); resolve(); return }
        const due = Math.floor(elapsed / intervalMs) + 1
        for (const w of writers) {
          while (w.seq < due) {
            w.map.set(w.key, `|${index}:${w.id}:${w.seq}:${now().toFixed(3)}|${filler}`)
            w.seq++
            sent++
          }
        }
      }, Math.max(1, Math.min(10, intervalMs / 2)))
    })
    const sendSeconds = (now() - start) / 1000
    const expected = sent * receiversPerUpdate
    await waitFor(() => step.delivered >= expected, config.drainMs ?? 5000)
    loopDelay.disable()
    const cpu = process.cpuUsage(cpuBefore)
    const wall = (now() - start) / 1000
    out({
      step: index,
      sent,
      expected,
      delivered: step.delivered,
      gaps: trackers.reduce((sum, t) => sum + t.gaps(), 0),
      outOfOrder: step.outOfOrder,
      duplicates: step.duplicates,
      sendSeconds,
      wallSeconds: wall,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
      latencies: step.latencies.map((x) => Math.round(x * 100) / 100)
    })
  }
  for (const close of closers) close()
}

// ---------------------------------------------------------------------------------------------
// idle: `clients` raw connections per room, synced, then nothing. stdout {"ready", "connections"};
// waits for any stdin line, closes everything and exits.
async function idle () {
  const trackers = []
  const closers = []
  const concurrency = config.concurrency ?? 200
  let next = 0
  // Each room's first client joins alone (see throughput), then the others; in waves of
  // `concurrency` so the server's accept queue is never the subject.
  const all = [...config.rooms, ...config.rooms.flatMap((room) => Array.from({ length: config.clients - 1 }, () => room))]
  while (next < all.length) {
    const waveEnd = next < config.rooms.length ? Math.min(config.rooms.length, next + concurrency) : next + concurrency
    const wave = all.slice(next, waveEnd).map((room) => {
      const t = { synced: false }
      const raw = openRaw(room, { synced: () => { t.synced = true } })
      raw.sync()
      closers.push(raw.close)
      trackers.push(t)
      return t
    })
    next += wave.length
    if (!await waitFor(() => wave.every((t) => t.synced), 60000)) {
      out({ error: `only ${trackers.filter((t) => t.synced).length} of ${all.length} idle clients synced` })
      process.exit(1)
    }
  }
  out({ ready: true, connections: trackers.length })
  await nextLine()
  for (const close of closers) close()
}

// ---------------------------------------------------------------------------------------------
// docs: open `documents` documents (`concurrency` at a time); each gets one small update, then its
// client waits for the server's answer to a SyncStep1 sent after it (so the update was applied)
// and closes. stdout: {"opened", "failed", "seconds"}.
async function docs () {
  const { documents, concurrency, prefix } = config
  const started = now()
  let next = 0
  let opened = 0
  let failed = 0
  const one = (i) => new Promise((resolve) => {
    const doc = new Y.Doc()
    doc.getMap('bench').set('k', `document ${i}`)
    let timer = null
    const raw = openRaw(`${prefix}${i}`, { synced: () => { clearTimeout(timer); raw.close(); resolve(true) } })
    timer = setTimeout(() => { raw.close(); resolve(false) }, 15000)
    raw.sendUpdate(Y.encodeStateAsUpdate(doc))
    raw.sync()
  })
  const worker = async () => {
    while (next < documents) {
      if (await one(next++)) opened++
      else failed++
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  out({ opened, failed, seconds: (now() - started) / 1000 })
}

// ---------------------------------------------------------------------------------------------
// large: a seeding provider writes `bytes` of content (a Y.Array of 1 KiB strings) to one document;
// once a fresh provider reads it back whole, `clients` real providers open it at the same moment.
// stdout: {"seeded", "seedSeconds", "times": [ms to full content per client, null if not within
// the timeout], "failed"}.
async function large () {
  const room = config.rooms[0]
  const chunk = 'y'.repeat(1024)
  const items = Math.ceil(config.bytes / 1024)
  const started = now()
  const seedDoc = new Y.Doc()
  const arr = seedDoc.getArray('blob')
  seedDoc.transact(() => { for (let i = 0; i < items; i += 1000) arr.push(Array.from({ length: Math.min(1000, items - i) }, () => chunk)) })
  const seed = openProvider(room, seedDoc)
  // Read back: a fresh real provider must see the whole array (the server has applied it).
  let seeded = false
  const deadline = Date.now() + config.timeoutMs
  while (!seeded && Date.now() < deadline) seeded = await checkWhole(room)
  const seedSeconds = (now() - started) / 1000
  if (!seeded) { seed.destroy(); out({ seeded: false, seedSeconds, times: [], failed: config.clients }); return }
  const t0 = now()
  const times = await Promise.all(Array.from({ length: config.clients }, () => new Promise((resolve) => {
    const doc = new Y.Doc()
    const blob = doc.getArray('blob')
    const { destroy } = openProvider(room, doc)
    const finish = (value) => { clearInterval(poll); clearTimeout(timer); destroy(); resolve(value) }
    // The content is what counts (y-socket.io calls itself synced before the content arrives).
    const poll = setInterval(() => { if (blob.length >= items) finish(now() - t0) }, 5)
    const timer = setTimeout(() => finish(null), config.timeoutMs)
  })))
  seed.destroy()
  out({ seeded: true, seedSeconds, times, failed: times.filter((t) => t === null).length })
}

/** True once a real provider sees the whole seeded Y.Array (servers whose raw reply is split). */
async function checkWhole (room) {
  const doc = new Y.Doc()
  const { destroy } = openProvider(room, doc)
  const items = Math.ceil(config.bytes / 1024)
  const ok = await waitFor(() => doc.getArray('blob').length >= items, 5000)
  destroy()
  return ok
}

// ---------------------------------------------------------------------------------------------
// presence: `users` raw clients in one document, each announcing its cursor at `hz` (awareness
// update: one client, clock + 1, JSON state with the send time). `observers` of them decode what
// they receive: latency per state and dropped frames (clock gaps per user). stdout: one result.
async function presence () {
  const { users, observers, hz, duration } = config
  const room = config.rooms[0]
  const clients = []
  const seen = new Map() // observer index -> Map(clientID -> last clock)
  const latencies = []
  let dropped = 0
  let received = 0
  for (let i = 0; i < users; i++) {
    const observer = i < observers
    const last = new Map()
    if (observer) seen.set(i, last)
    const client = { id: 1_000_000 + i, clock: 0, synced: false }
    client.raw = openRaw(room, {
      synced: () => { client.synced = true },
      awareness: observer
        ? (bytes) => {
            const at = now()
            const decoder = decoding.createDecoder(bytes)
            const n = decoding.readVarUint(decoder)
            for (let j = 0; j < n; j++) {
              const id = decoding.readVarUint(decoder)
              const clock = decoding.readVarUint(decoder)
              const state = decoding.readVarString(decoder)
              if (id < 1_000_000 || id === client.id || state === 'null') continue
              const prev = last.get(id)
              if (prev !== undefined && clock <= prev) continue // a repeat (snapshot, echo)
              if (prev !== undefined && clock > prev + 1) dropped += clock - prev - 1
              last.set(id, clock)
              const t = state.indexOf('"t":')
              if (t >= 0 && (prev !== undefined || clock === 1)) { latencies.push(at - Number(state.slice(t + 4, state.indexOf('}', t)))); received++ }
            }
          }
        : null
    })
    client.raw.sync()
    clients.push(client)
    // The first user opens the document alone (see throughput).
    if (i === 0 && !await waitFor(() => client.synced, 30000)) { out({ error: 'the first presence client did not sync' }); process.exit(1) }
  }
  if (!await waitFor(() => clients.every((c) => c.synced), 120000)) {
    out({ error: `only ${clients.filter((c) => c.synced).length} of ${users} presence clients synced` })
    process.exit(1)
  }
  out({ ready: true, connections: clients.length })
  if (await nextLine() !== 'go') { for (const c of clients) c.raw.close(); return } // stopped early
  const loopDelay = monitorEventLoopDelay({ resolution: 10 })
  loopDelay.enable()
  const cpuBefore = process.cpuUsage()
  const start = now()
  const periodMs = 1000 / hz
  let sent = 0
  // Users move in turn, spread evenly over each period.
  await new Promise((resolve) => {
    const timer = setInterval(() => {
      const elapsed = now() - start
      if (elapsed >= duration * 1000) { clearInterval(timer); resolve(); return }
      for (let i = 0; i < users; i++) {
        const c = clients[i]
        const due = Math.floor((elapsed - (i * periodMs) / users) / periodMs) + 1
        while (c.clock < due) {
          c.clock++
          const state = `{"user":${i},"cursor":{"x":${(c.clock * 7) % 1000},"y":${(c.clock * 13) % 800}},"t":${now().toFixed(3)}}`
          const encoder = encoding.createEncoder()
          encoding.writeVarUint(encoder, 1)
          encoding.writeVarUint(encoder, c.id)
          encoding.writeVarUint(encoder, c.clock)
          encoding.writeVarString(encoder, state)
          c.raw.sendAwareness(encoding.toUint8Array(encoder))
          sent++
        }
      }
    }, 5)
  })
  const expectedPerObserver = (users - 1)
  // Drain: every observer should end on each user's last clock.
  await waitFor(() => [...seen.entries()].every(([i, last]) => clients.every((c, j) => j === i || last.get(c.id) === c.clock)), 5000)
  let missingAtEnd = 0
  for (const [i, last] of seen.entries()) {
    for (const [j, c] of clients.entries()) if (j !== i) missingAtEnd += c.clock - (last.get(c.id) ?? 0)
  }
  loopDelay.disable()
  const cpu = process.cpuUsage(cpuBefore)
  out({
    sent,
    observers,
    usersPerObserver: expectedPerObserver,
    received,
    dropped,
    missingAtEnd,
    sendSeconds: duration,
    wallSeconds: (now() - start) / 1000,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    loopDelayP99Ms: loopDelay.percentile(99) / 1e6,
    latencies: latencies.map((x) => Math.round(x * 100) / 100)
  })
  for (const c of clients) c.raw.close()
}

const MODES = { throughput, idle, docs, large, presence }
try {
  await MODES[config.mode]()
} catch (err) {
  out({ error: String(err?.stack ?? err) })
  process.exit(1)
}
// Providers keep timers (reconnects, awareness renewals): leave once the result is written.
setTimeout(() => process.exit(0), 100)
