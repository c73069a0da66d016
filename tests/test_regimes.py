"""The regime study (`gradience regimes`): on the recorded fixture, on constructed separable
regimes, the statistics against hand-computed values, and clear errors on too little data."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from gradience.errors import TelemetryError
from gradience.monitor import stats
from gradience.monitor.regimes import analyze_regimes
from gradience.monitor.telemetry import TelemetryWriter

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "regimes"
SCHEMA = json.loads((ROOT / "gradience" / "schemas" / "regimes.schema.json").read_text())


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gradience", *args], capture_output=True, text=True, timeout=120
    )


def write_run(path: Path, *, steps: int = 100, weight: float = 1.0, grad: float = 1.0, loss_seed: int = 0,
              complexity: float | None = 0.5, geometry: bool = True) -> None:  # fmt: skip
    """A run whose geometry is set by (weight, grad) and whose loss is the same noisy curve for
    every regime (only the seed differs)."""
    rng = np.random.default_rng(loss_seed)
    with TelemetryWriter(path) as w:
        for s in range(1, steps + 1):
            w.train_step(s, loss=2.0 * math.exp(-s / 50) + 0.05 * rng.standard_normal(), grad_norm=grad)
            if geometry:
                sc = None if complexity is None else complexity + 0.01 * rng.standard_normal()
                w.metrics(s, "geometry", {"weight_norm": weight * (1 + s / 100), "grad_norm": grad * (1 + 0.1 * rng.random()),
                                          "spectral_complexity": sc})  # fmt: skip


def make_separable(root: Path, *, regimes: int = 3, runs: int = 4) -> Path:
    """Regime 1 has large weights, regime 2 large gradients, regime 0 neither: corners of a
    triangle, which a one-vs-rest linear classifier can separate (regimes strung along one line
    would let the middle one be masked, a known limit of least-squares classifiers)."""
    for k in range(regimes):
        for i in range(runs):
            d = root / f"regime{k}"
            d.mkdir(parents=True, exist_ok=True)
            write_run(d / f"run{i}.jsonl", weight=10.0 if k == 1 else 1.0, grad=10.0 if k == 2 else 1.0,
                      loss_seed=100 * k + i)  # fmt: skip
    return root


# ------------------------------------------------------------------------------- the fixture


def test_fixture_report_is_above_chance_and_valid():
    """20 real runs (scripts/make_regimes.py): 4 regimes × 5 seeds of a small MLP."""
    report = analyze_regimes(FIXTURE)
    d = report.to_dict()
    jsonschema.validate(d, SCHEMA)
    assert (
        d["n_runs"] == 20 and d["regimes"] == dict.fromkeys(sorted(d["regimes"]), 5) and d["n_regimes"] == 4
    )
    geo = d["classification"]["geometry"]
    assert geo["accuracy"] > d["chance"]["majority"] == 0.25 and geo["p_vs_chance"] < 0.01
    assert len(geo["features"]) == 7 and len(d["classification"]["loss"]["features"]) == 3
    assert set(d["mcnemar"]) >= {"b", "c", "chi2", "p_value"}
    assert set(d["dfa"]["per_regime"]) == set(d["regimes"])
    assert all(v["n"] == 5 and v["mean"] is not None for v in d["dfa"]["per_regime"].values())
    assert "20 runs in 4 regimes" in d["caveats"][0]


def test_cli_json_and_text():
    p = cli("regimes", str(FIXTURE), "--json")
    assert p.returncode == 0, p.stderr
    data = json.loads(p.stdout)
    jsonschema.validate(data, SCHEMA)
    assert data == analyze_regimes(FIXTURE).to_dict()
    p = cli("regimes", str(FIXTURE))
    assert p.returncode == 0, p.stderr
    assert "LOO accuracy" in p.stdout and "McNemar" in p.stdout and "DFA exponent" in p.stdout
    assert "caveats" in p.stdout


# ------------------------------------------------------------------------------- constructed regimes


def test_separable_geometry_is_found_and_uninformative_loss_is_not(tmp_path):
    report = analyze_regimes(make_separable(tmp_path))
    assert report.accuracy("geometry") == 1.0
    assert report.accuracy("loss") < 0.6  # the same noisy curve in every regime
    m = report.mcnemar
    assert m["b"] > m["c"] and m["p_value"] < 0.05
    info = report.information
    assert info["sets"]["geometry"]["mi_bits_mean"] > info["sets"]["loss"]["mi_bits_mean"]
    assert info["mi_ratio_geometry_over_loss"] > 1
    assert report.information["regime_entropy_bits"] == pytest.approx(math.log2(3))


def test_a_feature_missing_in_some_runs_is_dropped_with_a_warning(tmp_path):
    root = make_separable(tmp_path, regimes=2, runs=3)
    write_run(root / "regime0" / "run0.jsonl", weight=1.0, grad=1.0, complexity=None)
    with (root / "regime1" / "run2.jsonl").open("a") as f:
        f.write("{torn line\n")
    report = analyze_regimes(root)
    assert (
        "regime1/run2.jsonl: 1 malformed lines skipped (first: line 201: not valid JSON" in report.warnings[0]
    )
    assert any("spectral_complexity_mean left out" in w for w in report.warnings)
    assert "spectral_complexity_mean" not in report.classification["geometry"]["features"]
    assert "spectral_complexity" not in report.classification


@pytest.mark.parametrize(
    ("layout", "match"),
    [
        ({"only": 3}, "at least 2 regimes.*found 1: only"),
        ({"a": 3, "b": 1}, r"at least 2 runs .* too few in: b \(1\)"),
        ({}, "no runs found"),
    ],
)
def test_too_few_runs_or_regimes(tmp_path, layout, match):
    for regime, n in layout.items():
        (tmp_path / regime).mkdir()
        for i in range(n):
            write_run(tmp_path / regime / f"r{i}.jsonl")
    with pytest.raises(TelemetryError, match=match):
        analyze_regimes(tmp_path)


def test_layout_and_content_errors_name_the_problem(tmp_path):
    with pytest.raises(TelemetryError, match="not a folder"):
        analyze_regimes(tmp_path / "missing")
    write_run(tmp_path / "loose.jsonl")
    with pytest.raises(TelemetryError, match="directly in it"):
        analyze_regimes(tmp_path)
    root = make_separable(tmp_path / "x", regimes=2, runs=2)
    write_run(root / "regime1" / "nogeo.jsonl", geometry=False)
    with pytest.raises(TelemetryError, match=r"regime1/nogeo\.jsonl: no geometry records"):
        analyze_regimes(root)
    (root / "regime1" / "nogeo.jsonl").unlink()
    write_run(root / "regime1" / "short.jsonl", steps=4)
    with pytest.raises(TelemetryError, match=r"short\.jsonl: the early phase"):
        analyze_regimes(root)


def test_cli_errors_are_one_line(tmp_path):
    (tmp_path / "only").mkdir()
    write_run(tmp_path / "only" / "r.jsonl")
    p = cli("regimes", str(tmp_path))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "at least 2 regimes" in p.stderr


# ------------------------------------------------------------------------------- statistics


def test_mcnemar_exact_against_hand_values():
    # b = 5, c = 1: p = 2 · P(X ≤ 1), X ~ Bin(6, ½) = 2 · 7/64; χ² = (|5 − 1| − 1)² / 6
    a = [True] * 5 + [False] + [True] * 3
    b = [False] * 5 + [True] + [True] * 3
    m = stats.mcnemar_exact(a, b)
    assert (m["b"], m["c"]) == (5, 1)
    assert m["p_value"] == pytest.approx(14 / 64) and m["chi2"] == pytest.approx(1.5)
    assert stats.mcnemar_exact([True, False], [True, False])["p_value"] == 1.0
    assert stats.mcnemar_exact([True] * 3, [True] * 3)["p_value"] == 1.0


def test_dfa_exponents_of_known_processes():
    rng = np.random.default_rng(0)
    noise = rng.standard_normal(2048)
    assert stats.dfa_exponent(noise) == pytest.approx(0.5, abs=0.1)
    assert stats.dfa_exponent(np.cumsum(noise)) == pytest.approx(1.5, abs=0.1)
    assert stats.dfa_exponent([1.0] * 100) is None  # constant
    assert stats.dfa_exponent(noise[:10]) is None  # too short


def test_information_and_entropy():
    labels = ["a", "b", "c", "d"] * 5
    assert stats.entropy_bits(labels) == pytest.approx(2.0)
    assert stats.mutual_information_bits(labels, labels) == pytest.approx(2.0)
    assert stats.mutual_information_bits(labels, ["x"] * 20) == 0.0
    bins = stats.discretise(np.arange(20.0), 4)
    assert np.bincount(bins).tolist() == [5, 5, 5, 5]


def test_ridge_loo_and_anova():
    x = np.array([[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]])
    y = ["a", "a", "a", "b", "b", "b"]
    assert stats.loo_ridge_predictions(x, y) == y
    groups = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert stats.anova_f(groups) == pytest.approx(13.5)  # MS_between 13.5 / MS_within 1
    p = stats.permutation_p(groups, n_perm=500)
    assert p == stats.permutation_p(groups, n_perm=500) and 0 < p < 0.2
    assert stats.binomial_tail(0, 10, 0.3) == pytest.approx(1.0)
    assert stats.binomial_tail(10, 10, 0.5) == pytest.approx(0.5**10)
