"""Drift pictures and the check-drift / plot-drift command-line helpers."""

import json
from pathlib import Path

import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from drifts import dpo, ppo
from drifts.cli import check_drift_main, plot_drift_main
from drifts.plotting import compare_drifts, objective_derivative, plot_drift


def test_objective_derivative_of_ppo_is_clip_gradient():
    d = objective_derivative(ppo(), np.array([-0.5, 0.0, 0.1, 0.5]), np.array([1.0, -1.0]))
    # A = 1: gradient A inside the clip range and for r < 1 - eps; 0 above 1 + eps
    np.testing.assert_allclose(d[0], [1.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(d[1], [0.0, -1.0, -1.0, -1.0])


def test_plot_drift_returns_figure_with_centred_diverging_map():
    import matplotlib.pyplot as plt

    n_before = len(plt.get_fignums())
    fig = plot_drift(dpo(), resolution=41)
    assert isinstance(fig, Figure) and len(fig.axes) == 3  # heat map, slices, colour bar
    mesh = fig.axes[0].collections[0]
    assert isinstance(mesh.norm, TwoSlopeNorm) and mesh.norm.vcenter == 0.0
    assert len(fig.axes[1].lines) >= 6
    assert len(plt.get_fignums()) == n_before  # no pyplot state leaks


def test_plot_accepts_callables_expressions_and_temporal(tmp_path):
    plot_drift(lambda r, A: (r - 1.0) ** 2 * jnp.abs(A), resolution=21).savefig(tmp_path / "a.png")
    plot_drift("Max(0, (r - 1)**2 * A**2)", resolution=21).savefig(tmp_path / "b.png")
    assert (tmp_path / "a.png").stat().st_size > 1000


def test_compare_drifts_side_by_side():
    fig = compare_drifts([ppo(), dpo()], resolution=31)
    assert len([ax for ax in fig.axes if ax.get_title().endswith("A)]")]) == 2
    with pytest.raises(ValueError):
        compare_drifts([])
    with pytest.raises(TypeError, match=r"takes a list of drifts, got one: 'ppo'.*compare_drifts\(\['ppo'"):
        compare_drifts("ppo")  # was read as the drifts 'p', 'p', 'o'
    with pytest.raises(TypeError, match="takes a list of drifts, got one"):
        compare_drifts(Path("lpo.drift"))  # a drift file, not a list of them


@pytest.mark.parametrize("vmax", [-1, 0, float("nan"), float("inf"), "big", True])
def test_plot_drift_refuses_a_colour_scale_it_would_silently_replace(vmax):
    with pytest.raises(ValueError, match="vmax must be a positive finite number"):
        plot_drift(ppo(), vmax=vmax, resolution=11)


def test_plot_drift_refuses_empty_slices():
    with pytest.raises(ValueError, match="slices is empty"):
        plot_drift(ppo(), slices=[], resolution=11)
    with pytest.raises(ValueError, match="slices is empty"):
        compare_drifts([ppo()], slices=(), resolution=11)


def test_learning_curves_name_the_shapes_they_need():
    from mirrorlearn.reporting import plot_learning_curves

    x = np.arange(5)
    fig = plot_learning_curves({"a": (x, np.zeros((2, 5)))})
    assert fig.axes[0].get_lines()
    with pytest.raises(ValueError, match=r"y 2-D \(n_seeds, len\(x\)\); got x \(5,\), y \(5,\).*y\[None, :\]"):
        plot_learning_curves({"a": (x, np.zeros(5))})
    with pytest.raises(ValueError, match="got x .5,., y .2, 4."):
        plot_learning_curves({"a": (x, np.zeros((2, 4)))})
    with pytest.raises(TypeError, match="non-empty mapping"):
        plot_learning_curves({})
    with pytest.raises(TypeError, match="non-empty mapping.*got list"):
        plot_learning_curves([(x, np.zeros((1, 5)))])
    with pytest.raises(TypeError, match=r"curves\['a'\] must be a pair"):
        plot_learning_curves({"a": x})


def test_cli_check_drift_writes_json(tmp_path, capsys):
    assert check_drift_main(["Max(0, (r - 1)**2 * A**2)", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["valid"] and data["symbolic"]["valid"] is True and data["proved"] is True
    assert "note" not in data
    assert str(tmp_path) in capsys.readouterr().out
    assert check_drift_main(["Abs(r - 1)", "--out", str(tmp_path / "bad")]) == 1
    bad = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert not bad["numeric"]["conditions"]["zero_grad_at_identity"]["passed"]


def test_cli_check_drift_without_out_writes_nothing(tmp_path, monkeypatch, capsys):
    import tempfile

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    monkeypatch.chdir(tmp_path)
    assert check_drift_main(["Max(0, (r - 1)**2 * A**2)"]) == 0
    out = capsys.readouterr().out
    assert "non_negative" in out or "PASS" in out  # the report is printed
    assert "wrote" not in out and list(tmp_path.iterdir()) == []  # no check-drift-* folder left anywhere here


def test_cli_out_with_a_quoted_tilde_means_the_home_folder(tmp_path, monkeypatch, capsys):
    # "--out '~/plots'" reaches us unexpanded; it must not create a folder literally named "~"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert plot_drift_main(["ppo", "--out", "~/plots"]) == 0
    assert (tmp_path / "home" / "plots" / "plots.json").exists()
    assert not (tmp_path / "~").exists()
    assert str(tmp_path / "home" / "plots") in capsys.readouterr().out


def test_cli_check_drift_rejects_hostile_text(tmp_path, capsys):
    assert check_drift_main(["__import__('os').system('true')", "--out", str(tmp_path)]) == 2
    assert "not allowed" in capsys.readouterr().err


def test_cli_check_drift_errors_exit_2_with_one_message(tmp_path, capsys):
    # exit 1 means "invalid"; a malformed expression or an unknown name is an error (2), as in distill
    assert check_drift_main(["Max(0, (r-1)**2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("was never closed") == 1
    assert check_drift_main(["dpoo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'dpo'" in err and "allowed: r, A" not in err and err.count("dpoo") == 1
    assert not (tmp_path / "report.json").exists()


def test_cli_check_drift_says_when_validity_is_not_proved(tmp_path, capsys):
    # a kink at r = 1 only for A near 0.1234, between the numeric grid points: sympy cannot decide it
    text = "Abs(r-1)*Max(0, 1 - 1000000*(A-0.1234)**2)"
    assert check_drift_main([text, "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["valid"] is True and data["proved"] is False and data["symbolic"]["valid"] is None
    assert "not proved" in data["note"] and "zero_grad_at_identity" in data["note"]
    assert "warning: valid numerically only, not proved" in capsys.readouterr().out


def test_cli_plot_drift(tmp_path, capsys):
    assert plot_drift_main(["ppo", "(r - 1)**2 * A**2", "--out", str(tmp_path), "--dpi", "40"]) == 0
    files = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "compare.png" in files and "drift_ppo.png" in files and len(files) == 3
    assert str(tmp_path) in capsys.readouterr().out


def test_cli_plot_drift_overwrite_names_pictures_it_did_not_redraw(tmp_path, capsys):
    from drifts.cli import plot_drift_main

    out = str(tmp_path / "pics")
    assert plot_drift_main(["ppo", "dpo", "--out", out]) == 0
    capsys.readouterr()
    assert plot_drift_main(["ppo", "--out", out, "--overwrite"]) == 0
    assert "still holds pictures from an earlier run, not listed in plots.json: compare.png, drift_dpo.png" \
        in capsys.readouterr().out


def test_cli_plot_and_check_drift_refuse_a_file_as_out_and_bad_dpi(tmp_path, capsys):
    (tmp_path / "afile").write_text("kept")
    assert plot_drift_main(["ppo", "--out", str(tmp_path / "afile")]) == 2
    assert "existing file, not a folder" in capsys.readouterr().err
    assert check_drift_main(["ppo", "--no-symbolic", "--out", str(tmp_path / "afile" / "sub")]) == 2
    assert "cannot create the folder" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "kept"
    assert plot_drift_main(["ppo", "--t", "0.5", "--out", str(tmp_path / "p")]) == 2
    assert "--t 0.5 is training progress for temporal drifts (ta-lpo), but ppo takes none" in capsys.readouterr().err
    assert plot_drift_main(["ppo", "--dpi", "0", "--out", str(tmp_path / "p")]) == 2
    assert "--dpi must be an integer from 1 to 1200, got 0" in capsys.readouterr().err


def test_cli_plot_drift_names_are_unique(tmp_path):
    ppo().save(tmp_path / "sub" / "ppo.drift")  # same stem as the name "ppo": must not overwrite its picture
    argv = ["ppo", str(tmp_path / "sub" / "ppo.drift"), "--out", str(tmp_path / "pl"), "--dpi", "20"]
    assert plot_drift_main(argv) == 0
    files = json.loads((tmp_path / "pl" / "plots.json").read_text())["files"]
    assert [f.rsplit("/", 1)[-1] for f in files] == ["drift_ppo.png", "drift_ppo-2.png", "compare.png"]
    # expressions that share their first 40 slug characters
    from drifts.cli import _slug, _unique

    taken: set = set()
    long = "(r - 1)**2 * A**2 * (1 + 0*r*A*A*A*A*A*A*A*A*A*A*A)"
    names = [_unique(_slug(x), taken) for x in (long, long + " + 0", long + " + 1")]
    assert len(set(names)) == 3 and names[1] == names[0] + "-2" and names[2] == names[0] + "-3"


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exc:
        plot_drift_main(["--help"])
    assert exc.value.code == 0 and "--out" in capsys.readouterr().out
    assert matplotlib.get_backend().lower() == "agg"


def test_cli_check_and_plot_drift_keep_an_earlier_run_unless_overwrite(tmp_path, capsys):
    assert check_drift_main(["ppo", "--no-symbolic", "--out", str(tmp_path / "c")]) == 0
    before = (tmp_path / "c" / "report.json").read_text()
    assert check_drift_main(["dpo", "--no-symbolic", "--out", str(tmp_path / "c")]) == 2
    assert "already holds results of an earlier run" in capsys.readouterr().err
    assert (tmp_path / "c" / "report.json").read_text() == before
    assert check_drift_main(["dpo", "--no-symbolic", "--out", str(tmp_path / "c"), "--overwrite"]) == 0
    assert json.loads((tmp_path / "c" / "report.json").read_text())["drift"] == "dpo"
    assert plot_drift_main(["ppo", "--dpi", "20", "--out", str(tmp_path / "p")]) == 0
    assert plot_drift_main(["dpo", "--dpi", "20", "--out", str(tmp_path / "p")]) == 2
    assert "--overwrite" in capsys.readouterr().err
    for t in ("2", "nan"):
        assert plot_drift_main(["ta-lpo", "--t", t, "--out", str(tmp_path / "t")]) == 2
        assert "must be a number in [0, 1]" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        plot_drift(ppo(), t=float("nan"))


def test_learning_curves_that_coincide_stay_distinguishable(tmp_path):
    # PPO and DPO both at CartPole's 500: the later line used to hide the earlier one entirely
    from mirrorlearn.reporting import plot_learning_curves

    x = np.arange(40)
    y = np.full((4, 40), 500.0)
    fig = plot_learning_curves({"ppo": (x, y), "dpo": (x, y)})
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    assert lines[0].get_linestyle() != lines[1].get_linestyle()
    assert lines[0].get_marker() != lines[1].get_marker()
    assert lines[0].get_linewidth() > lines[1].get_linewidth()  # the earlier, wider line shows around the later
    fig.savefig(tmp_path / "curves.png")
