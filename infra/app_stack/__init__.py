"""The application stack: one Python model rendered to a compose file and deployed with `docker stack deploy`.

- `model`: settings per environment and the typed pieces of a swarm service.
- `services`: one module per service (item_socket, traefik, nginx, prometheus, node_exporter, cadvisor).
- `render`: the compose file and the config files, with content-hashed config names.
- `deploy`: pure command builders and the one deploy function (local engine or ssh://manager).
"""
