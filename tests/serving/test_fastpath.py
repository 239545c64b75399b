"""The fast path gives the registered pipeline's probabilities, on many and on odd records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from healthpredict.data.schema import COLUMNS, FEATURE_COLUMNS, ID_COLUMNS, Kind
from healthpredict.data.timeline import load_manifest, load_test_window
from healthpredict.features import NUMERIC_FEATURES
from healthpredict.modeling.registry import configure_tracking, load_pipeline
from healthpredict.modeling.train import features_of
from healthpredict.serving import model_store as model_store_module
from healthpredict.serving.app import create_app
from healthpredict.serving.examples import EXAMPLE_ENCOUNTER, contract_records
from healthpredict.serving.fastpath import (
    CompiledModel,
    FastPathError,
    check_parity,
    compile_pipeline,
    records_frame,
)
from healthpredict.serving.model_store import LoadedModel, ModelStore
from tests.serving.conftest import API_KEY, Champion, service_settings, wait_ready

pytestmark = pytest.mark.integration
TIGHT = 1e-12


@pytest.fixture(scope="module")
def loaded(champion: Champion) -> LoadedModel:
    store = ModelStore(champion.settings)
    assert store.refresh().startswith("now serving")
    assert store.current is not None and store.current.compiled is not None
    return store.current


def edge_records() -> list[dict[str, Any]]:
    """Every allowed category of every field, nulls where allowed, range edges, unseen text."""
    records = []
    for spec in COLUMNS:
        if spec.name in ID_COLUMNS:
            continue
        values: list[Any] = list(spec.allowed or ())
        if spec.kind is Kind.INTEGER:
            values = [spec.minimum, spec.maximum, (spec.minimum or 0) + 1]
        elif spec.kind is Kind.ICD9:
            values = ["250", "250.99", "V99.99", "E999", "0", "999", "1.1", "V1"]
        elif spec.kind is Kind.TEXT:
            values = ["never-seen", "x" * (spec.max_length or 1), "MC"]
        values += [None] if spec.nullable else []
        records += [{**EXAMPLE_ENCOUNTER, spec.name: value} for value in values]
    nullable = {s.name: None for s in COLUMNS if s.nullable}
    return [*records, {**EXAMPLE_ENCOUNTER, **nullable}]


def test_parity_on_many_and_edge_records(loaded: LoadedModel) -> None:
    records = contract_records(3000, seed=42) + edge_records()
    expected = loaded.pipeline.predict_proba(records_frame(records))[:, 1]
    compiled = loaded.compiled
    assert compiled is not None
    batch = compiled.predict(records)
    np.testing.assert_allclose(batch, expected, rtol=0, atol=TIGHT)
    singles = np.array([compiled.predict([r])[0] for r in records[-400:]])  # the C single-row route
    np.testing.assert_allclose(singles, expected[-400:], rtol=0, atol=TIGHT)
    assert len(np.unique(np.round(expected, 6))) > 50  # the records really exercise the model


def test_service_equals_registered_pipeline_on_real_records(
    champion: Champion, tmp_path: Path
) -> None:
    settings = champion.settings
    test = features_of(
        load_test_window(settings.data.prepared_dir, load_manifest(settings.data.prepared_dir))
    )
    frame = test.head(400).astype(object).where(test.head(400).notna(), None)
    records = [
        {k: (int(v) if isinstance(v, np.integer) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]
    configure_tracking(settings)
    registered = load_pipeline(f"models:/{settings.tracking.model_name}@champion")
    expected = registered.predict_proba(test.head(400))[:, 1]
    with TestClient(
        create_app(service_settings(settings, tmp_path)), headers={"X-API-Key": API_KEY}
    ) as client:
        wait_ready(client)
        served = client.post("/predict/batch", json={"encounters": records}).json()["predictions"]
        one = client.post("/predict", json=records[0]).json()
    np.testing.assert_allclose([p["probability"] for p in served], expected, rtol=0, atol=TIGHT)
    assert one["probability"] == pytest.approx(expected[0], abs=TIGHT)


def _mean_raw(loaded: LoadedModel, matrix: np.ndarray) -> np.ndarray:
    members = loaded.pipeline[-1].calibrated_classifiers_
    return np.mean([m.estimator.booster_.predict(matrix, raw_score=True) for m in members], axis=0)


def test_path_attributions_add_up_to_the_raw_score(loaded: LoadedModel) -> None:
    compiled = loaded.compiled
    assert compiled is not None
    matrix = compiled.encode(contract_records(300, seed=9))
    _, attributions = compiled.score(matrix, explain=True)
    assert attributions is not None
    base = compiled.all_trees.base / len(compiled.members)
    np.testing.assert_allclose(
        base + attributions.sum(axis=1), _mean_raw(loaded, matrix), atol=1e-5
    )


def _expected(node: dict[str, Any]) -> tuple[float, float]:
    """(mean leaf value over training rows, rows) of a dumped node."""
    if "split_feature" not in node:
        return float(node["leaf_value"]), float(node.get("leaf_count", 1))
    (left, n_left), (right, n_right) = _expected(node["left_child"]), _expected(node["right_child"])
    return (left * n_left + right * n_right) / (n_left + n_right), n_left + n_right


def _walk(node: dict[str, Any], row: np.ndarray, credit: dict[int, float]) -> None:
    """Reference path attribution of one row in one tree: follow its thresholds from the root."""
    if "split_feature" not in node:
        return
    assert node["decision_type"] == "<=" and not np.isnan(row[node["split_feature"]])
    child = node["left_child" if row[node["split_feature"]] <= node["threshold"] else "right_child"]
    step = _expected(child)[0] - _expected(node)[0]
    credit[node["split_feature"]] = credit.get(node["split_feature"], 0.0) + step
    _walk(child, row, credit)


def test_path_attributions_match_a_reference_walk(loaded: LoadedModel) -> None:
    compiled = loaded.compiled
    assert compiled is not None
    member = compiled.members[0]
    matrix = compiled.encode(contract_records(20, seed=4))
    attributions = member.tables.attributions(member.leaves(matrix))
    trees = member.booster.dump_model()["tree_info"]
    for row in range(len(matrix)):
        credit: dict[int, float] = {}
        for tree in trees:
            _walk(tree["tree_structure"], matrix[row], credit)
        by_group = np.zeros(len(compiled.groups))
        for feature, value in credit.items():
            by_group[compiled.group_matrix[feature].argmax()] += value
        np.testing.assert_allclose(attributions[row], by_group, atol=1e-5)


def test_path_and_shap_share_the_base_value(loaded: LoadedModel) -> None:
    compiled = loaded.compiled
    assert compiled is not None
    matrix = compiled.encode(contract_records(3, seed=8))
    members = loaded.pipeline[-1].calibrated_classifiers_
    shap_base = np.mean(
        [m.estimator.booster_.predict(matrix, pred_contrib=True)[:, -1] for m in members]
    )
    assert compiled.all_trees.base / len(compiled.members) == pytest.approx(shap_base, abs=1e-9)


def test_shap_explanation_equals_lightgbm_pred_contrib(loaded: LoadedModel) -> None:
    compiled = loaded.compiled
    assert compiled is not None
    records = contract_records(5, seed=2)
    features = loaded.pipeline[:-1].transform(records_frame(records))
    members = loaded.pipeline[-1].calibrated_classifiers_
    contrib = np.mean([m.estimator.predict(features, pred_contrib=True) for m in members], axis=0)
    by_field = (
        pd.DataFrame(contrib[:, :-1], columns=features.columns)
        .T.groupby([compiled.encoder.source_of(c) for c in features.columns], sort=False)
        .sum()
        .T
    )
    shap = loaded.score(records, "shap").attributions
    assert shap is not None
    np.testing.assert_allclose(shap, by_field[list(compiled.groups)].to_numpy(), atol=1e-9)


def test_contributions_name_request_fields(loaded: LoadedModel) -> None:
    compiled = loaded.compiled
    assert compiled is not None
    allowed = set(FEATURE_COLUMNS) | set(NUMERIC_FEATURES)
    assert set(compiled.groups) <= allowed
    assert {"race", "age", "diag_1", "medical_specialty", "insulin"} <= set(compiled.groups)


def test_parity_check_catches_a_wrong_fast_path(loaded: LoadedModel) -> None:
    compiled = loaded.compiled
    assert compiled is not None
    lookup = compiled.encoder.target[0]
    skewed = dataclasses.replace(lookup, table={k: v + 0.5 for k, v in lookup.table.items()})
    encoder = dataclasses.replace(compiled.encoder, target=(skewed, *compiled.encoder.target[1:]))
    wrong = dataclasses.replace(compiled, encoder=encoder)
    with pytest.raises(FastPathError, match="differs from the pipeline"):
        check_parity(loaded.pipeline, wrong, contract_records(300, seed=1))


def test_store_falls_back_to_the_pipeline(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, loaded: LoadedModel
) -> None:
    def refuse(pipeline: Any, trees_cache: Any = None) -> CompiledModel:
        raise FastPathError("not this time")

    monkeypatch.setattr(model_store_module, "compile_pipeline", refuse)
    with TestClient(
        create_app(service_settings(champion.settings, tmp_path)), headers={"X-API-Key": API_KEY}
    ) as client:
        assert wait_ready(client)["fast_path"] is False
        assert "fast path off (not this time)" in client.get("/model").json()["fast_path"]
        answer = client.post("/predict", json=EXAMPLE_ENCOUNTER).json()
    expected = loaded.pipeline.predict_proba(records_frame([EXAMPLE_ENCOUNTER]))[0, 1]
    assert answer["probability"] == pytest.approx(expected, abs=TIGHT)
    assert answer["explanation"] == "none" and answer["top_contributions"] == []


def test_compiler_refuses_other_pipeline_shapes(loaded: LoadedModel) -> None:
    with pytest.raises(FastPathError):
        compile_pipeline(loaded.pipeline[:-1])


@pytest.mark.parametrize(("method", "ensemble"), [("isotonic", False), ("sigmoid", True)])
def test_parity_for_other_calibrations(method: str, ensemble: bool) -> None:
    """The defaults use sigmoid and one refitted booster; the other shapes compile exactly too."""
    import sklearn

    from healthpredict.data.prepare import TARGET, clean
    from healthpredict.data.pseudonym import PATIENT_KEY, pseudonymise
    from healthpredict.data.timeline import patient_groups
    from healthpredict.data.validate import validate_raw
    from healthpredict.modeling.train import ModelKind, build_pipeline, default_params, fit_model
    from tests.synthetic import make_raw_frame

    cleaned, _ = clean(validate_raw(make_raw_frame(1500, seed=8)).valid)
    train = pseudonymise(cleaned, b"s")
    params = {**default_params(), "calibration_method": method}
    params["lightgbm"] = {**params["lightgbm"], "n_estimators": 60}
    if ensemble:  # an average of fold members, each with its own calibrator
        pipeline = build_pipeline(ModelKind.LIGHTGBM, params, 3, 0).set_params(model__ensemble=True)
        with sklearn.config_context(enable_metadata_routing=True):
            pipeline.fit(
                features_of(train), train[TARGET], groups=patient_groups(train[PATIENT_KEY])
            )
        assert len(pipeline[-1].calibrated_classifiers_) == 3
    else:
        pipeline = fit_model(ModelKind.LIGHTGBM, train, params, 3, 0).pipeline
    records = contract_records(500, seed=3) + edge_records()
    expected = pipeline.predict_proba(records_frame(records))[:, 1]
    np.testing.assert_allclose(
        compile_pipeline(pipeline).predict(records), expected, rtol=0, atol=TIGHT
    )
