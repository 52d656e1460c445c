"""node-exporter: host CPU, memory and disk metrics, one task on every node.

With the scale-out it also exports the backup service's figures (textfile collector): the
`backup_metrics` volume, read-only. Named volumes are node-local, so only the exporter on the
PostgreSQL node (`data=true`) finds the file; on every other node the directory stays empty.
"""

from __future__ import annotations

from infra.app_stack.model import Resources, Service, ServiceBundle, StackSettings, UpdatePolicy, VolumeMount
from infra.app_stack.services.backup import METRICS_VOLUME
from infra.app_stack.services.common import MONITORING_NETWORK, bash_http_probe
from infra.app_stack.services.prometheus import NODE_EXPORTER_PORT

TEXTFILE_DIR = "/textfile"


def node_exporter(settings: StackSettings) -> ServiceBundle:
    """Global node-exporter reading the host's /proc, /sys and root filesystem read-only."""
    textfile = settings.item_socket_scale_out
    service = Service(
        name="node_exporter",
        image=settings.images["node_exporter"],
        mode="global",
        command=[
            "--path.procfs=/host/proc",
            "--path.sysfs=/host/sys",
            "--path.rootfs=/rootfs",
            "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run|var/lib/docker/.+)($|/)",
            f"--web.listen-address=:{NODE_EXPORTER_PORT}",
            *([f"--collector.textfile.directory={TEXTFILE_DIR}"] if textfile else []),
        ],
        healthcheck=bash_http_probe(NODE_EXPORTER_PORT, "/"),
        resources=Resources(
            cpus_limit=0.2, memory_limit="64M", cpus_reservation=0.02, memory_reservation="16M"
        ),
        placement=["node.platform.os == linux"],
        networks=[MONITORING_NETWORK],
        update=UpdatePolicy(order="start-first"),
        volumes=[
            VolumeMount(source="/proc", target="/host/proc", read_only=True, bind=True),
            VolumeMount(source="/sys", target="/host/sys", read_only=True, bind=True),
            VolumeMount(source="/", target="/rootfs", read_only=True, bind=True),
            # Not in the image, so Docker copies nothing into (and changes no owner of) the volume
            # the backup service writes as the postgres user.
            *([VolumeMount(source=METRICS_VOLUME, target=TEXTFILE_DIR, read_only=True)] if textfile else []),
        ],
    )
    return ServiceBundle(service=service, volumes=[METRICS_VOLUME] if textfile else [])
