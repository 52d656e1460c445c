// Hocuspocus load for run.py, with the same config and stdin/stdout protocol as
// benchmarks/item_socket/load_clients.mjs. It is a separate copy because Hocuspocus frames every
// message as <varString document name><varUint type><payload> and wants an Auth message before it
// handles a document, which neither WebsocketProvider nor load_clients.mjs's raw receivers speak.
// The writer is a real HocuspocusProvider; receivers speak the framing by hand and skip Y.Doc work.
//
// Usage: node load_hocuspocus.mjs '{"url", "rooms": [names], "receivers": 3, "rate", "duration"}'
import { HocuspocusProvider, HocuspocusProviderWebsocket } from '@hocuspocus/provider'
import * as decoding from 'lib0/decoding'
import * as encoding from 'lib0/encoding'
import WebSocket from 'ws'
import * as Y from 'yjs'

import { Receiver, driveLoad } from '../load_driver.mjs'

console.log = console.error
const config = JSON.parse(process.argv[2])
const { url, rooms, receivers: receiversPerRoom, rate, duration } = config
// Hocuspocus message types (@hocuspocus/common MessageType) and y-protocols sync subtypes.
const SYNC = 0
const AUTH = 2
const SYNC_REPLY = 4
const STEP1 = 0
const STEP2 = 1
const UPDATE = 2

const frame = (room, type, write) => {
  const encoder = encoding.createEncoder()
  encoding.writeVarString(encoder, room)
  encoding.writeVarUint(encoder, type)
  write(encoder)
  return encoding.toUint8Array(encoder)
}

const openReceiver = (room) => {
  const receiver = new Receiver(room)
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
      receiver.onUpdateBytes(decoding.readVarUint8Array(decoder))
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

await driveLoad({
  writers,
  receivers,
  receiversPerRoom,
  rate,
  duration,
  destroyWriter: (w) => { w.provider.destroy(); w.websocketProvider.destroy() }
})
