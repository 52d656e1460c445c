// Two headless Chromium pages on the board page (served by nginx through Traefik): page A adds an
// item and drags it with the mouse; page B must show the item at the position A dropped it.
// Usage: node board_drag.mjs <page url with #token=...&doc=...>
// Prints one JSON line: {ok, id, start, dropped, seenInB, syncMs} (or {ok: false, error}).
// Every wait has a deadline; the browser is always closed.
import { chromium } from 'playwright-core'

const url = process.argv[2]
if (!url) {
  console.error('usage: node board_drag.mjs <board url>')
  process.exit(2)
}
const TIMEOUT_MS = 30000
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'
]

const itemPosition = (page, id) => page.evaluate((itemId) => {
  const el = document.querySelector(`.item[data-id="${itemId}"]`)
  return el ? { left: el.style.left, top: el.style.top } : null
}, id)

const main = async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    timeout: TIMEOUT_MS
  })
  try {
    // Two contexts: two independent browser sessions, like two people.
    const pages = []
    for (let i = 0; i < 2; i++) {
      const context = await browser.newContext({ viewport: { width: 1000, height: 700 } })
      const page = await context.newPage()
      page.on('pageerror', (err) => console.error(`page ${i}: ${err}`))
      await page.goto(url, { timeout: TIMEOUT_MS })
      await page.waitForSelector('#board[data-synced="true"]', { timeout: TIMEOUT_MS })
      pages.push(page)
    }
    const [a, b] = pages

    await a.click('#add')
    const item = await a.waitForSelector('.item', { timeout: TIMEOUT_MS })
    const id = await item.getAttribute('data-id')
    await b.waitForSelector(`.item[data-id="${id}"]`, { timeout: TIMEOUT_MS })
    const start = await itemPosition(a, id)

    // A real drag: pointer down in the item, moves in steps (pointermove events), release.
    const box = await item.boundingBox()
    const from = { x: box.x + box.width / 2, y: box.y + box.height / 2 }
    const to = { x: Math.min(from.x + 180, 900), y: Math.min(from.y + 120, 600) }
    if (Math.abs(to.x - from.x) < 40) to.x = from.x - 180
    if (Math.abs(to.y - from.y) < 40) to.y = from.y - 120
    await a.mouse.move(from.x, from.y)
    await a.mouse.down()
    await a.mouse.move(to.x, to.y, { steps: 12 })
    await a.mouse.up()
    const droppedAt = Date.now()

    // Where A's shared map says the item is now: what B must converge to.
    const dropped = await a.evaluate((itemId) => window.spacedBoard.items.get(itemId), id)
    await b.waitForFunction(
      ([itemId, x, y]) => {
        const el = document.querySelector(`.item[data-id="${itemId}"]`)
        return el && el.style.left === `${x}px` && el.style.top === `${y}px`
      },
      [id, dropped.x, dropped.y],
      { timeout: TIMEOUT_MS }
    )
    const syncMs = Date.now() - droppedAt
    const seenInB = await itemPosition(b, id)
    const mapInB = await b.evaluate((itemId) => window.spacedBoard.items.get(itemId), id)
    console.log(JSON.stringify({ ok: true, id, start, dropped, seenInB, mapInB, syncMs }))
  } finally {
    await browser.close()
  }
}

const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ ok: false, error: 'watchdog: the drag test took longer than 120 s' }))
  process.exit(1)
}, 120000)
main()
  .then(() => { clearTimeout(watchdog) })
  .catch((err) => {
    clearTimeout(watchdog)
    console.log(JSON.stringify({ ok: false, error: String(err?.stack ?? err) }))
    process.exitCode = 1
  })
