// Headless Chromium on the board page, driven by JSON lines on stdin (one answer line per request):
//   {"id": 1, "cmd": "open", "url": "..."}                  -> {"id": 1, "ok": true, "page": 0}
//   {"id": 2, "cmd": "wait", "page": 0, "expr": "...", "timeoutMs": 20000}   (a JS expression in the page)
//   {"id": 3, "cmd": "state", "page": 0}                    -> {"id": 3, "ok": true, "state": {...}}
//   {"id": 4, "cmd": "click", "page": 0, "selector": "#add"}  (a real mouse click, also on a disabled button)
//   {"id": 5, "cmd": "screenshot", "page": 0, "path": "/tmp/board.png"}
// A failed request answers {"id", "ok": false, "error"}. Every wait has a deadline; the browser is
// closed when stdin ends.
import { createInterface } from 'node:readline'
import { chromium } from 'playwright-core'

const TIMEOUT_MS = 30000
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--no-first-run'
]

// What a person sees of the page, read in the page.
const pageState = () => {
  const visible = (el) => Boolean(el) && !el.hidden && el.getClientRects().length > 0
  const message = document.getElementById('message')
  const hint = document.getElementById('hint')
  const add = document.getElementById('add')
  const status = document.getElementById('status')
  const style = getComputedStyle(message)
  return {
    status: status.dataset.status,
    statusText: status.textContent,
    message: {
      visible: visible(message),
      text: message.textContent,
      role: message.getAttribute('role'),
      className: message.className,
      color: style.color,
      background: style.backgroundColor,
      codes: [...message.querySelectorAll('code')].map((el) => el.textContent)
    },
    addDisabled: add.disabled,
    hint: { visible: visible(hint), text: hint.textContent },
    editable: document.getElementById('board').dataset.editable,
    synced: document.getElementById('board').dataset.synced ?? null,
    items: document.querySelectorAll('#board .item').length,
    itemsInDoc: window.spacedBoard ? window.spacedBoard.items.size : null,
    description: document.querySelector('meta[name="description"]')?.content ?? null
  }
}

const main = async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: CHROMIUM_ARGS,
    timeout: TIMEOUT_MS
  })
  const pages = []
  const handle = async (request) => {
    switch (request.cmd) {
      case 'open': {
        const context = await browser.newContext({ viewport: { width: 1000, height: 700 } })
        const page = await context.newPage()
        page.on('pageerror', (err) => console.error(`page ${pages.length}: ${err}`))
        await page.goto(request.url, { timeout: TIMEOUT_MS })
        pages.push(page)
        return { page: pages.length - 1 }
      }
      case 'wait':
        await pages[request.page].waitForFunction(request.expr, null, { timeout: request.timeoutMs ?? TIMEOUT_MS })
        return {}
      case 'state':
        return { state: await pages[request.page].evaluate(pageState) }
      case 'click':
        // force: no waiting for the button to be enabled; a disabled button must ignore the click.
        await pages[request.page].click(request.selector, { force: true, timeout: TIMEOUT_MS })
        return {}
      case 'screenshot':
        await pages[request.page].screenshot({ path: request.path, timeout: TIMEOUT_MS })
        return {}
      default:
        throw new Error(`unknown command ${request.cmd}`)
    }
  }
  const reply = (answer) => process.stdout.write(JSON.stringify(answer) + '\n')
  reply({ id: 'ready', ok: true })
  const lines = createInterface({ input: process.stdin })
  try {
    for await (const line of lines) {
      if (!line.trim()) continue
      const request = JSON.parse(line)
      try {
        reply({ id: request.id, ok: true, ...(await handle(request)) })
      } catch (err) {
        reply({ id: request.id, ok: false, error: String(err?.stack ?? err) })
      }
    }
  } finally {
    await browser.close()
  }
}

main().catch((err) => {
  console.error(String(err?.stack ?? err))
  process.exitCode = 1
})
