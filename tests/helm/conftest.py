"""Shared fixtures for the Helm chart tests: the chart, its value sets, rendering."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import helm_python as helm
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "switchyard"
VALUES_DIR = Path(__file__).resolve().parent / "values"

RELEASE = "sy"
NAMESPACE = "switchyard"

# Named value sets: the chart's defaults plus every file in tests/helm/values/.
VALUE_SETS: dict[str, dict[str, Any]] = {"default": {}}
for _path in sorted(VALUES_DIR.glob("*.yaml")):
    VALUE_SETS[_path.stem] = yaml.safe_load(_path.read_text()) or {}


class Rendered:
    """One rendering of the chart: its objects and its NOTES.txt."""

    def __init__(self, manifests: dict[str, str]):
        self.notes = ""
        self.objects: list[dict[str, Any]] = []
        for name, text in sorted(manifests.items()):
            if name.endswith("NOTES.txt"):
                self.notes = text
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("_template", name)
                    self.objects.append(doc)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def one(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
        return found[0]

    def workloads(self) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] in ("Deployment", "StatefulSet")]


def strip(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as it would be sent to the API server (without the test's bookkeeping)."""
    return {k: v for k, v in obj.items() if k != "_template"}


@functools.lru_cache(maxsize=1)
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


def render(values: dict[str, Any] | None = None) -> Rendered:
    return Rendered(chart().render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True))


@functools.lru_cache(maxsize=None)
def _render_set(name: str) -> Rendered:
    return render(VALUE_SETS[name])


@pytest.fixture(params=sorted(VALUE_SETS))
def value_set(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def rendered(value_set: str) -> Rendered:
    return _render_set(value_set)


def rendered_set(name: str) -> Rendered:
    return _render_set(name)


def fullname(suffix: str = "") -> str:
    return f"{RELEASE}-switchyard{suffix}"
