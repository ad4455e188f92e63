"""The errors a user can act on: one line naming the file and the problem, and the exit code of a stop."""

import signal

from usema.errors import CheckpointError, DataError, Interrupted, UsemaError


def test_a_data_error_names_the_file_and_the_problem():
    err = DataError("data/case_1.nii.gz", "label and image differ in shape")
    assert str(err) == "data/case_1.nii.gz: label and image differ in shape"
    assert err.path.name == "case_1.nii.gz" and err.problem == "label and image differ in shape"
    assert str(DataError(None, "no cases")) == "no cases" and DataError(None, "x").path is None
    # what the CLI catches, and what older callers catching ValueError still catch
    assert isinstance(err, UsemaError) and isinstance(err, ValueError)
    assert issubclass(CheckpointError, UsemaError)


def test_a_stop_exits_with_the_shells_code_for_its_signal():
    assert Interrupted("saved", signal.SIGINT).exit_code == 130
    assert Interrupted("saved", signal.SIGTERM).exit_code == 143
    assert Interrupted("saved", None).exit_code == 1
    assert not isinstance(Interrupted("saved", None), UsemaError)  # a stop is not an error to report
