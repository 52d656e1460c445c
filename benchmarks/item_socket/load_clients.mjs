// Load generator for bench_throughput.py: one process hosts many rooms, each with one writer and
// several receivers. The writer is a real npm provider (y-websocket or y-socket.io) editing a Y.Doc;
// receivers speak the same wire protocol but skip applying updates to a Y.Doc, so the client side
// stays cheap and the server is what is measured.
//
// Usage: node load_clients.mjs '<json config>'
//   {"url", "protocol": "ws"|"sio", "rooms": [names], "receivers": 3, "rate": updates/s per room,
//    "duration": seconds, "urls": [optional: several replicas' base URLs]}
// With "urls", the writer of room i uses urls[i % n] and its receivers the following replicas in turn,
// so every delivery crosses replicas (the scale-out benchmark).
// Protocol on stdout (JSON lines): {"ready": true} once every client synced; then it waits for a
// line "go" on stdin, writes for `duration` s, waits for stragglers and prints the result line.
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as decoding from 'lib0/decoding'
import { SocketIOProvider } from 'y-socket.io'
import { WebsocketProvider } from 'y-websocket'

import { Receiver, driveLoad } from '../load_driver.mjs'

console.log = console.error
const config = JSON.parse(process.argv[2])
const { url, protocol, rooms, receivers: receiversPerRoom, rate, duration } = config
const urls = config.urls ?? [url]
const urlFor = (roomIndex, clientIndex) => urls[(roomIndex + clientIndex) % urls.length]

const openWsReceiver = (room, url) => {
  const receiver = new Receiver(room)
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws/${room}`)
  ws.binaryType = 'nodebuffer'
  ws.on('open', () => {
    // SyncStep1 with an empty state vector: we want nothing but the live updates.
    ws.send(Uint8Array.from([0, 0, 1, 0]))
  })
  ws.on('message', (data) => {
    const bytes = new Uint8Array(data)
    if (bytes[0] !== 0) return
    const decoder = decoding.createDecoder(bytes)
    decoding.readVarUint(decoder)
    const subtype = decoding.readVarUint(decoder)
    if (subtype === 0) {
      // Server's SyncStep1: answer with an empty SyncStep2.
      const encoder = encoding.createEncoder()
      encoding.writeVarUint(encoder, 0)
      encoding.writeVarUint(encoder, 1)
      encoding.writeVarUint8Array(encoder, Uint8Array.from([0, 0]))
      ws.send(encoding.toUint8Array(encoder))
    } else if (subtype === 1) {
      receiver.synced = true
    } else {
      receiver.onUpdateBytes(decoding.readVarUint8Array(decoder))
    }
  })
  ws.on('error', (err) => console.error('receiver error', room, err.message))
  receiver.close = () => ws.close()
  return receiver
}

// A raw Socket.IO receiver over `ws`: Engine.IO v4 + Socket.IO v5 framing by hand, so each delivery
// costs one small JSON header check and a binary frame, not socket.io-client's full parser.
const openSioReceiver = (room, url) => {
  const receiver = new Receiver(room)
  const nsp = `/yjs|${room}`
  const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`)
  ws.binaryType = 'nodebuffer'
  let pending = null // the event whose binary attachment comes next
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      const event = pending
      pending = null
      if (event === null) return
      if (event.name === 'sync-update') receiver.onUpdateBytes(new Uint8Array(data))
      else if (event.name === 'sync-step-1' && event.ack !== null) {
        // Ack the server's SyncStep1 with an empty update.
        ws.send(`461-${nsp},${event.ack}[{"_placeholder":true,"num":0}]`)
        ws.send(Buffer.from([0, 0]))
        receiver.synced = true
      }
      return
    }
    const text = data.toString()
    if (text === '2') { ws.send('3'); return }
    if (text.startsWith('0')) { ws.send(`40${nsp},`); return }
    if (text.startsWith('451-')) {
      // 451-<nsp>,[<ack id>]["<event>",{"_placeholder":true,"num":0}]
      const comma = text.indexOf(',', 4)
      const bracket = text.indexOf('[', comma)
      const ack = bracket > comma + 1 ? text.slice(comma + 1, bracket) : null
      const nameEnd = text.indexOf('"', bracket + 2)
      pending = { name: text.slice(bracket + 2, nameEnd), ack }
    }
  })
  ws.on('error', (err) => console.error('receiver error', room, err.message))
  receiver.close = () => ws.close()
  return receiver
}

const openWriter = (room, url) => {
  const doc = new Y.Doc()
  const provider = protocol === 'ws'
    ? new WebsocketProvider(`${url}/ws`, room, doc, { WebSocketPolyfill: WebSocket, disableBc: true })
    : new SocketIOProvider(url, room, doc, { disableBc: true }, {})
  return { room, doc, provider, text: doc.getText('text'), seq: 0 }
}

const writers = rooms.map((room, i) => openWriter(room, urlFor(i, 0)))
const receivers = rooms.flatMap((room, i) =>
  Array.from({ length: receiversPerRoom }, (_, j) =>
    (protocol === 'ws' ? openWsReceiver : openSioReceiver)(room, urlFor(i, j + 1))))

await driveLoad({
  writers, receivers, receiversPerRoom, rate, duration, destroyWriter: (w) => w.provider.destroy()
})
