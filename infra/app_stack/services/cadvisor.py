"""cAdvisor: per-container CPU and memory (against the swarm limits), one task on every node.

It has no offline build: where its image cannot be pulled, leave it out with
`include_cadvisor=False` (`SPACED_NO_CADVISOR=1`, `spaced up local --no-cadvisor`).
"""

from __future__ import annotations

from infra.app_stack.model import (
    CADVISOR_IMAGE,
    Healthcheck,
    Resources,
    Service,
    ServiceBundle,
    StackSettings,
    UpdatePolicy,
    VolumeMount,
)
from infra.app_stack.services.common import MONITORING_NETWORK
from infra.app_stack.services.prometheus import CADVISOR_PORT


def cadvisor(settings: StackSettings) -> ServiceBundle:
    """Global cAdvisor watching Docker containers only, every 30 s (it is CPU-hungry otherwise)."""
    service = Service(
        name="cadvisor",
        image=settings.images.get("cadvisor", CADVISOR_IMAGE),
        mode="global",
        command=["--docker_only=true", "--housekeeping_interval=30s", f"--port={CADVISOR_PORT}"],
        # The upstream image is Alpine-based and ships wget (its own HEALTHCHECK uses it).
        healthcheck=Healthcheck(
            test=[
                "CMD",
                "wget",
                "--quiet",
                "--tries=1",
                "--spider",
                f"http://127.0.0.1:{CADVISOR_PORT}/healthz",
            ]
        ),
        resources=Resources(
            cpus_limit=0.3, memory_limit="256M", cpus_reservation=0.05, memory_reservation="64M"
        ),
        placement=["node.platform.os == linux"],
        networks=[MONITORING_NETWORK],
        update=UpdatePolicy(order="start-first"),
        volumes=[
            VolumeMount(source="/", target="/rootfs", read_only=True, bind=True),
            VolumeMount(source="/var/run", target="/var/run", read_only=True, bind=True),
            VolumeMount(source="/sys", target="/sys", read_only=True, bind=True),
            VolumeMount(source="/var/lib/docker", target="/var/lib/docker", read_only=True, bind=True),
            VolumeMount(source="/dev/disk", target="/dev/disk", read_only=True, bind=True),
        ],
    )
    return ServiceBundle(service=service)
