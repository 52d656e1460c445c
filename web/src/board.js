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

function setStatus (status) {
  statusEl.textContent = status
  statusEl.dataset.status = status
}
provider.on('status', ({ status }) => setStatus(status))
provider.on('connection-error', (err) => setStatus(`error: ${err && err.message ? err.message : err}`))
provider.on('sync', (synced) => { board.dataset.synced = String(synced) })

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
items.observe(renderItems)

function startDrag (event) {
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

document.getElementById('add').addEventListener('click', () => {
  const id = `${doc.clientID}-${Date.now().toString(36)}`
  items.set(id, {
    x: 20 + Math.round(Math.random() * Math.max(0, board.clientWidth - 150)),
    y: 20 + Math.round(Math.random() * Math.max(0, board.clientHeight - 110)),
    color: myColor,
    label: `item ${items.size + 1}`
  })
})

renderItems()
// For tests and the console: the live objects of this page.
window.spacedBoard = { doc, items, provider }
