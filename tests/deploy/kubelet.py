"""What Kubernetes would run for deploy/kubernetes/, as processes in network namespaces.

No cluster is needed: this module reads the manifests and the Dockerfile and gives each pod
what a kubelet (and, for the TFJob, Kubeflow's training-operator) would give it, then runs
its container as a real process in a network namespace of its own
(:mod:`tensorwire_testing.netns`). What is emulated, and how:

- **The command**: a container's ``command`` replaces the image's ENTRYPOINT and its
  ``args`` replace CMD, both read from the Dockerfile, with ``$(VAR)`` references expanded
  from the container's environment as Kubernetes does.
- **The environment**: the image's ENV, then the container's ``env`` in order: plain
  values, ``secretKeyRef`` (from the Secret the test made), ``fieldRef`` (the pod's name,
  namespace and IP). The operator's ``TF_CONFIG`` is built as the training-operator builds
  it: every replica at ``<job>-<type>-<index>.<namespace>.svc:<tfjob-port>``.
- **DNS**: every name the cluster DNS would answer (each Service's name, short and
  qualified, resolving to the pod it selects; a StatefulSet's pod names under its
  governing Service; the operator's per-replica Services) goes into each namespace's own
  ``/etc/hosts``, which ``ip netns exec`` mounts for the process. The manifests' names are
  used unchanged.
- **Volumes and image files**: paths under a ``volumeMount`` (the Secret, the
  dispatcher's persistent volume) and under the image's ``COPY`` destinations are mapped
  to folders of the test and of the checkout, and the programs ``tensorwire`` and
  ``python`` to those of the Python running the test (the image installs the same
  distributions).

Not emulated: the image build itself (no container runtime here; the Dockerfile is checked
statically), the pod's user (the test runs as root, which network namespaces need; the
non-root user is checked statically), probes and restarts.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from tensorwire_testing.child import ChildProcess
from tensorwire_testing.netns import VirtualHost

REPO = Path(__file__).resolve().parents[2]
MANIFESTS = REPO / "deploy" / "kubernetes"
DOCKERFILE = REPO / "Dockerfile"
NAMESPACE = "default"
#: The port TFJob replicas listen on when their container names none ("tfjob-port").
TFJOB_DEFAULT_PORT = 2222


# --------------------------------------------------------------------------- the image


@dataclass(frozen=True)
class Image:
    """What the Dockerfile's final stage sets for a container."""

    entrypoint: list[str]
    cmd: list[str]
    env: dict[str, str]
    user: str
    #: COPY destinations in the image -> the checkout's source folders.
    files: dict[str, Path]


def read_dockerfile(path: Path = DOCKERFILE) -> Image:
    """The final stage's ENTRYPOINT, CMD, ENV, USER and COPY (from the build context).

    Raises:
      ValueError: ENTRYPOINT or CMD not in exec (JSON) form, or no final stage.
    """
    stages: list[list[tuple[str, str]]] = []
    text = re.sub(r"\\\n", " ", path.read_text(encoding="utf-8"))
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stages.append([])
        elif stages:
            stages[-1].append((instruction, rest.strip()))
    if not stages:
        raise ValueError(f"{path} has no FROM")
    entrypoint: list[str] = []
    cmd: list[str] = []
    env: dict[str, str] = {}
    user = "root"
    files: dict[str, Path] = {}
    for instruction, rest in stages[-1]:
        if instruction in ("ENTRYPOINT", "CMD"):
            value = json.loads(rest)  # exec form: shell form would wrap it in /bin/sh -c
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"{instruction} must be a JSON list of strings: {rest}")
            if instruction == "ENTRYPOINT":
                entrypoint = value
            else:
                cmd = value
        elif instruction == "ENV":
            name, _, value = rest.partition("=")
            env[name.strip()] = value.strip()
        elif instruction == "USER":
            user = rest
        elif instruction == "COPY" and "--from=" not in rest:
            source, destination = shlex.split(rest)[-2:]
            files[destination.rstrip("/")] = REPO / source
    return Image(entrypoint, cmd, env, user, files)


# --------------------------------------------------------------------------- manifests


def load_manifests(folder: Path = MANIFESTS) -> list[dict[str, Any]]:
    """Every YAML document of every ``*.yaml`` in ``folder``, in file order."""
    documents: list[dict[str, Any]] = []
    for path in sorted(folder.glob("*.yaml")):
        documents.extend(d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d)
    return documents


