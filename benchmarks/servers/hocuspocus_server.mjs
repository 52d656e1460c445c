// Hocuspocus reference server for benchmarks/run.py: in memory (no extensions), no auth hooks.
// Usage: node hocuspocus_server.mjs <port>. Prints {"listening": <port>} on stdout once it accepts.
import { Server } from '@hocuspocus/server'

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node hocuspocus_server.mjs <port>  (port: a positive integer)')
  process.exit(2)
}
const server = new Server({ port, address: '127.0.0.1', quiet: true, stopOnSignals: true })
await server.listen()
process.stdout.write(JSON.stringify({ listening: port }) + '\n')
