"""A small regression study: synthetic data, polynomial features, a ridge-penalty sweep, a report,
and the instrument's noise floor measured from a data file in the repository.

raw_data -> features -> split -> fit (alpha swept) -> report
                   features, split -> baseline -> report
                   features, split -> bootstrap (an incrementing cell: resampled baseline)
measurements (resource cell over data/measurements.csv) -> calibration -> report

Editing data/measurements.csv is a new release of `measurements`: only `calibration` and `report`
are recomputed; the old results stay stored and addressable with `release(pin)`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from further_dagster import (
    VAR,
    Cell,
    IncrementingCell,
    Increments,
    Project,
    ProjectParams,
    Req,
    ResourceCell,
    SlurmSpec,
    Specs,
    file_release,
)

DATA_DIR = Path(__file__).resolve().parent / "data"


class ExampleParams(ProjectParams):
    seed: int = 0


example = Project(
    "example",
    version="1.0",
    description="Ridge regression on synthetic data with a penalty sweep.",
    params=ExampleParams,
)

ALPHAS = [0.01, 0.1, 1.0, 10.0]


class RawData(Cell, project=example):
    """Synthetic linear data with Gaussian noise."""

    logic_version = 1

    class Specs(Specs):
        n_samples: int = 400
        n_features: int = 5
        noise: float = 0.5
        seed: int = 0

    project_params = ("seed",)
    contributions = {"X": np.ndarray, "y": np.ndarray, "true_coef": np.ndarray}
    # Used only in SLURM mode (tag further/mode=SLURM, or build_definitions(mode="SLURM")).
    slurm = SlurmSpec(partition="debug", mem_gb=1)

    def make(self):
        rng = np.random.default_rng(self.specs.seed)
        X = rng.normal(size=(self.specs.n_samples, self.specs.n_features))
        coef = rng.normal(size=self.specs.n_features)
        y = X @ coef + self.specs.noise * rng.normal(size=self.specs.n_samples)
        self.log.info("generated %d samples", self.specs.n_samples)
        return {"X": X, "y": y, "true_coef": coef}


class Features(Cell, project=example):
    """Polynomial features (no cross terms), optionally standardized."""

    logic_version = 1

    class Specs(Specs):
        degree: int = 2
        standardize: bool = True

    req_cells = {"raw": Req("raw_data")}
    contributions = {"table": pd.DataFrame, "target": np.ndarray}

    def make(self):
        X = self.inputs["raw"].X
        columns = {}
        for d in range(1, self.specs.degree + 1):
            for j in range(X.shape[1]):
                columns[f"x{j}^{d}"] = X[:, j] ** d
        table = pd.DataFrame(columns)
        if self.specs.standardize:
            table = (table - table.mean()) / table.std(ddof=0)
        return {"table": table, "target": self.inputs["raw"].y}


class Split(Cell, project=example):
    """A random train/test split of the rows."""

    logic_version = 1

    class Specs(Specs):
        test_fraction: float = 0.25
        seed: int = 0

    project_params = ("seed",)
    req_cells = {"features": Req("features")}
    contributions = {"train_idx": np.ndarray, "test_idx": np.ndarray}

    def make(self):
        n = len(self.inputs["features"].table)
        order = np.random.default_rng(self.specs.seed + 1).permutation(n)
        n_test = int(round(n * self.specs.test_fraction))
        return {"train_idx": np.sort(order[n_test:]), "test_idx": np.sort(order[:n_test])}


def _rmse(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.sqrt(np.mean((y - pred) ** 2)))


class Fit(Cell, project=example):
    """Ridge regression with penalty alpha (closed form)."""

    logic_version = 1

    class Specs(Specs):
        alpha: float = 1.0

    req_cells = {"features": Req("features"), "split": Req("split")}
    contributions = {"weights": np.ndarray, "metrics": dict}

    # A GPU where there is a `gpu` partition, else the default partition without one.
    slurm = [SlurmSpec(partition="gpu", gpus=1, mem_gb=1), SlurmSpec(partition=None, gpus=0)]

    def make(self):
        table = self.inputs["features"].table.to_numpy()
        y = self.inputs["features"].target
        train, test = self.inputs["split"].train_idx, self.inputs["split"].test_idx
        A = table[train]
        w = np.linalg.solve(A.T @ A + self.specs.alpha * np.eye(A.shape[1]), A.T @ y[train])
        metrics = {
            "alpha": self.specs.alpha,
            "train_rmse": _rmse(y[train], A @ w),
            "test_rmse": _rmse(y[test], table[test] @ w),
        }
        self.log.info("alpha=%s test_rmse=%.4f", self.specs.alpha, metrics["test_rmse"])
        return {"weights": w, "metrics": metrics}


class Baseline(Cell, project=example):
    """Predict the training mean: the score every model must beat."""

    logic_version = 1
    req_cells = {"features": Req("features"), "split": Req("split")}
    contributions = {"metrics": dict}

    in_parallel = False  # too small to be worth a Slurm job: runs next to the run worker

    def make(self):
        y = self.inputs["features"].target
        train, test = self.inputs["split"].train_idx, self.inputs["split"].test_idx
        mean = float(y[train].mean())
        return {"metrics": {"test_rmse": _rmse(y[test], np.full(len(test), mean))}}


class Bootstrap(IncrementingCell, project=example):
    """The baseline's test RMSE, resampled: each increment adds one bootstrap replicate, so
    asking for more increments narrows the interval without redoing the stored ones."""

    logic_version = 1
    increments = Increments(at_least=5)  # a call or a run asks for more: Increments(more=20)
    req_cells = {"features": Req("features"), "split": Req("split")}
    contributions = {"rmses": list, "low": float, "high": float}

    def make_increment(self, previous):
        y = self.inputs["features"].target
        train, test = self.inputs["split"].train_idx, self.inputs["split"].test_idx
        sample = np.random.default_rng(self.increment).choice(test, size=len(test))
        rmse = _rmse(y[sample], np.full(len(sample), float(y[train].mean())))
        rmses = [*(previous.rmses if previous is not None else []), rmse]
        return {
            "rmses": rmses,
            "low": float(np.quantile(rmses, 0.05)),
            "high": float(np.quantile(rmses, 0.95)),
        }


class Measurements(ResourceCell, project=example):
    """Repeated readings of a reference standard, as committed in data/measurements.csv."""

    logic_version = 1

    class Specs(Specs):
        file: str = "measurements.csv"

    contributions = {"table": pd.DataFrame}

    @classmethod
    def get_release(cls, specs):
        # A small file: hash its content, so touching it or checking it out again is not a new
        # release. For large files use file_release(path), one stat (mtime and size).
        return file_release(DATA_DIR / specs.file, content=True)

    def make(self):
        table = pd.read_csv(DATA_DIR / self.specs.file)
        self.log.info("read %d readings (release %s)", len(table), self.release)
        return {"table": table}


class Calibration(Cell, project=example):
    """The instrument's noise floor: the spread of repeated readings of the reference."""

    logic_version = 1
    req_cells = {"measurements": Req("measurements")}
    contributions = {"noise_floor": float, "mean": float, "n": int}

    def make(self):
        readings = self.inputs["measurements"].table["reading"].to_numpy(dtype=float)
        return {
            "noise_floor": float(readings.std(ddof=1)),
            "mean": float(readings.mean()),
            "n": int(len(readings)),
        }


class Report(Cell, project=example):
    """The penalty sweep against the baseline and the measured noise floor, and the best alpha."""

    logic_version = 2
    req_cells = {
        "fits": Req("fit", alpha=VAR(ALPHAS)),
        "baseline": Req("baseline"),
        "calibration": Req("calibration"),
    }
    contributions = {"table": pd.DataFrame, "best": dict}

    # The high-priority partition where there is one (it preempts the others).
    slurm = [SlurmSpec(partition="high"), SlurmSpec(partition=None)]

    def make(self):
        rows = [fit.metrics for fit in self.inputs["fits"]]
        table = pd.DataFrame(rows).sort_values("alpha").reset_index(drop=True)
        table["beats_baseline"] = table["test_rmse"] < self.inputs["baseline"].metrics["test_rmse"]
        noise_floor = self.inputs["calibration"].noise_floor
        # a fit cannot meaningfully beat the noise of the instrument that measures the target
        table["at_noise_floor"] = table["test_rmse"] <= 1.1 * noise_floor
        best = table.loc[table["test_rmse"].idxmin()]
        return {
            "table": table,
            "best": {
                "alpha": float(best["alpha"]),
                "test_rmse": float(best["test_rmse"]),
                "noise_floor": noise_floor,
            },
        }
