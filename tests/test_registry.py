"""Registry: decorator built-ins plus real entry points from a distribution laid on sys.path."""

import subprocess
import sys
import textwrap

import pytest

from mmrobust_bench.registry import Registry, RegistryError


@pytest.fixture
def fake_distribution(tmp_path, monkeypatch):
    """Write an installed-distribution layout (dist-info + module) that importlib.metadata finds."""

    def make(name: str, group: str, entries: dict[str, str], module_src: str):
        dist = tmp_path / f"{name}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
        lines = "\n".join(f"{k} = {v}" for k, v in entries.items())
        (dist / "entry_points.txt").write_text(f"[{group}]\n{lines}\n")
        (tmp_path / f"{name}_mod.py").write_text(textwrap.dedent(module_src))
        monkeypatch.syspath_prepend(str(tmp_path))
        return f"{name}_mod"

    yield make
    for mod in [m for m in sys.modules if m.endswith("_mod")]:
        sys.modules.pop(mod, None)


def test_builtin_registration_and_unknown_name_lists_valid():
    reg: Registry = Registry("widget", None)
    reg.register("alpha")(1)
    reg.register("beta")(2)
    assert reg.get("alpha") == 1 and reg.names() == ["alpha", "beta"]
    with pytest.raises(RegistryError, match=r"did you mean 'alpha'.*valid: alpha, beta"):
        reg.get("alpah")


def test_entry_point_plugin_is_discovered_lazily(fake_distribution):
    fake_distribution("goodplugin", "test.widgets", {"gamma": "goodplugin_mod:VALUE"}, "VALUE = 42\n")
    reg: Registry = Registry("widget", "test.widgets")
    reg.register("alpha")(1)
    assert reg.get("gamma") == 42
    providers = {row["name"]: row["provider"] for row in reg.describe()}
    assert providers["alpha"] == "builtin" and providers["gamma"].startswith("goodplugin")


def test_duplicate_name_names_both_providers(fake_distribution):
    fake_distribution("dupplugin", "test.dups", {"alpha": "dupplugin_mod:VALUE"}, "VALUE = 3\n")
    reg: Registry = Registry("widget", "test.dups")
    reg.register("alpha")(1)
    with pytest.raises(RegistryError, match="duplicate widget name 'alpha': provided by builtin and by dupplugin"):
        reg.names()


def test_broken_plugin_reports_itself_and_spares_the_others(fake_distribution):
    fake_distribution("badplugin", "test.broken", {"bad": "badplugin_mod:VALUE"}, "raise ImportError('boom')\n")
    reg: Registry = Registry("widget", "test.broken")
    reg.register("alpha")(1)
    assert reg.get("alpha") == 1
    with pytest.raises(RegistryError, match=r"'bad' from badplugin.*boom.*fix or uninstall"):
        reg.get("bad")
    status = {row["name"]: row["status"] for row in reg.describe()}
    assert status["alpha"] == "ok" and status["bad"].startswith("broken")


def test_encoder_modules_register_themselves_on_first_lookup():
    """Like defenses, attacks and datasets: a module under mmrobust_bench/models needs no explicit import."""
    code = (
        "from mmrobust_bench.models.encoders import ENCODERS; import sys; "
        "assert 'mmrobust_bench.models.resnet' not in sys.modules; "
        "names = ENCODERS.names(); assert {'resnet18_visual', 'resnet18_audio'} <= set(names), names"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
