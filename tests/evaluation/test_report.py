"""``cfs report``: tables, plots, a self-contained HTML page that renders in headless Chromium."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cfs.cli import main
from cfs.errors import CfsError
from cfs.evaluation.report import load_runs, write_report


def test_report_of_two_runs(two_runs, tmp_path, capsys):
    assert main(["report", *map(str, two_runs), "--out", str(tmp_path)]) == 0
    md = capsys.readouterr().out
    rows = [line for line in md.splitlines() if line.startswith("| finetune") or line.startswith("| joint")]
    assert len(rows) == 2
    for run, row in zip(two_runs, rows):
        summary = json.loads((run / "metrics.json").read_text())["summary"]
        assert f"| {100 * summary['last_accuracy']:.1f} |" in row
    for name in ("seen_accuracy", "forgetting", "accuracy_matrix_finetune", "accuracy_matrix_joint"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "report.html").read_text()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == 4 and "http" not in page.split("<h2>Runs</h2>")[0]
    assert base64.b64decode(images[0]) == (tmp_path / "seen_accuracy.png").read_bytes()


def test_parent_folder_fscil_and_episodic_runs(two_runs, tmp_path):
    fscil = tmp_path / "in" / "fscil"
    shutil.copytree(two_runs[0], fscil)
    data = json.loads((fscil / "metrics.json").read_text())
    data["strategy"], data["kind"] = "teen", "fscil"  # metrics.json records the kind that wrote it
    data["fscil"] = {"session_accuracy": [0.8, 0.7, 0.6], "average_accuracy": 0.7, "performance_drop": 0.2}
    (fscil / "metrics.json").write_text(json.dumps(data))
    epi = tmp_path / "in" / "episodic"
    epi.mkdir()
    (epi / "metrics.json").write_text(json.dumps({"strategy": "protonet", "kind": "episodic", "scenario": "omniglot",
                                                  "summary": {"accuracy": 0.9, "ci95": 0.01, "episodes": 600}}))
    paths = write_report([tmp_path / "in", two_runs[1]], tmp_path / "out")
    md = paths["markdown"].read_text()
    assert "| teen | 80.0 | 70.0 | 60.0 | 70.0 | 20.0 |" in md
    assert "| protonet | omniglot | 90.00 | +-1.00 | 600 |" in md
    assert {"fscil_sessions", "fewshot_accuracy", "seen_accuracy"} <= set(paths)
    assert [r.kind for r in load_runs([tmp_path / "in"])] == ["episodic", "fscil"]


def test_run_of_an_unregistered_kind_is_a_one_line_error(two_runs, tmp_path, capsys):
    toy = tmp_path / "toy"
    shutil.copytree(two_runs[0], toy)
    data = json.loads((toy / "metrics.json").read_text())
    (toy / "metrics.json").write_text(json.dumps({**data, "kind": "toy"}))
    assert main(["report", str(toy), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "kind 'toy'" in err and "class-incremental, episodic, fscil" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_missing_run_folder_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(CfsError, match="does not exist"):
        load_runs([tmp_path / "nope"])
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cfs: error:") and "metrics.json" in err and "\n" not in err


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
PROBE = """<script>window.addEventListener('load', () => { document.querySelectorAll('img').forEach(im => {
  const r = im.getBoundingClientRect();
  im.setAttribute('data-probe', im.complete + ':' + im.naturalWidth + ':' + Math.round(r.width) + ':'
                  + Math.round(r.height) + ':' + Math.round(r.top) + ':' + Math.round(r.left)); }); });</script></body>"""


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
                          capture_output=True, text=True, timeout=120)


def test_html_report_renders_in_headless_chromium(two_runs, tmp_path):
    paths = write_report(two_runs, tmp_path / "report")
    html_file = paths["html"]
    # every plot decodes and has a size on the page, all within the screenshot's height
    probe = tmp_path / "probe.html"
    probe.write_text(html_file.read_text().replace("</body>", PROBE))
    size = "--window-size=1400,2000"
    dom = chromium(tmp_path, "--virtual-time-budget=5000", size, "--dump-dom", probe.as_uri()).stdout
    probes = [tuple(map(int, p.replace("true", "1").replace("false", "0").split(":")))
              for p in re.findall(r'data-probe="([^"]+)"', dom)]
    assert len(probes) == 4, dom[-2000:]
    for complete, natural, width, height, top, left in probes:
        assert complete == 1 and natural > 100 and width > 100 and height > 100
        assert top + height <= 2000 and left + width <= 1400
    # the page itself: a screenshot that is not blank, with every plot visible where it lies
    shot = tmp_path / "shot.png"
    chromium(tmp_path, size, "--hide-scrollbars", f"--screenshot={shot}", html_file.as_uri())
    assert shot.is_file(), "chromium wrote no screenshot"
    import matplotlib.image

    img = matplotlib.image.imread(str(shot))[..., :3]
    assert img.shape[:2] == (2000, 1400)
    assert (img < 0.95).any(axis=2).mean() > 0.03, "screenshot is (nearly) blank"
    for _, _, width, height, top, left in probes:
        region = img[top : top + height, left : left + width]
        assert (region < 0.95).any(axis=2).mean() > 0.05, "a plot is blank in the screenshot"
        assert len(np.unique(region.reshape(-1, 3).round(2), axis=0)) > 20
