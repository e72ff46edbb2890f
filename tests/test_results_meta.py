"""evalsuite.results: atomic tables, the meta.json schema, command -> folder mapping."""

import json

import pandas as pd
import pytest

from evalsuite import results


def test_meta_has_schema_fields_and_validates(tmp_path):
    f = tmp_path / "in.txt"
    f.write_text("hello", encoding="utf-8")
    meta = results.build_meta(
        "dim-probe", config={"a": 1, "x": float("nan")}, inputs=[f], seeds={"seed": 0},
        columns={"t.csv": {"mean": results.column("mean share", "evalsuite.stats.bootstrap_ci")}},
        outputs=["t.csv"], extra={"verdict": "x"},
    )
    assert results.validate_meta(meta) == []
    assert meta["inputs"][0]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert meta["config"]["x"] is None  # NaN is not JSON
    path = results.write_meta(tmp_path, meta)
    assert json.loads(path.read_text())["verdict"] == "x"


def test_validate_meta_reports_missing_columns():
    meta = results.build_meta("generate", columns={})
    assert any("columns" in p for p in results.validate_meta(meta))
    with pytest.raises(ValueError):
        results.build_meta("generate", extra={"argv": []})


def test_write_table_atomic_and_parquet(tmp_path):
    df = pd.DataFrame({"a": [1, 2]})
    paths = results.write_table(df, tmp_path / "sub" / "t.csv", parquet=True)
    assert [p.name for p in paths] == ["t.csv", "t.parquet"]
    assert pd.read_parquet(paths[1])["a"].tolist() == [1, 2]
    assert not list((tmp_path / "sub").glob("*.part"))


def test_results_dir_mapping():
    assert results.results_dir_for("r", "gpt-eval").as_posix() == "r/gpt_eval"
    assert "dim_probe" in results.candidate_dirs("dim-probe")
    with pytest.raises(KeyError):
        results.results_dir_for("r", "nope")
