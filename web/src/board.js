// The shared board: a Y.Map of item id -> {x, y, color, label}, synced through item_socket with the
// y-socket.io provider over the page's own origin (Traefik routes /socket.io/ to item_socket).
import * as Y from 'yjs'
import { SocketIOProvider } from 'y-socket.io'

const COLORS = ['#ffd166', '#06d6a0', '#8ecae6', '#f4a261', '#cdb4db', '#e9c46a']
const params = new URLSearchParams(location.hash.slice(1))
const token = params.get('token')
const docName = params.get('doc') || 'board'

const doc = new Y.Doc()
const items = doc.getMap('items')
const provider = new SocketIOProvider(location.origin, docName, doc, {
  auth: token ? { token } : {},
  // Other tabs must sync through the server too, so what one browser sees is what the server has.
  disableBc: true
}, {
  // item_socket's rolling update is a few seconds of outage (one replica, stop-first): come back
  // soon after it instead of socket.io-client's defaults (up to 5 s between tries, 20 s connect timeout).
  reconnectionDelayMax: 2000,
  timeout: 5000
})

const myColor = COLORS[doc.clientID % COLORS.length]
provider.awareness.setLocalStateField('user', { name: `user-${doc.clientID % 1000}`, color: myColor })

const board = document.getElementById('board')
const statusEl = document.getElementById('status')
const peersEl = document.getElementById('peers')
const messageEl = document.getElementById('message')
const hintEl = document.getElementById('hint')
const addButton = document.getElementById('add')

// What to do about a refused or failed connection, as text and <code> parts (never innerHTML).
function refusalMessage (reason, refused) {
  if (reason === 'Unauthorized' && !token) {
    return ['This board needs an access token. Open the URL ', code('make up'), ' printed (it ends with ',
      code('#token=…'), '), or run ', code('spaced token local'), ' and add ', code('#token=<the token>'),
      ' to this page\'s address, then reload.']
  }
  if (reason === 'Unauthorized') {
    return ['The access token was refused: it is invalid, has expired or does not cover the document ', code(docName),
      '. Run ', code(`spaced token local --doc '${docName}'`), ' and put the new token after ',
      code('#token='), ' in this page\'s address, then reload.']
  }
  return [`Cannot connect to the board server (${reason})${refused ? '. Reload to try again.' : '; retrying…'}`]
}

function code (text) {
  const el = document.createElement('code')
  el.textContent = text
  return el
}

function showError (parts) {
  messageEl.replaceChildren(...parts)
  messageEl.hidden = false
}

function clearError () {
  messageEl.replaceChildren()
  messageEl.hidden = true
}

function setStatus (status) {
  statusEl.textContent = status
  statusEl.dataset.status = status
}

// Editing only while connected: an edit made offline would reach no one, and never will if the
// connection is refused.
let connected = false
function setConnected (value) {
  connected = value
  addButton.disabled = !value
  addButton.title = value ? 'Add an item to the board' : 'Not connected to the board'
  board.dataset.editable = String(value)
  if (!value && dragging) endDrag()
  renderHint()
}

function renderHint () {
  hintEl.hidden = !(connected && board.dataset.synced === 'true' && items.size === 0)
}

provider.on('status', ({ status }) => {
  // A refused connection stays refused (socket.io does not retry it): keep saying so.
  if (statusEl.dataset.status !== 'refused' || status === 'connected') setStatus(status)
  if (status === 'connected') clearError()
  setConnected(status === 'connected')
})
provider.on('connection-error', (err) => {
  const reason = err && err.message ? err.message : String(err)
  // socket.io retries transport errors (the socket stays active); a refusal by the server is final.
  const refused = !provider.socket.active
  setStatus(refused ? 'refused' : 'disconnected')
  showError(refusalMessage(reason, refused))
  setConnected(false)
})
provider.on('sync', (synced) => {
  board.dataset.synced = String(synced)
  renderHint()
})

function renderPeers () {
  peersEl.replaceChildren()
  for (const [clientID, state] of provider.awareness.getStates()) {
    if (!state.user) continue
    const tag = document.createElement('span')
    tag.textContent = clientID === doc.clientID ? `${state.user.name} (you)` : state.user.name
    tag.style.background = state.user.color
    tag.dataset.clientId = String(clientID)
    peersEl.append(tag)
  }
}
provider.awareness.on('change', renderPeers)
renderPeers()

// One element per item, kept in step with the map; the element being dragged is left alone.
const elements = new Map()
let dragging = null

function renderItems () {
  for (const [id, el] of elements) {
    if (!items.has(id)) { el.remove(); elements.delete(id) }
  }
  for (const [id, item] of items) {
    let el = elements.get(id)
    if (!el) {
      el = document.createElement('div')
      el.className = 'item'
      el.dataset.id = id
      el.addEventListener('pointerdown', startDrag)
      board.append(el)
      elements.set(id, el)
    }
    if (dragging && dragging.id === id) continue
    el.style.left = `${item.x}px`
    el.style.top = `${item.y}px`
    el.style.background = item.color
    el.textContent = item.label
  }
}
items.observe(() => { renderItems(); renderHint() })

function startDrag (event) {
  if (!connected) return
  const el = event.currentTarget
  const id = el.dataset.id
  const item = items.get(id)
  if (!item) return
  el.setPointerCapture(event.pointerId)
  el.classList.add('dragging')
  dragging = { id, el, dx: event.clientX - item.x, dy: event.clientY - item.y, frame: 0 }
  el.addEventListener('pointermove', moveDrag)
  el.addEventListener('pointerup', endDrag, { once: true })
  el.addEventListener('pointercancel', endDrag, { once: true })
}

function moveDrag (event) {
  if (!dragging) return
  const x = Math.max(0, Math.round(event.clientX - dragging.dx))
  const y = Math.max(0, Math.round(event.clientY - dragging.dy))
  dragging.el.style.left = `${x}px`
  dragging.el.style.top = `${y}px`
  dragging.next = { x, y }
  // At most one update per animation frame: smooth for peers, light on the wire.
  if (!dragging.frame) {
    dragging.frame = requestAnimationFrame(() => {
      if (!dragging) return
      dragging.frame = 0
      const item = items.get(dragging.id)
      if (item && dragging.next) items.set(dragging.id, { ...item, ...dragging.next })
    })
  }
}

function endDrag () {
  if (!dragging) return
  const { id, el, next, frame } = dragging
  if (frame) cancelAnimationFrame(frame)
  el.removeEventListener('pointermove', moveDrag)
  el.classList.remove('dragging')
  dragging = null
  const item = items.get(id)
  if (item && next) items.set(id, { ...item, ...next })
  renderItems()
}

addButton.addEventListener('click', () => {
  if (!connected) return
  const id = `${doc.clientID}-${Date.now().toString(36)}`
  items.set(id, {
    x: 20 + Math.round(Math.random() * Math.max(0, board.clientWidth - 150)),
    y: 20 + Math.round(Math.random() * Math.max(0, board.clientHeight - 110)),
    color: myColor,
    label: `item ${items.size + 1}`
  })
})

renderItems()
renderHint()
// For tests and the console: the live objects of this page.
window.spacedBoard = { doc, items, provider }
