"""Issue 19: the compose farm's image (docker/Dockerfile) is built for real, and the
console scripts run inside it.

No container registry is reachable here, so the Dockerfile's base is made from Debian's
archive with ``debootstrap --variant=minbase`` (cached in DISTLB_TEST_CACHE, by default
/var/cache/distlb-test/, keyed by the base's suite and the variant), imported with
``buildah from scratch`` + ``buildah add`` + ``buildah commit`` under the Dockerfile's
base name, in a container store of the test's own, and the Dockerfile is built on it
with ``buildah bud --isolation chroot``. Podman cannot run containers on this machine
(crun fails on rlimits and cgroups): ``buildah run`` (chroot) runs the scripts.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.system, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
SCRIPTS = [*sorted(PYPROJECT["project"]["scripts"]), "distlb-chaos"]
CACHE = Path(os.environ.get("DISTLB_TEST_CACHE", "/var/cache/distlb-test"))
ARCHIVE = "http://deb.debian.org/debian"
VARIANT = "minbase"
IMAGE = "localhost/distlb-test:latest"
# The host's CA bundle: this machine reaches PyPI through a TLS proxy only it trusts.
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
BUILD_TIMEOUT_S = 1200


def _base_name() -> str:
    """The Dockerfile's base image, e.g. ``debian:bookworm-slim``."""
    match = re.search(r"^FROM\s+(\S+)", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, "docker/Dockerfile has no FROM line"
    return match.group(1)


def _suite(base: str) -> str:
    match = re.fullmatch(r"debian:([a-z]+)(-slim)?", base)
    assert match, f"the image test makes Debian bases only, not {base}"
    return match.group(1)


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is missing: scripts/bootstrap.sh test installs it", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("the image test needs root (debootstrap, buildah's chroot)", pytrace=False)
    return path


def _run(command: list[str], timeout_s: float = BUILD_TIMEOUT_S) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def _base_tarball(suite: str) -> Path:
    """Debian ``suite`` (minbase) as a tarball, made once and kept in the cache."""
    tarball = CACHE / f"debootstrap-{suite}-{VARIANT}.tar"
    if tarball.exists():
        return tarball
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=CACHE))
    try:
        rootfs = work / "rootfs"
        _run([_tool("debootstrap"), f"--variant={VARIANT}", suite, str(rootfs), ARCHIVE])
        partial = work / "base.tar"
        _run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."])
        partial.rename(tarball)  # (whole, or not there: a killed run leaves no half)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


class Buildah:
    """buildah on a container store of the test's own (the cache keeps it)."""

    def __init__(self) -> None:
        self.tool = _tool("buildah")
        self.store = ["--root", str(CACHE / "containers"), "--runroot", "/run/distlb-test",
                      "--storage-driver", "overlay"]  # fmt: skip

    def __call__(self, *args: str, timeout_s: float = BUILD_TIMEOUT_S) -> str:
        return _run([self.tool, *self.store, *args], timeout_s)

    def has_image(self, name: str) -> bool:
        result = subprocess.run(
            [self.tool, *self.store, "inspect", "--type", "image", name],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        return result.returncode == 0

    def import_base(self, tarball: Path, name: str) -> None:
        """``tarball`` as the image ``name`` (a ``docker.io/library/`` name for bud)."""
        key = f"localhost/distlb-test-base:{tarball.stem}-{int(tarball.stat().st_mtime)}"
        if not self.has_image(key):
            container = self("from", "scratch").strip()
            try:
                self("add", container, str(tarball), "/")
                self("commit", "--quiet", container, key)
            finally:
                self("rm", container)
        self("tag", key, name)


def _lent_caches() -> list[str]:
    """What the build may take from this machine instead of the network, as buildah
    arguments: the .deb files apt already fetched here (hard links in a folder of the
    test's own, so that nothing the build's apt does reaches the host's cache), and
    pip's cache, which holds python-lzo's and gssapi's wheels as the bootstrap built them
    from the same locked sources (pip takes a cached wheel only for an sdist whose hash
    matches). What is built is the same; only downloads and two compiles are saved."""
    debs = CACHE / "apt-archives"
    (debs / "partial").mkdir(parents=True, exist_ok=True)
    for deb in Path("/var/cache/apt/archives").glob("*.deb"):
        target = debs / deb.name
        if not target.exists():
            try:
                target.hardlink_to(deb)
            except OSError:  # (another file system: a copy costs more than a download)
                break
    lent = ["-v", f"{debs}:/var/cache/apt/archives"]
    pip_cache = Path.home() / ".cache" / "pip"
    if pip_cache.is_dir():
        lent += ["--build-arg", "PIP_NO_CACHE_DIR=", "-v", f"{pip_cache}:/root/.cache/pip"]
    return lent


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Buildah]:
    base = _base_name()
    buildah = Buildah()
    tarball = _base_tarball(_suite(base))
    buildah.import_base(tarball, f"docker.io/library/{base}")
    pip_conf = tmp_path_factory.mktemp("pip") / "pip.conf"
    pip_conf.write_text("[global]\ncert = /etc/distlb-build-ca.crt\nprogress-bar = off\n")
    buildah(
        "bud", "--isolation", "chroot", "--pull-never", "--layers",
        "-v", f"{HOST_CA}:/etc/distlb-build-ca.crt:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro",
        *_lent_caches(),
        "-f", str(DOCKERFILE), "-t", IMAGE, str(ROOT),
    )  # fmt: skip
    yield buildah
    # Bound the store: the image the name pointed at before, and the steps only it
    # built on, go; the new image's steps stay, the cache of the next build. (An
    # ``rmi`` of the old image before the build would take its steps, the cache, too.)
    buildah("rmi", "--prune")


def test_the_image_runs_every_console_script(image: Buildah) -> None:
    container = image("from", "--pull-never", IMAGE).strip()
    try:
        for script in SCRIPTS:
            out = image("run", "--isolation", "chroot", container, "--", script, "--version")
            assert out.strip() == f"{script} {VERSION}"
        assert "Keepalived" in image(
            "run", "--isolation", "chroot", container, "--", "sh", "-c", "keepalived --version 2>&1"
        )
        config = image("inspect", "--type", "image", "--format", "{{.OCIv1.Config.Cmd}}", IMAGE)
        assert "distlb-server" in config
    finally:
        image("rm", container)


def test_the_image_holds_the_example_configs(image: Buildah) -> None:
    container = image("from", "--pull-never", IMAGE).strip()
    try:
        out = image(
            "run", "--isolation", "chroot", container, "--",
            "distlb-server", "--check-config", "/opt/distlb/share/distlb/configs/server.toml",
            # as the compose farm runs it: a container has no user namespaces for bwrap,
            # and --check-config builds the server, which checks the sandbox runs
            "--sandbox", "none",
        )  # fmt: skip
        assert "the config is valid" in out
    finally:
        image("rm", container)
