// y-socket.io's own Node server (YSocketIO on a socket.io server) for benchmarks/run.py, in memory: run.py
// clears YPERSISTENCE so YSocketIO does not open a LevelDB store.
// Usage: node ysocketio_server.mjs <port>. Prints {"listening": <port>} on stdout once it accepts.
import http from 'node:http'

import { Server } from 'socket.io'
import { YSocketIO } from 'y-socket.io/dist/server'

const port = Number(process.argv[2])
if (!Number.isInteger(port) || port <= 0) {
  console.error('usage: node ysocketio_server.mjs <port>  (port: a positive integer)')
  process.exit(2)
}
const httpServer = http.createServer((request, response) => {
  response.writeHead(200, { 'Content-Type': 'text/plain' })
  response.end('ok')
})
const io = new Server(httpServer)
new YSocketIO(io, {}).initialize()
const stop = () => { io.close(); httpServer.close(); process.exit(0) }
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
httpServer.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ listening: port }) + '\n')
})
