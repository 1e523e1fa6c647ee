"""deploy/kubernetes/: the manifests parse and say what the CLI accepts, and the pods they
describe, run as separate processes in separate network namespaces with the commands,
environment, Secret, volumes and DNS names Kubernetes would give them, do their job: a
reader in a namespace of its own reads a dataset through the dispatcher and two workers,
and the TFJob's chief trains the parameter-server example on its ps and workers.

How each part of a pod is emulated is written in kubelet.py. The network-namespace tests
need root (CI runs as root) and iproute2; they skip elsewhere with that reason.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from tensorwire.cli import build_parser
from tensorwire_testing.netns import VirtualNetwork, unavailable_reason

REPO = Path(__file__).resolve().parents[2]
MAKE_SECRET = REPO / "deploy" / "kubernetes" / "make-auth-secret.sh"
#: What the Secret tensorwire-auth holds (make-auth-secret.sh writes exactly these).
SECRET_KEYS = {"token", "server-name", "tls.crt", "tls.key", "ca.crt"}
#: Generous bounds for a loaded two-core machine; each is reached in seconds normally.
START_TIMEOUT = 60.0
JOB_TIMEOUT = 180.0


# --------------------------------------------------------------------------- static checks


def _pods(kubelet: ModuleType) -> list[Any]:
    return kubelet.pods_of(kubelet.load_manifests())


def test_the_manifests_hold_the_recipes_workloads(kubelet):
    kinds = {(d["kind"], d["metadata"]["name"]) for d in kubelet.load_manifests()}
    assert kinds == {
        ("Service", "tensorwire-dispatcher"),
        ("StatefulSet", "tensorwire-dispatcher"),
        ("Deployment", "tensorwire-data-worker"),
        ("Job", "tensorwire-data-reader"),
        ("TFJob", "tensorwire-train"),
    }


def test_every_tensorwire_container_gives_arguments_the_cli_accepts(kubelet, tmp_path):
    image = kubelet.read_dockerfile()
    node = kubelet.Kubelet(image, {}, {"tensorwire-auth": tmp_path / "secret"}, tmp_path)
    checked = 0
    for pod in _pods(kubelet):
        argv = node.argv(pod, {"POD_IP": "10.0.0.1"})
        if "command" in pod.container:  # a script of the image: it must be in it
            script = Path(argv[1])
            assert script.is_file(), f"{pod.name} runs {pod.container['command']}, not in the image"
            continue
        assert image.entrypoint == ["tensorwire"]
        args = build_parser().parse_args(argv[1:])  # SystemExit(2) on a flag it does not know
        assert callable(args.func), pod.name
        checked += 1
    assert checked == 6  # dispatcher, 2 data workers, ps, 2 training workers


def test_every_container_takes_the_token_and_tls_from_the_secret(kubelet):
    for pod in _pods(kubelet):
        env = {v["name"]: v for v in pod.container["env"]}
        for name in ("TENSORWIRE_CLUSTER_TOKEN", "TENSORWIRE_TLS_SERVER_NAME"):
            ref = env[name]["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "tensorwire-auth" and ref["key"] in SECRET_KEYS, pod.name
        assert env["TENSORWIRE_TLS_ROOT_CA"]["value"].startswith("/etc/tensorwire/auth/")
        secret_volumes = [v["secret"] for v in pod.spec["volumes"] if "secret" in v]
        assert secret_volumes == [{"secretName": "tensorwire-auth", "defaultMode": 0o440}]


def test_pods_run_as_the_images_non_root_user(kubelet):
    user = kubelet.read_dockerfile().user
    assert user == "10001:10001"
    for pod in _pods(kubelet):
        context = pod.spec["securityContext"]
        assert context["runAsNonRoot"] is True, pod.name
        assert f"{context['runAsUser']}:{context['runAsGroup']}" == user, pod.name
        assert context["fsGroup"] == 10001, pod.name  # the Secret's 0440 files are readable


def test_headless_services_name_the_port_the_container_listens_on(kubelet):
    # A headless Service does not proxy: clients dial the container's own port.
    documents = kubelet.load_manifests()
    pods = _pods(kubelet)
    for doc in documents:
        if doc["kind"] != "Service":
            continue
        assert doc["spec"]["clusterIP"] == "None"
        selector = doc["spec"]["selector"].items()
        (pod,) = [p for p in pods if all(p.labels.get(k) == v for k, v in selector)]
        ports = {p["name"]: p["containerPort"] for p in pod.container["ports"]}
        for port in doc["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"]


# --------------------------------------------------------------------------- pods in namespaces


class Deployment:
    """The recipe's pods, each in its own network namespace, started on demand."""

    def __init__(self, kubelet: ModuleType, network: VirtualNetwork, root: Path) -> None:
        secret_dir = root / "secret"
        subprocess.run(
            ["sh", str(MAKE_SECRET), str(secret_dir)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        secret = {p.name: p.read_text() for p in secret_dir.iterdir()}
        assert set(secret) == SECRET_KEYS
        documents = kubelet.load_manifests()
        self.pods = {pod.name: pod for pod in kubelet.pods_of(documents)}
        self.network = network
        self.hosts = {name: network.add_host(name) for name in self.pods}
        names = kubelet.service_names(documents, list(self.pods.values()))
        network.set_hosts({name: self.hosts[pod.name].address for name, pod in names.items()})
        self.node = kubelet.Kubelet(
            kubelet.read_dockerfile(),
            {"tensorwire-auth": secret},
            {"tensorwire-auth": secret_dir},
            root / "volumes",
        )
        self._kubelet = kubelet
        self.processes: list[Any] = []

    def launch(self, pod_name: str, without: tuple[str, ...] = ()) -> Any:
        """The pod's container, launched (not waited for); ``without`` leaves variables of
        its environment out."""
        pod, host = self.pods[pod_name], self.hosts[pod_name]
        env = self.node.environment(pod, host)
        for name in without:
            del env[name]
        process = self._kubelet.PodProcess(pod, host, self.node.argv(pod, env), env)
        self.processes.append(process)
        return process.launch()

    def start(self, pod_name: str) -> Any:
        """The pod's server, once it printed its ready line."""
        process = self.launch(pod_name)
        process.wait_for_line(process.is_ready_line, timeout=START_TIMEOUT)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.processes):
            process.kill()


@pytest.fixture(scope="module")
def deployment(kubelet, tmp_path_factory) -> Iterator[Deployment]:
    """The network and the data service (dispatcher, two workers), shared by the tests of
    this module; everything is removed at the end, whatever happened."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    with VirtualNetwork("twk") as network:
        made = Deployment(kubelet, network, tmp_path_factory.mktemp("k8s"))
        try:
            made.start("tensorwire-dispatcher-0")
            for index in range(2):
                made.start(f"tensorwire-data-worker-{index}")
            yield made
        finally:
            made.stop_all()


def test_a_reader_in_its_own_namespace_reads_through_the_dispatcher_and_both_workers(
    deployment,
):
    reader = deployment.launch("tensorwire-data-reader-0")
    assert reader.wait(timeout=JOB_TIMEOUT) == 0, reader.output
    assert "read 1000 elements through grpc://tensorwire-dispatcher:5050" in reader.output
    for index in range(2):  # each worker registered under its pod's own address
        worker = deployment.hosts[f"tensorwire-data-worker-{index}"]
        dispatcher = next(p for p in deployment.processes if "dispatcher-0" in p.pod.name)
        assert f"{worker.address}:5051" in dispatcher.output
    # The dispatcher journals into its persistent volume (--work_dir on the claim's mount).
    volume = deployment.node.volume_dir(deployment.pods["tensorwire-dispatcher-0"], "work-dir")
    assert any((volume / "dispatcher").iterdir())


def test_the_deployed_service_refuses_a_reader_without_the_secrets_token(deployment):
    reader = deployment.launch("tensorwire-data-reader-0", without=("TENSORWIRE_CLUSTER_TOKEN",))
    assert reader.wait(timeout=JOB_TIMEOUT) != 0
    assert "UnauthenticatedError" in reader.output


def test_the_tfjob_chief_trains_the_parameter_server_example_on_its_ps_and_workers(
    deployment,
):
    for name in ("tensorwire-train-ps-0", "tensorwire-train-worker-0", "tensorwire-train-worker-1"):
        server = deployment.start(name)
        # TF_CONFIG placed it; it binds every interface, which the token and TLS allow.
        job, index = name.rsplit("-", 2)[1:]
        assert f"/job:{job}/task:{index} serving" in server.output
    chief = deployment.launch("tensorwire-train-chief-0")
    assert chief.wait(timeout=JOB_TIMEOUT) == 0, chief.output
    assert "step   99" in chief.output
    first, last = map(float, re.search(r"loss (\S+) -> (\S+)", chief.output).groups())  # type: ignore[union-attr]
    assert last < first / 10  # it trained: the example's own convergence bar