@dataclass
class Pod:
    """One pod as the controllers would make it."""

    name: str
    #: The workload that made it: ("StatefulSet", "tensorwire-dispatcher") ...
    owner: tuple[str, str]
    spec: dict[str, Any]
    labels: dict[str, str]
    #: Variables a controller adds to every container (the operator's TF_CONFIG).
    extra_env: dict[str, str] = field(default_factory=dict)
    #: DNS names that resolve to this pod besides the Services selecting it.
    dns_names: list[str] = field(default_factory=list)

    @property
    def container(self) -> dict[str, Any]:
        (only,) = self.spec["containers"]  # the recipes run one container per pod
        return dict(only)


def _qualified(name: str) -> list[str]:
    return [
        name,
        f"{name}.{NAMESPACE}",
        f"{name}.{NAMESPACE}.svc",
        f"{name}.{NAMESPACE}.svc.cluster.local",
    ]


def pods_of(documents: Sequence[Mapping[str, Any]]) -> list[Pod]:
    """The pods the workloads in ``documents`` make at their declared replica counts."""
    pods: list[Pod] = []
    for doc in documents:
        kind, name = doc["kind"], doc["metadata"]["name"]
        if kind in ("StatefulSet", "Deployment", "Job"):
            template = doc["spec"]["template"]
            replicas = int(doc["spec"].get("replicas", 1)) if kind != "Job" else 1
            for index in range(replicas):
                pod = Pod(
                    f"{name}-{index}",
                    (kind, name),
                    template["spec"],
                    dict(template.get("metadata", {}).get("labels", {})),
                )
                if kind == "StatefulSet":  # stable names under the governing Service
                    pod.dns_names = _qualified(f"{pod.name}.{doc['spec']['serviceName']}")
                pods.append(pod)
        elif kind == "TFJob":
            pods.extend(_tfjob_pods(doc))
    return pods


def _tfjob_pods(doc: Mapping[str, Any]) -> Iterator[Pod]:
    """The training-operator's replicas: a Service each, and TF_CONFIG naming them all."""
    name = doc["metadata"]["name"]
    replica_specs = doc["spec"]["tfReplicaSpecs"]
    cluster: dict[str, list[str]] = {}
    for replica_type, replica in replica_specs.items():
        port = _tfjob_port(replica["template"]["spec"])
        job = replica_type.lower()
        cluster[job] = [
            f"{name}-{job}-{index}.{NAMESPACE}.svc:{port}"
            for index in range(int(replica.get("replicas", 1)))
        ]
    for replica_type, replica in replica_specs.items():
        job = replica_type.lower()
        for index in range(int(replica.get("replicas", 1))):
            tf_config = {
                "cluster": cluster,
                "task": {"type": job, "index": index},
                "environment": "cloud",
            }
            pod = Pod(
                f"{name}-{job}-{index}",
                ("TFJob", name),
                replica["template"]["spec"],
                {"training.kubeflow.org/replica-type": job},
                extra_env={"TF_CONFIG": json.dumps(tf_config)},
            )
            pod.dns_names = _qualified(pod.name)
            yield pod


def _tfjob_port(pod_spec: Mapping[str, Any]) -> int:
    for container in pod_spec["containers"]:
        if container["name"] == "tensorflow":
            for port in container.get("ports", []):
                if port.get("name") == "tfjob-port":
                    return int(port["containerPort"])
    return TFJOB_DEFAULT_PORT


def service_names(documents: Sequence[Mapping[str, Any]], pods: Sequence[Pod]) -> dict[str, Pod]:
    """DNS name -> the pod it resolves to: Services by selector, and the pods' own names.

    Raises:
      ValueError: a Service selects no pod or several (a hosts file holds one address).
    """
    names: dict[str, Pod] = {}
    for doc in documents:
        if doc["kind"] != "Service":
            continue
        selector = doc["spec"]["selector"]
        chosen = [p for p in pods if all(p.labels.get(k) == v for k, v in selector.items())]
        if len(chosen) != 1:
            raise ValueError(
                f"Service {doc['metadata']['name']} selects {[p.name for p in chosen]}; "
                "the test maps a Service to exactly one pod"
            )
        for name in _qualified(doc["metadata"]["name"]):
            names[name] = chosen[0]
    for pod in pods:
        for name in pod.dns_names:
            names[name] = pod
    return names


# --------------------------------------------------------------------------- a container


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)|\$\$")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: defined variables are replaced, ``$$`` is ``$``,
    and a reference to an undefined variable stays as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _REFERENCE.sub(replace, text)


