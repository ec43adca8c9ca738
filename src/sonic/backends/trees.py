"""Tree models laid out as Triton's FIL backend expects (``backend: "fil"``).

Files: ``xgboost.json`` (``model_type: xgboost_json``), ``xgboost.model``
(``xgboost``, the binary format) or ``model.txt`` (``lightgbm``).  Parameters
as in FIL: ``model_type``; ``output_class`` (``true`` for classifiers);
``predict_proba`` (class probabilities, else the predicted class); and
``threshold`` for binary classifiers (default 0.5).  The input is one FP32
tensor of features per row; the output is ``[1]`` (regression or class) or
``[n_classes]`` (probabilities).  XGBoost and LightGBM are the ``trees`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tritonclient.grpc import model_config_pb2 as mc

from sonic.backends.base import BackendInstance, InstancePlacement, version_file
from sonic.errors import ModelConfigError
from sonic.repository.autocomplete import IOSpec

FILES = {"xgboost_json": "xgboost.json", "xgboost": "xgboost.model", "lightgbm": "model.txt"}


def _param(config: mc.ModelConfig, key: str, default: str) -> str:
    return config.parameters[key].string_value if key in config.parameters else default


def _flag(config: mc.ModelConfig, key: str) -> bool:
    return _param(config, key, "false").strip().lower() in ("true", "1", "yes")


class TreeInstance(BackendInstance):
    backend_name = "fil"
    platforms = ()
    default_filename = "xgboost.json"
    platform = ""
    inline_ok = True

    @classmethod
    def model_path(cls, config: mc.ModelConfig, version_dir: Path) -> Path:
        kind = _param(config, "model_type", "")
        name = config.default_model_filename or FILES.get(kind, "")
        if not name:  # no model_type: take whichever FIL file is present
            name = next(
                (f for f in FILES.values() if (version_dir / f).exists()), cls.default_filename
            )
        return version_file(config, version_dir, name)

    def __init__(
        self, model: str, config: mc.ModelConfig, version_dir: Path, placement: InstancePlacement
    ) -> None:
        super().__init__(model, config, version_dir, placement)
        path = self.model_path(config, version_dir)
        kind = _param(
            config, "model_type", next((k for k, f in FILES.items() if f == path.name), "")
        )
        if kind not in FILES:
            raise ModelConfigError(
                model, "parameters[model_type]",
                f"'{kind}' is not supported; use one of {', '.join(FILES)}",
            )  # fmt: skip
        self.require_model_file()
        threads = int(_param(config, "nthread", "0") or 0)
        self.kind = kind
        self.output_class = _flag(config, "output_class")
        self.predict_proba = _flag(config, "predict_proba")
        self.threshold = float(_param(config, "threshold", "0.5"))
        try:
            if kind == "lightgbm":
                import lightgbm

                self.booster = lightgbm.Booster(model_file=str(path))
                self.n_features = self.booster.num_feature()
                self.n_classes = self.booster._Booster__num_class
                self._threads = {"num_threads": threads} if threads else {}
            else:
                import xgboost

                self.booster = xgboost.Booster()
                # From bytes, XGBoost detects JSON, UBJSON or the old binary format
                # itself instead of guessing from the file name (xgboost.model).
                self.booster.load_model(bytearray(path.read_bytes()))
                if threads:
                    self.booster.set_param({"nthread": threads})
                self.n_features = self.booster.num_features()
                learner = json.loads(self.booster.save_config())["learner"]
                self.n_classes = max(int(learner["learner_model_param"]["num_class"]), 1)
        except ModuleNotFoundError as err:
            raise ModelConfigError(
                model, "backend", f"{err.name} is needed: pip install 'sonic-inference[trees]'"
            ) from err
        except Exception as err:
            raise ModelConfigError(
                model, path.name, f"cannot load the {kind} model: {err}"
            ) from err
        if not config.input or not config.output:
            raise ModelConfigError(
                model, "input" if not config.input else "output",
                "FIL models need one input (features) and one output listed in config.pbtxt",
            )  # fmt: skip
        self._input = config.input[0].name

    def _out_width(self) -> int:
        if self.output_class and self.predict_proba:
            return max(self.n_classes, 2)
        return 1

    def signature(self) -> tuple[list[IOSpec], list[IOSpec]]:
        batch = (-1,) if self.config.max_batch_size > 0 else ()
        return (
            [IOSpec(self._input, "FP32", (*batch, self.n_features))],
            [IOSpec(self.config.output[0].name, "FP32", (*batch, self._out_width()))],
        )

    def _raw(self, x: np.ndarray) -> np.ndarray:
        if self.kind == "lightgbm":
            return np.asarray(self.booster.predict(x, **self._threads))
        return np.asarray(self.booster.inplace_predict(x))

    def execute(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        x = np.asarray(inputs[self._input], dtype=np.float32)
        y = self._raw(x.reshape(len(x), -1))
        if self.output_class:
            probs = y if y.ndim == 2 else np.stack([1.0 - y, y], axis=1)
            if self.predict_proba:
                result = probs
            elif probs.shape[1] == 2:
                result = (probs[:, 1] > self.threshold).astype(np.float32)[:, None]
            else:
                result = np.argmax(probs, axis=1).astype(np.float32)[:, None]
        else:
            result = y.reshape(len(x), -1)
        return {name: result.astype(np.float32) for name in outputs}
