// Client agent: hosts one or several real npm Yjs clients (y-socket.io's SocketIOProvider over
// WebSocket or long-polling, y-websocket's WebsocketProvider) in one Node process, driven by JSON
// lines on stdin. Every request is {"id": <any>, "cmd": <name>, ...args}; every answer is one JSON
// line {"id": <same>, "ok": true, ...result} or {"id": <same>, "ok": false, "error": <message>}.
// Nothing else is written to stdout (library logging goes to stderr).
//
// Commands: open, insert, delete, map_set, ops, state, set_awareness, awareness, disconnect,
// connect, destroy, list, exit. See the handlers below for their arguments.
import { createHash } from 'node:crypto'
import readline from 'node:readline'

import WebSocket from 'ws'
import * as Y from 'yjs'
import * as authProtocol from 'y-protocols/auth'
import { SocketIOProvider } from 'y-socket.io'
import { WebsocketProvider, messageAuth } from 'y-websocket'

// stdout is the answer channel: keep library chatter off it.
console.log = console.error
console.info = console.error

const PROTOCOLS = ['ws', 'sio', 'sio-polling']

/** @type {Map<string, {protocol: string, doc: Y.Doc, provider: any, events: any[], status: string}>} */
const clients = new Map()

const need = (args, name) => {
  if (args[name] === undefined) throw new Error(`missing argument '${name}'`)
  return args[name]
}

const getClient = (args) => {
  const name = need(args, 'client')
  const client = clients.get(name)
  if (!client) throw new Error(`unknown client '${name}'; open it first (known: ${[...clients.keys()].join(', ')})`)
  return client
}

const open = (args) => {
  const name = need(args, 'client')
  const protocol = need(args, 'protocol')
  const url = need(args, 'url')
  const room = need(args, 'doc')
  if (clients.has(name)) throw new Error(`client '${name}' already exists`)
  if (!PROTOCOLS.includes(protocol)) throw new Error(`unknown protocol '${protocol}'; use one of ${PROTOCOLS.join(', ')}`)
  const doc = new Y.Doc()
  // A chosen awareness/document client ID, e.g. the same client on two connections.
  if (args.clientID !== undefined) doc.clientID = args.clientID
  const events = []
  const record = (event) => events.push({ t: Date.now(), ...event })
  const connect = args.connect !== false
  let provider
  if (protocol === 'ws') {
    // y-websocket appends '/<room>' to the server url; our server serves it under /ws/.
    provider = new WebsocketProvider(`${url}/ws`, room, doc, {
      connect: false,
      WebSocketPolyfill: WebSocket,
      params: args.token ? { token: args.token } : {},
      // Same-process clients would otherwise sync through BroadcastChannel, bypassing the server.
      disableBc: true,
      maxBackoffTime: args.maxBackoffMs ?? 500
    })
    const original = provider.messageHandlers[messageAuth]
    provider.messageHandlers[messageAuth] = (encoder, decoder, prov, emitSynced, messageType) => {
      // Record the refusal, then let the client's own handler run on a copy of the decoder state.
      const pos = decoder.pos
      authProtocol.readAuthMessage(decoder, doc, (_doc, reason) => record({ type: 'permission-denied', reason }))
      decoder.pos = pos
      original(encoder, decoder, prov, emitSynced, messageType)
    }
    provider.on('connection-close', (event) => record({ type: 'connection-close', code: event?.code ?? null, reason: event?.reason ?? null }))
    provider.on('closed', (event) => record({ type: 'closed', code: event.code, reason: event.reason }))
    provider.on('connection-error', () => record({ type: 'connection-error' }))
  } else {
    const socketOptions = {
      transports: protocol === 'sio-polling' ? ['polling'] : ['websocket'],
      reconnectionDelay: args.reconnectionDelayMs ?? 100,
      reconnectionDelayMax: args.reconnectionDelayMaxMs ?? 500,
      // Node's engine.io-client keeps cookies only with this (browsers always do for their origin):
      // behind a load balancer's sticky cookie, every long-polling request must carry it.
      withCredentials: args.withCredentials ?? false
    }
    provider = new SocketIOProvider(url, room, doc, {
      autoConnect: false,
      disableBc: true,
      auth: args.token ? { token: args.token } : {}
    }, socketOptions)
    provider.on('connection-error', (err) => record({ type: 'connection-error', message: String(err?.message ?? err) }))
    provider.on('connection-close', (reason) => record({ type: 'connection-close', reason: String(reason) }))
  }
  const entry = { protocol, doc, provider, events, status: 'new', url, room }
  provider.on('status', ({ status }) => { entry.status = status; record({ type: 'status', status }) })
  provider.awareness.on('change', ({ removed }) => {
    if (removed.length) record({ type: 'awareness-removed', ids: removed })
  })
  provider.on('sync', (synced) => record({ type: 'sync', synced }))
  if (args.awareness !== undefined) provider.awareness.setLocalState(args.awareness)
  clients.set(name, entry)
  if (connect) provider.connect()
  return { clientID: doc.clientID }
}

