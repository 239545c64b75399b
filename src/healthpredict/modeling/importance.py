"""Global feature importance of a fitted pipeline, by the feature names the model saw."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import CalibratedClassifierCV
from sklearn.pipeline import Pipeline


def feature_importance(pipeline: Pipeline) -> pd.Series:
    """Importance per model feature, largest first.

    LightGBM: total split gain (averaged over members if the calibrator is an ensemble). Logistic
    regression: absolute coefficient on the standardised features.
    """
    model = pipeline[-1]
    if isinstance(model, CalibratedClassifierCV):
        boosters = [member.estimator for member in model.calibrated_classifiers_]
        names = boosters[0].feature_name_
        gains = np.mean([b.booster_.feature_importance("gain") for b in boosters], axis=0)
        importance = pd.Series(gains, index=names)
    else:
        importance = pd.Series(np.abs(model.coef_[0]), index=model.feature_names_in_)
    return importance.sort_values(ascending=False)
