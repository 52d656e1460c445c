// Open and close many documents over raw y-websocket, for bench_memory.py.
// Usage: node open_close_docs.mjs <server url> <prefix> <first index> <end index> <concurrency>
// For each document: connect to /ws/<prefix><i>, write one small update and one presence state,
// wait for the server's SyncStep2, close. Prints {"opened": n, "failed": n, "seconds": s} when done.
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'

const [url, prefix, firstArg, endArg, concurrencyArg] = process.argv.slice(2)
const first = Number(firstArg)
const end = Number(endArg)
const concurrency = Number(concurrencyArg)
const wsBase = url.replace(/^http/, 'ws')

const updateMessage = (i) => {
  const doc = new Y.Doc()
  doc.getText('text').insert(0, `document ${i}`)
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, 0)
  encoding.writeVarUint(encoder, 2)
  encoding.writeVarUint8Array(encoder, Y.encodeStateAsUpdate(doc))
  return encoding.toUint8Array(encoder)
}

const awarenessMessage = (i) => {
  const state = encoding.createEncoder()
  encoding.writeVarUint(state, 1)
  encoding.writeVarUint(state, 1000000 + i) // client ID
  encoding.writeVarUint(state, 1) // clock (y-protocols ignores clock 0 from an unknown client)
  encoding.writeVarString(state, JSON.stringify({ user: `bench ${i}` }))
  const encoder = encoding.createEncoder()
  encoding.writeVarUint(encoder, 1) // awareness message
  encoding.writeVarUint8Array(encoder, encoding.toUint8Array(state))
  return encoding.toUint8Array(encoder)
}

const openClose = (i) => new Promise((resolve) => {
  const ws = new WebSocket(`${wsBase}/ws/${prefix}${i}`)
  const timer = setTimeout(() => { ws.terminate(); resolve(false) }, 15000)
  ws.on('open', () => {
    ws.send(updateMessage(i))
    ws.send(awarenessMessage(i))
    ws.send(Uint8Array.from([0, 0, 1, 0])) // SyncStep1, empty state vector
  })
  ws.on('message', (data) => {
    const bytes = new Uint8Array(data)
    if (bytes[0] === 0 && bytes[1] === 1) { clearTimeout(timer); ws.close(); resolve(true) }
  })
  ws.on('error', () => { clearTimeout(timer); resolve(false) })
})

const started = Date.now()
let next = first
let opened = 0
let failed = 0
const worker = async () => {
  while (next < end) {
    const i = next++
    if (await openClose(i)) opened++
    else failed++
  }
}
await Promise.all(Array.from({ length: concurrency }, worker))
process.stdout.write(JSON.stringify({ opened, failed, seconds: (Date.now() - started) / 1000 }) + '\n')