@dataclass
class Kubelet:
    """Turns a pod into the process its container would be.

    Args:
      image: the Dockerfile's final stage.
      secrets: Secret name -> key -> value.
      volume_root: where the pods' volumes get folders.
    """

    image: Image
    secrets: Mapping[str, Mapping[str, str]]
    secret_dirs: Mapping[str, Path]
    volume_root: Path

    def environment(self, pod: Pod, host: VirtualHost) -> dict[str, str]:
        """The container's environment, as the kubelet builds it.

        Raises:
          KeyError: a reference to a Secret, key or field the test does not provide.
        """
        fields = {
            "metadata.name": pod.name,
            "metadata.namespace": NAMESPACE,
            "status.podIP": host.address,
        }
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "HOME": "/tmp"}
        env.update(self.image.env)
        env.update(pod.extra_env)
        for variable in pod.container.get("env", []):
            name = variable["name"]
            if "value" in variable:
                env[name] = expand(str(variable["value"]), env)
                continue
            source = variable["valueFrom"]
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                env[name] = self.secrets[ref["name"]][ref["key"]]
            elif "fieldRef" in source:
                env[name] = fields[source["fieldRef"]["fieldPath"]]
            else:
                raise KeyError(f"{name}: unsupported valueFrom {source}")
        return {name: self._host_path(value, pod) for name, value in env.items()}

    def argv(self, pod: Pod, env: Mapping[str, str]) -> list[str]:
        """The command line: ENTRYPOINT/CMD replaced by command/args, ``$(VAR)`` expanded,
        paths and programs mapped to this machine."""
        container = pod.container
        if "command" in container:  # command replaces ENTRYPOINT and drops CMD
            argv = [*container["command"], *container.get("args", [])]
        else:
            argv = [*self.image.entrypoint, *container.get("args", self.image.cmd)]
        argv = [self._host_path(expand(str(a), env), pod) for a in argv]
        programs = {
            "tensorwire": str(Path(sys.executable).parent / "tensorwire"),
            "python": sys.executable,
        }
        return [programs.get(argv[0], argv[0]), *argv[1:]]

    def volume_dir(self, pod: Pod, volume: str) -> Path:
        """The folder standing for ``volume`` of ``pod`` (a PersistentVolumeClaim's disk,
        kept across restarts of the pod as Kubernetes keeps it)."""
        path = self.volume_root / pod.name / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def _mounts(self, pod: Pod) -> dict[str, Path]:
        volumes = {v["name"]: v for v in pod.spec.get("volumes", [])}
        mounts: dict[str, Path] = {}
        for mount in pod.container.get("volumeMounts", []):
            volume = volumes.get(mount["name"], {})
            if "secret" in volume:
                mounts[mount["mountPath"]] = self.secret_dirs[volume["secret"]["secretName"]]
            else:  # a volumeClaimTemplate's claim, or an emptyDir
                mounts[mount["mountPath"]] = self.volume_dir(pod, mount["name"])
        return mounts

    def _host_path(self, value: str, pod: Pod) -> str:
        """``value`` (a path, or ``--flag=path``) with a mounted or image path mapped."""
        flag, sep, path = value.rpartition("=") if value.startswith("--") else ("", "", value)
        # Longest prefix first, so /etc/tensorwire/auth wins over a mount at /etc/tensorwire.
        places = sorted(
            [*self._mounts(pod).items(), *self.image.files.items()], key=lambda i: -len(i[0])
        )
        for prefix, folder in places:
            if path == prefix or path.startswith(prefix + "/"):
                return flag + sep + str(folder) + path[len(prefix) :]
        return value


# --------------------------------------------------------------------------- the process


class PodProcess(ChildProcess):
    """A pod's container as a process in its network namespace.

    Args:
      pod: the pod.
      host: its network namespace.
      argv: the container's command line (:meth:`Kubelet.argv`).
      env: its environment (:meth:`Kubelet.environment`).
    """

    def __init__(
        self, pod: Pod, host: VirtualHost, argv: Sequence[str], env: Mapping[str, str]
    ) -> None:
        super().__init__(env)
        self.pod = pod
        self.host = host
        self._argv = list(argv)

    @property
    def name(self) -> str:
        return f"pod {self.pod.name} ({self.host.address})"

    def command(self) -> list[str]:
        return self._argv

    def argv(self) -> list[str]:
        return self.host.wrap(self._argv)

    def is_ready_line(self, line: str) -> bool:
        # The ready lines of tensorwire server / dispatcher / worker.
        return line.startswith("tensorwire ") and " serving" in line

    def retry_after_exit(self, output: str) -> bool:
        return False  # a fresh namespace holds no predecessor's port