const textOf = (client, args) => client.doc.getText(args.text ?? 'text')
const mapOf = (client, args) => client.doc.getMap(args.map ?? 'map')

const clampIndex = (text, index) => Math.max(0, Math.min(index, text.length))

const applyOp = (client, op) => {
  switch (op.op) {
    case 'insert': {
      const text = textOf(client, op)
      const content = op.repeat ? String(op.content).repeat(op.repeat) : String(op.content)
      text.insert(op.clamp ? clampIndex(text, op.index) : op.index, content)
      break
    }
    case 'delete': {
      const text = textOf(client, op)
      if (op.clamp) {
        const index = clampIndex(text, op.index)
        const length = Math.min(op.length, text.length - index)
        if (length > 0) text.delete(index, length)
      } else {
        text.delete(op.index, op.length)
      }
      break
    }
    case 'map_set':
      mapOf(client, op).set(need(op, 'key'), op.value)
      break
    default:
      throw new Error(`unknown op '${op.op}'; use insert, delete or map_set`)
  }
}

const digest = (s) => createHash('sha256').update(s).digest('hex')

const state = (args) => {
  const client = getClient(args)
  const text = textOf(client, args).toString()
  const result = {
    clientID: client.doc.clientID,
    status: client.status,
    synced: client.provider.synced,
    textLength: text.length,
    textSha256: digest(text),
    map: mapOf(client, args).toJSON(),
    events: client.events
  }
  if (!args.digestOnly) result.text = text
  return result
}

const awarenessStates = (args) => {
  const client = getClient(args)
  const states = []
  for (const [id, st] of client.provider.awareness.getStates()) states.push([id, st])
  return { self: client.doc.clientID, states }
}

const handlers = {
  open,
  insert: (args) => { applyOp(getClient(args), { ...args, op: 'insert' }); return {} },
  delete: (args) => { applyOp(getClient(args), { ...args, op: 'delete' }); return {} },
  map_set: (args) => { applyOp(getClient(args), { ...args, op: 'map_set' }); return {} },
  ops: (args) => {
    const client = getClient(args)
    for (const op of need(args, 'ops')) applyOp(client, { clamp: true, ...op })
    return {}
  },
  state,
  set_awareness: (args) => { getClient(args).provider.awareness.setLocalState(args.state ?? null); return {} },
  awareness: awarenessStates,
  disconnect: (args) => { getClient(args).provider.disconnect(); return {} },
  connect: (args) => { getClient(args).provider.connect(); return {} },
  destroy: (args) => {
    const client = getClient(args)
    client.provider.destroy()
    client.doc.destroy()
    clients.delete(args.client)
    return {}
  },
  list: () => ({ clients: [...clients.keys()] }),
  exit: () => { setImmediate(() => process.exit(0)); return {} }
}

const reply = (obj) => process.stdout.write(JSON.stringify(obj) + '\n')

const lines = readline.createInterface({ input: process.stdin, crlfDelay: Infinity })
lines.on('line', (line) => {
  if (!line.trim()) return
  let request
  try {
    request = JSON.parse(line)
  } catch (err) {
    reply({ id: null, ok: false, error: `request is not JSON: ${err.message}` })
    return
  }
  const handler = handlers[request.cmd]
  if (!handler) {
    reply({ id: request.id, ok: false, error: `unknown cmd '${request.cmd}'; use one of ${Object.keys(handlers).join(', ')}` })
    return
  }
  try {
    reply({ id: request.id, ok: true, ...handler(request) })
  } catch (err) {
    reply({ id: request.id, ok: false, error: String(err?.stack ?? err) })
  }
})
// The driver closing stdin means the test is over: leave without waiting for reconnect timers.
lines.on('close', () => process.exit(0))
reply({ id: 'ready', ok: true, pid: process.pid })
