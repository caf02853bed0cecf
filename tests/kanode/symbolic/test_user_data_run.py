"""``python -m kanode.symbolic RUN_DIR`` on a KAN run fitted to a user's CSV (measured data)
finishes without a traceback (it crashed in the tiny-batch KAN path on a strided input)."""

from __future__ import annotations

import json
from pathlib import Path

from kanode.config import FitConfig
from kanode.fit import fit
from kanode.symbolic.__main__ import main as symbolic_main

# Hudson's Bay Company hare and lynx pelts (thousands), 1900-1915
HARE = [30.0, 47.2, 70.2, 77.4, 36.3, 20.6, 18.1, 21.4, 22.0, 25.4, 27.1, 40.3, 57.0, 76.6, 52.3, 19.5]
LYNX = [4.0, 6.1, 9.8, 35.2, 59.4, 41.7, 19.0, 13.0, 8.3, 9.1, 7.4, 8.0, 12.3, 19.5, 45.7, 51.1]
CHEAP = ["--retrain-steps", "2", "--retrain-lbfgs-steps", "2", "--finetune-steps", "2",
         "--finetune-lbfgs-steps", "2", "--polish-rounds", "0"]


def test_symbolic_on_a_user_data_kan_run_has_no_traceback(tmp_path: Path, capsys) -> None:
    data = tmp_path / "hare_lynx.csv"
    data.write_text("traj,t,hare,lynx\n" + "".join(f"0,{1900 + i},{h},{l}\n"
                                                   for i, (h, l) in enumerate(zip(HARE, LYNX))))
    config = FitConfig(data=str(data), n_test_traj=0, train_fraction=1.0, steps=20, lbfgs_steps=5, plots=False)
    run = fit(config, out=tmp_path / "run")
    assert run.summary["status"] == "finished"
    code = symbolic_main([str(tmp_path / "run"), "--out", str(tmp_path / "sym"), "--quiet", *CHEAP])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    summary = json.loads((tmp_path / "sym" / "summary.json").read_text())
    # the recipe ran to its end: a formula, or an honest failure status with a reason
    assert (code == 0 and summary["status"] == "finished") or (code == 1 and summary["reason"]), (code, err)
    assert summary["widths"]["before"] == [2, 10, 2]
