"""item_socket: the real-time Yjs document service of Spaced (Socket.IO + y-websocket, one port)."""
