"""The benchmark scripts are not a package: ``load_benchmark("NAME")`` imports ``benchmarks/NAME.py`` once."""

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    def load(script: str) -> ModuleType:
        name = f"segloc_{script}_benchmark"
        if name not in sys.modules:
            if str(BENCHMARKS) not in sys.path:
                sys.path.insert(0, str(BENCHMARKS))  # some import their sibling benchmarks
            spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up there
            spec.loader.exec_module(module)
        return sys.modules[name]

    return load
