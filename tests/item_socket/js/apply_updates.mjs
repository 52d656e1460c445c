// Applies Yjs updates with npm Yjs in several orders and says whether each order rebuilds the
// reference document. Input (stdin, JSON): {"reference": <base64 update>, "parts": [<base64>...]}.
// Output (stdout, JSON): {"<order>": {"same": bool, "pending": bool}} for in, reversed, shuffled.
import fs from 'node:fs'
import * as Y from 'yjs'

const { reference, parts } = JSON.parse(fs.readFileSync(0, 'utf8'))
const decode = (text) => new Uint8Array(Buffer.from(text, 'base64'))
const contents = (doc) => JSON.stringify([
  doc.getText('text').toString(),
  doc.getMap('map').toJSON(),
  doc.getArray('array').toJSON(),
  doc.getXmlFragment('xml').toString()
])
const expected = new Y.Doc()
Y.applyUpdate(expected, decode(reference))
// A fixed shuffle (seeded LCG), so a failure can be replayed.
let seed = 7
const random = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 }
const orders = {
  in: parts,
  reversed: [...parts].reverse(),
  shuffled: parts.map((p) => [random(), p]).sort((a, b) => a[0] - b[0]).map(([, p]) => p)
}
const result = {}
for (const [name, order] of Object.entries(orders)) {
  const doc = new Y.Doc()
  for (const part of order) Y.applyUpdate(doc, decode(part))
  result[name] = { same: contents(doc) === contents(expected), pending: doc.store.pendingStructs !== null }
}
process.stdout.write(JSON.stringify(result) + '\n')
