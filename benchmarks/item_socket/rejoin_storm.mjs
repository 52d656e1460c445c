// Rejoin storm for bench_rejoin_storm.py: `clients` raw y-websocket clients join one document at
// `rate` per second, spread over the replicas in `urls`; each sends SyncStep1 with `stateVector`
// (hex; empty = a client with nothing, which gets the whole document; the document's own = a client
// rejoining after a deploy with everything) and times the server's SyncStep2 (the last message of
// the answer) from the moment it starts connecting. Skips decoding the document so the clients stay
// cheap. Usage: node rejoin_storm.mjs '{"urls": [...], "doc": "name", "clients": 300, "rate": 25,
// "stateVector": "00"}'
// Prints one JSON line: {"first_sync_ms": [...], "failed": n, "bytes": size of one SyncStep2}.
import WebSocket from 'ws'

const { urls, doc, clients, rate, stateVector = '00', timeoutMs = 120000 } = JSON.parse(process.argv[2])
const vector = Buffer.from(stateVector, 'hex')
const step1 = Buffer.concat([Buffer.from([0, 0]), varUint(vector.length), vector])

function varUint (n) {
  const bytes = []
  while (n > 127) { bytes.push((n & 127) | 128); n = Math.floor(n / 128) }
  bytes.push(n)
  return Buffer.from(bytes)
}
const results = []
let failed = 0
let bytes = 0

const join = (index) => new Promise((resolve) => {
  const url = urls[index % urls.length].replace(/^http/, 'ws')
  const started = performance.now()
  const ws = new WebSocket(`${url}/ws/${doc}`, { perMessageDeflate: false, maxPayload: 1 << 30 })
  const timer = setTimeout(() => { failed++; ws.terminate(); resolve() }, timeoutMs)
  ws.on('open', () => ws.send(step1))
  ws.on('message', (data) => {
    if (data[0] === 0 && data[1] === 1) {
      results.push(performance.now() - started)
      bytes = data.length
      clearTimeout(timer)
      ws.close()
      resolve()
    }
  })
  ws.on('error', () => { clearTimeout(timer); failed++; resolve() })
})

const pending = []
for (let i = 0; i < clients; i++) {
  pending.push(join(i))
  await new Promise((resolve) => setTimeout(resolve, 1000 / rate))
}
await Promise.all(pending)
console.log(JSON.stringify({ first_sync_ms: results, failed, bytes }))
