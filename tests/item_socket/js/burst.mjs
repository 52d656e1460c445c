// Send a burst of Yjs updates and close the connection at once, like an app closed right after
// typing. Usage: node burst.mjs <ws|sio|sio-polling> <server url> <doc> <count> [token]
// Each update appends "<i>," to Y.Text 'text' (one transaction per update). Prints one JSON line
// {"sent": count, "clientID": ...} after the connection is closed.
// With BURST_DOCS=n in the environment it repeats that n times, one after the other, on the
// documents <doc>-0 .. <doc>-(n-1) (many short-lived sessions), and prints {"sent": ..., "docs": n}.
// With BURST_CLOSE=abrupt (ws and sio only) the TCP connection is ended right after the data,
// without a WebSocket close frame or Socket.IO disconnect: an app killed or a network cut right after
// typing. The data is still flushed before the FIN (socket.end()), so every byte reaches the server.
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as encoding from 'lib0/encoding'
import * as syncProtocol from 'y-protocols/sync'
import { io } from 'socket.io-client'

const [protocol, url, room, countArg, token] = process.argv.slice(2)
const count = Number(countArg)
if (!['ws', 'sio', 'sio-polling'].includes(protocol) || !url || !room || !(count > 0)) {
  console.error('usage: node burst.mjs <ws|sio|sio-polling> <server url> <doc> <count> [token]')
  process.exit(2)
}

const abrupt = process.env.BURST_CLOSE === 'abrupt'
if (abrupt && protocol === 'sio-polling') {
  console.error('BURST_CLOSE=abrupt needs a WebSocket transport (ws or sio)')
  process.exit(2)
}

const burstOnce = (room) => new Promise((resolve, reject) => {
  const doc = new Y.Doc()
  const updates = []
  doc.on('update', (update) => updates.push(update))
  const text = doc.getText('text')
  for (let i = 0; i < count; i++) text.insert(text.length, `${i},`)

  const done = () => resolve({ sent: updates.length, clientID: doc.clientID })

  if (protocol === 'ws') {
    const wsUrl = url.replace(/^http/, 'ws') + '/ws/' + room + (token ? `?token=${encodeURIComponent(token)}` : '')
    const ws = new WebSocket(wsUrl)
    ws.on('open', () => {
      for (const update of updates) {
        const encoder = encoding.createEncoder()
        encoding.writeVarUint(encoder, 0) // messageSync
        syncProtocol.writeUpdate(encoder, update)
        ws.send(encoding.toUint8Array(encoder))
      }
      if (abrupt) ws._socket.end() // FIN after the buffered frames, no close frame
      else ws.close(1000) // queued after the data frames: every byte is sent before the close frame
    })
    ws.on('close', done)
    ws.on('error', (err) => { reject(err) })
  } else {
    const socket = io(`${url}/yjs|${room}`, {
      transports: protocol === 'sio' ? ['websocket'] : ['polling'],
      forceNew: true,
      reconnection: false,
      auth: token ? { token } : {}
    })
    socket.on('connect', () => {
      for (const update of updates) socket.emit('sync-update', update)
      if (abrupt) {
        // engine.io-client writes through the `ws` package; end its TCP socket once the events are out.
        const engine = socket.io.engine
        const endSocket = () => { engine.transport.ws._socket.end(); setTimeout(done, 50) }
        if (engine.writeBuffer.length === 0) endSocket()
        else engine.once('drain', endSocket)
        return
      }
      socket.disconnect() // the disconnect packet follows the events in the same write buffer
    })
    socket.on('disconnect', () => {
      if (abrupt) return
      // socket.io-client flushes its write buffer before closing the transport; wait for that.
      const engine = socket.io.engine
      if (!engine || engine.readyState === 'closed') done()
      else engine.on('close', done)
    })
    socket.on('connect_error', (err) => { reject(err) })
  }
})

setTimeout(() => { console.error('burst: timed out'); process.exit(1) }, 60000).unref()
const docs = Number(process.env.BURST_DOCS || 0)
try {
  if (docs > 0) {
    let sent = 0
    for (let i = 0; i < docs; i++) sent += (await burstOnce(`${room}-${i}`)).sent
    process.stdout.write(JSON.stringify({ sent, docs }) + '\n')
  } else {
    process.stdout.write(JSON.stringify(await burstOnce(room)) + '\n')
  }
  process.exit(0)
} catch (err) {
  console.error('burst failed:', err?.message ?? err)
  process.exit(1)
}
