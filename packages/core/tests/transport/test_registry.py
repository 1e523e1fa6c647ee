"""The transport registry: discovery through entry points, errors, degraded plugins."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tensorwire as tw
from tensorwire._install import install_command
from tensorwire.transport import TransportRegistry, hookimpl
from tensorwire.transport.inproc import InprocTransport

TOY = Path(__file__).parent.parent / "data" / "toy-transport"


def run_python(code: str, path: list[str] | None = None, env_extra: dict | None = None) -> str:
    import os

    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join(path + [env.get("PYTHONPATH", "")])
    env.update(env_extra or {})
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_inproc_is_always_there():
    assert "inproc" in TransportRegistry().protocols()


def test_inproc_present_with_autoload_disabled():
    registry = TransportRegistry(autoload=False)
    assert registry.protocols() == ["inproc"]


def test_inproc_comes_from_the_core_entry_point():
    registry = TransportRegistry()
    registry.load()
    info = registry.infos["inproc"]
    assert info.distribution == "tensorwire"
    assert info.plugin == "inproc"


def test_unknown_protocol_lists_installed_ones():
    with pytest.raises(tw.errors.NotFoundError) as info:
        TransportRegistry().get("carrier-pigeon")
    assert "'carrier-pigeon'" in str(info.value)
    assert "'inproc'" in str(info.value)


def test_our_protocol_not_installed_names_the_distribution():
    registry = TransportRegistry(autoload=False)
    with pytest.raises(tw.errors.NotFoundError) as info:
        registry.get("grpc")
    assert "tensorwire-grpc" in str(info.value)
    assert str(info.value).endswith(install_command("tensorwire-grpc"))
    with pytest.raises(tw.errors.NotFoundError) as info:
        registry.get("grpc+verbs")
    assert str(info.value).endswith(install_command("tensorwire-rdma"))


def test_install_command_names_the_checkout_or_the_pinned_version():
    # A checkout's core (editable or not) points at the sibling folder, which exists; any
    # other installation names the distribution at the core's own version.
    command = install_command("tensorwire-grpc")
    # This test's own checkout: the core under test was installed from it (into a virtualenv
    # by nox, so not found from tw.__file__).
    packages = Path(__file__).resolve().parents[3]
    if command.startswith("pip install /"):
        assert command == f"pip install {packages / 'transport-grpc'}"
        assert (packages / "transport-grpc" / "pyproject.toml").is_file()
    else:
        assert command == f"pip install tensorwire-grpc=={tw.__version__.split('+')[0]}"


def test_protocol_must_be_a_string():
    with pytest.raises(TypeError, match="protocol must be a string"):
        TransportRegistry().get(7)


def test_transport_instances_are_cached():
    registry = TransportRegistry()
    assert registry.get("inproc") is registry.get("inproc")


def test_register_plugin_object_directly():
    class Plugin:
        @hookimpl
        def tensorwire_register_transports(self, registry):
            registry.register("mine", InprocTransport, distribution="my-dist")

    registry = TransportRegistry(autoload=False)
    registry.register_plugin(Plugin(), "mine")
    assert "mine" in registry.protocols()
    assert registry.infos["mine"].distribution == "my-dist"
    assert isinstance(registry.get("mine"), InprocTransport)


def test_invalid_registrations_are_refused():
    registry = TransportRegistry(autoload=False)
    with pytest.raises(ValueError, match="invalid protocol name"):
        registry.register("a://b", InprocTransport)
    with pytest.raises(TypeError, match="not callable"):
        registry.register("x", 42)


def test_factories_can_be_swapped_by_tests(monkeypatch):
    registry = TransportRegistry()
    registry.load()
    sentinel = InprocTransport()
    monkeypatch.setitem(registry.factories, "swapped", lambda: sentinel)
    assert registry.get("swapped") is sentinel


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory) -> Path:
    """The toy distribution pip-installed into a folder of its own."""
    target = tmp_path_factory.mktemp("toy-site")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(target),
            str(TOY),
        ],
        check=True,
        timeout=300,
        capture_output=True,
    )
    return target


def test_user_transport_from_installed_distribution_is_found_and_used(toy_site):
    out = run_python(
        """
        import json
        import tensorwire as tw
        from tensorwire.transport import Service, TransportOptions, get_transport, default_registry

        svc = Service("Echo")
        svc.add("Echo", lambda frames, ctx: frames)
        transport = get_transport("toy")
        listener = transport.serve("localhost:0", [svc], TransportOptions())
        listener.start()
        channel = transport.connect(listener.address, TransportOptions())
        reply = channel.call("Echo", "Echo", [b"ping"], timeout=10)
        from toy_transport.plugin import ToyChannel
        info = tw.info()["protocols"]["toy"]
        print(json.dumps({"reply": bytes(reply[0]).decode(), "calls": ToyChannel.calls,
                          "dist": info["distribution"], "version": info["version"]}))
        listener.stop()
        """,
        path=[str(toy_site)],
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result == {"reply": "ping", "calls": 1, "dist": "toy-transport", "version": "1.2.3"}


def test_blocked_plugin_is_not_loaded(toy_site):
    out = run_python(
        """
        from tensorwire.transport import default_registry
        print(sorted(default_registry.protocols()))
        """,
        path=[str(toy_site)],
        env_extra={"TENSORWIRE_BLOCKED_PLUGINS": "toy"},
    )
    assert "toy" not in out


def test_autoload_disabled_leaves_only_inproc(toy_site):
    out = run_python(
        """
        from tensorwire.transport import default_registry
        print(default_registry.protocols())
        """,
        path=[str(toy_site)],
        env_extra={"TENSORWIRE_DISABLE_PLUGIN_AUTOLOAD": "1"},
    )
    assert out.strip() == "['inproc']"


def test_plugin_that_fails_to_import_degrades_visibly(tmp_path):
    dist = tmp_path / "broken_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[tensorwire.transports]\nbroken = broken_plugin_module\n"
    )
    (tmp_path / "broken_plugin_module.py").write_text("import a_module_that_is_not_there\n")
    out = run_python(
        """
        import json
        import tensorwire as tw
        from tensorwire.transport import get_transport
        get_transport("inproc")  # other protocols keep working
        print(json.dumps(tw.info()["plugin_errors"]))
        """,
        path=[str(tmp_path)],
    )
    errors = json.loads(out.strip().splitlines()[-1])
    assert errors == [
        {
            "plugin": "broken",
            "distribution": "broken-plugin",
            "reason": "ImportError: No module named 'a_module_that_is_not_there'",
        }
    ]


def test_plugin_that_raises_something_else_propagates(tmp_path):
    dist = tmp_path / "buggy_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: buggy-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[tensorwire.transports]\nbuggy = buggy_module\n")
    (tmp_path / "buggy_module.py").write_text("raise RuntimeError('bug in plugin')\n")
    import os

    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tensorwire.transport import get_transport; get_transport('inproc')",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode != 0
    assert "bug in plugin" in result.stderr
