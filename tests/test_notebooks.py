"""The demo and training notebooks run top to bottom in a real Jupyter kernel (this venv's python).

The training notebook runs its tiny variant (STYLEJAX_NOTEBOOK_TINY=1: 6 steps at 32 px, about
half a minute); its default is a small real run of a few minutes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


@pytest.mark.parametrize("name", ["demo.ipynb", "training.ipynb"])
def test_notebooks_are_valid_and_stored_without_outputs(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    if name == "training.ipynb":  # the test switch is read before anything heavy happens
        assert "STYLEJAX_NOTEBOOK_TINY" in code[0].source


@pytest.fixture
def kernel_env(tmp_path, monkeypatch):
    """A python3 kernelspec that starts *this* interpreter (the venv), found first on
    JUPYTER_PATH, and the environment the notebooks read."""
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (StyleJAX tests)", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("STYLEJAX_JAX_CACHE", str(tmp_path / "jax-cache"))
    monkeypatch.setenv("STYLEJAX_NOTEBOOK_TINY", "1")
    monkeypatch.setenv("STYLEJAX_NOTEBOOK_OUT", str(tmp_path / "training"))
    monkeypatch.delenv("STYLEJAX_DOCS_FIGURES", raising=False)  # never rewrite docs/ in tests
    return tmp_path


def _execute(name: str) -> nbformat.NotebookNode:
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] == sys.executable  # the venv's python, not whatever is on PATH
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError on the first failing cell
    return nb


def _outputs(nb) -> list:
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]


def _text(nb) -> str:
    parts = []
    for o in _outputs(nb):
        if o.output_type == "stream":
            parts.append(o.text)
        elif "data" in o and "text/plain" in o.data:
            parts.append(o.data["text/plain"])
    return "\n".join(parts)


def _check_clean(nb) -> None:
    outs = _outputs(nb)
    assert not [o for o in outs if o.output_type == "error"]
    stderr = "".join(o.text for o in outs if o.output_type == "stream" and o.name == "stderr")
    assert "Traceback" not in stderr and "Error" not in stderr, stderr[-2000:]


@pytest.mark.slow
def test_demo_notebook_runs(kernel_env):
    nb = _execute("demo.ipynb")
    _check_clean(nb)
    outs = _outputs(nb)
    images = [o for o in outs if "data" in o and "image/png" in o.data]
    assert len(images) >= 6  # before/after, style grid, strength, blend, result, docs figure
    assert any(WIDGET_VIEW in o.get("data", {}) for o in outs)  # the widget was displayed
    text = _text(nb)
    assert "starry-night" in text and "kingfisher" in text
    assert "Done: The Great Wave" in text and "strength 0.80" in text


@pytest.mark.slow
def test_training_notebook_runs_tiny(kernel_env):
    nb = _execute("training.ipynb")
    _check_clean(nb)
    outs = _outputs(nb)
    images = [o for o in outs if "data" in o and "image/png" in o.data]
    assert len(images) >= 4  # style pictures, loss curves, sample grids, the new pack at work
    assert any(WIDGET_VIEW in o.get("data", {}) for o in outs)
    text = _text(nb)
    assert "tiny run: 6 steps" in text and "step 6:" in text
    out = kernel_env / "training"
    metrics = (out / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in metrics] == [1, 2, 3, 4, 5, 6]
    assert (out / "pack" / "pack.json").is_file() and (out / "grid.png").is_file()
