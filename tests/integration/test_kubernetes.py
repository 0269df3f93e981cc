"""deploy/kubernetes/ (issue 31): every manifest passes the Kubernetes schema of the
version the docs name (kubernetes-validate, strict: no field the API does not know),
the kustomization builds (kubectl's kustomize) into resources that pass it too, and the
configs in its ConfigMaps are ones the daemons accept (``--check-config``; the
balancer's secrets made here, as the Secret would hold them)."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.support.servers import role_command

pytestmark = pytest.mark.integration

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
VERSION = "1.33.0"
"""The Kubernetes version docs/operations.md names ("Kubernetes")."""
MANIFESTS = sorted(p.name for p in DEPLOY.glob("*.yaml") if p.name != "kustomization.yaml")


def _documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_passes_the_schema(name: str) -> None:
    documents = _documents((DEPLOY / name).read_text())
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, VERSION, strict=True)


def test_the_kustomization_builds_into_valid_resources() -> None:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed (scripts/bootstrap.sh test installs kubernetes-client)"
    built = subprocess.run([kubectl, "kustomize", str(DEPLOY)], capture_output=True, text=True,
                           timeout=60, check=False)  # fmt: skip
    assert built.returncode == 0, built.stderr
    documents = _documents(built.stdout)
    kinds = Counter(d["kind"] for d in documents)
    assert kinds == {"Namespace": 1, "ConfigMap": 2, "Deployment": 3, "Service": 3,
                     "NetworkPolicy": 1}, kinds  # fmt: skip
    for document in documents:
        assert document["metadata"].get("namespace", "distlb") == "distlb"
        kubernetes_validate.validate(document, VERSION, strict=True)
    # The Deployments name the ConfigMaps as kustomize made them (with their hash).
    made = {d["metadata"]["name"] for d in documents if d["kind"] == "ConfigMap"}
    used = {
        volume["configMap"]["name"]
        for d in documents if d["kind"] == "Deployment"
        for volume in d["spec"]["template"]["spec"].get("volumes", []) if "configMap" in volume
    }  # fmt: skip
    assert used == made


def test_the_configmaps_configs_are_accepted_by_the_daemons(tmp_path: Path) -> None:
    server = subprocess.run(
        [*role_command("server"), "--check-config", str(DEPLOY / "config" / "server.toml")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert server.returncode == 0, server.stderr
    text = (DEPLOY / "config" / "balancer.toml").read_text()
    for name in ("cache-secret", "redis-password"):
        secret = tmp_path / name
        secret.write_text("0123456789abcdef" * 4 + "\n")
        secret.chmod(0o400)
        text = text.replace(f"/run/secrets/distlb/{name}", str(secret))
    config = tmp_path / "balancer.toml"
    config.write_text(text)
    balancer = subprocess.run([*role_command("balancer"), "--check-config", str(config)],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert balancer.returncode == 0, balancer.stderr
