import pytest

from nudgelib.tasks import problems


@pytest.fixture(scope="session")
def real_data():
    """Loader for real datasets; skips (with the variable to set) when none is reachable."""

    def load(name: str, split: str = "test", **kw):
        try:
            return problems.load_problems(name, split, **kw)
        except problems.DataNotFound as err:
            pytest.skip(f"real data not available: set {problems.DATA_ENV} to a folder with "
                        f"gsm8k/ and math500/ (CI uses ../shared/data). Details: {err}")

    return load


@pytest.fixture(scope="session")
def offline_model_dir():
    from nudgelib.policies.models import ModelNotAvailable, offline_model_path

    try:
        return offline_model_path()
    except ModelNotAvailable as err:
        pytest.skip(str(err))
