"""Registry: lookup, suffix dispatch, plugin load failures and conflicts are errors."""

from types import SimpleNamespace

import pytest

from ir_bridge import registry
from ir_bridge.errors import IRBridgeError


class FakeEntryPoint:
    def __init__(self, name, value, loader):
        self.name, self.value, self._loader = name, value, loader
        self.dist = SimpleNamespace(name="fake-dist")

    def load(self):
        return self._loader()


@pytest.fixture
def fake_plugins(monkeypatch):
    """Replace the discovered entry points with a controlled set (restored afterwards)."""
    eps = registry._discover()
    table = {k: dict(v) for k, v in eps.items()}
    monkeypatch.setattr(registry, "_entry_points", table)
    monkeypatch.setattr(registry, "_loaded", set())
    yield table
    for kind in ("frontend", "backend"):
        for name in ("broken", "liar", "good"):
            registry._TABLES[kind].pop(name, None)


def test_builtin_passes_are_found_through_entry_points():
    rows = registry.entry_point_table()
    assert ("pass", "fold-batchnorm", "ir_bridge.passes.fold_batchnorm", "ir_bridge") in rows
    assert registry.get_pass("fold-batchnorm").module == "ir_bridge.passes.fold_batchnorm"


def test_unknown_names_list_the_known_ones():
    with pytest.raises(IRBridgeError, match="no pass named 'nope'; known: .*dead-code"):
        registry.get_pass("nope")


def test_a_plugin_that_fails_to_load_is_an_error(fake_plugins):
    def explode():
        raise ImportError("missing thing")

    fake_plugins["backend"]["broken"] = FakeEntryPoint("broken", "pkg.broken", explode)
    with pytest.raises(IRBridgeError, match="backend 'broken' .*failed to load.*missing thing"):
        registry.get_backend("broken")


def test_a_plugin_that_registers_nothing_is_an_error(fake_plugins):
    fake_plugins["backend"]["liar"] = FakeEntryPoint("liar", "pkg.liar", lambda: None)
    with pytest.raises(IRBridgeError, match="registered no backend named 'liar'"):
        registry.get_backend("liar")


def test_a_plugin_registering_through_the_decorator_is_found(fake_plugins):
    def load():
        @registry.register_backend("good", suffixes=(".good",))
        def emit(graph, path=None):
            """Emit nothing."""
            return "artifact"

    fake_plugins["backend"]["good"] = FakeEntryPoint("good", "pkg.good", load)
    assert registry.get_backend("good").emit(None) == "artifact"
    assert registry.get_backend("good").description == "Emit nothing."


def test_two_modules_claiming_one_name_conflict():
    def emit(graph, path=None):
        return None

    emit.__module__ = "somewhere.else"
    with pytest.raises(IRBridgeError, match="registered twice"):
        registry.register_backend("dup-test")(emit)
        other = lambda graph, path=None: None  # noqa: E731
        other.__module__ = "another.place"
        registry.register_backend("dup-test")(other)
    registry._TABLES["backend"].pop("dup-test", None)


def test_suffix_dispatch_and_unknown_suffix():
    with pytest.raises(IRBridgeError, match=r"cannot tell the format of 'model.xyz'"):
        registry.frontend_for("model.xyz")
    with pytest.raises(IRBridgeError, match="no frontend accepts an object of type"):
        registry.frontend_for(object())
