"""benchmarks/covariance.py: its fits recover the floor and the scale that errors were drawn with,
read the two evaluations of a case back in one order, and leave out queries without a covariance."""

import numpy as np

from segloc.geometry.pose import perturb_world_from_cam
from segloc.geometry.transforms import Rigid3


def random_covariances(rng: np.random.Generator, count: int, scale: float) -> np.ndarray:
    basis = rng.normal(size=(count, 6, 6)) * scale
    return basis @ np.swapaxes(basis, 1, 2) + np.eye(6) * scale**2 * 0.1


def test_fits_recover_the_floor_and_the_scale_errors_were_drawn_with(load_benchmark):
    benchmark = load_benchmark("covariance")
    rng = np.random.default_rng(0)
    count = 4000
    floor_0 = random_covariances(rng, count, 0.01)
    shared = random_covariances(rng, count, 0.05)  # M: the shared-error term at 1 px
    true_floor = 0.4
    truth = floor_0 + true_floor**2 * shared
    errors = np.einsum("nij,nj->ni", np.linalg.cholesky(truth), rng.normal(size=(count, 6)))
    case = benchmark.Case(errors, floor_0, floor_0 + shared)
    fitted = benchmark.fit_parameter([case], "floor")
    median_fit = benchmark.fit_parameter([case], "floor", 0.5, benchmark.CHI2_6DOF_MEDIAN)
    assert abs(fitted - true_floor) < 0.05 and abs(median_fit - true_floor) < 0.05
    statistics = benchmark.statistics(case, case.model("floor", fitted))
    assert abs(statistics["coverage_95"] - 0.95) < 0.01
    # Errors drawn from 9 C0: the scale model finds 9.
    scaled = benchmark.Case(np.einsum("nij,nj->ni", np.linalg.cholesky(9.0 * floor_0), rng.normal(size=(count, 6))), floor_0, truth)
    assert abs(benchmark.fit_parameter([scaled], "scale") - 9.0) < 0.9
    assert benchmark.fit_parameter([benchmark.Case(np.zeros((0, 6)), np.zeros((0, 6, 6)), np.zeros((0, 6, 6)))], "floor") is None


def test_read_case_pairs_the_queries_of_both_evaluations(load_benchmark):
    benchmark = load_benchmark("covariance")
    truth = Rigid3(np.array([1.0, 0.1, -0.2, 0.05]), np.array([0.5, -1.0, 2.0]))
    delta = np.array([0.01, -0.02, 0.03, 0.001, 0.002, -0.003])
    estimate = perturb_world_from_cam(truth, -delta)

    def pose(value):
        return {"quat_wxyz": value.quat_wxyz.tolist(), "translation": value.translation.tolist()}

    def record(name, covariance):
        return {
            "name": name,
            "cam_from_world_gt": pose(truth),
            "cam_from_world_est": pose(estimate),
            "covariance": None if covariance is None else covariance.tolist(),
        }

    first = [record("b", np.eye(6)), record("a", 2 * np.eye(6)), record("failed", None)]
    second = [record("a", 3 * np.eye(6)), record("b", 4 * np.eye(6)), record("only_here", np.eye(6))]
    case = benchmark.read_case([{"records": first}, {"records": second}])
    assert len(case.errors) == 2
    np.testing.assert_allclose(case.floor_0[:, 0, 0], [2.0, 1.0])  # sorted by name: a, b
    np.testing.assert_allclose(case.floor_1[:, 0, 0], [3.0, 4.0])
    np.testing.assert_allclose(case.errors[0], delta, atol=1e-6)
