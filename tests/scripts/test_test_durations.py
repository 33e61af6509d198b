"""eval/test_durations.py: per-file test time from a JUnit report (the fresh-clone records list it)."""


def test_per_file_sums_each_files_cases_and_compares_two_runs(load_script, tmp_path):
    script = load_script("eval/test_durations.py")
    report = tmp_path / "junit.xml"
    report.write_text('<testsuites><testsuite name="pytest">'
                      '<testcase classname="tests.test_a" name="t1" time="1.5"/>'
                      '<testcase classname="tests.test_a.TestGroup" name="t2" time="0.5"/>'
                      '<testcase classname="tests.test_b" name="t3" time="3.25"/>'
                      '</testsuite></testsuites>')
    assert script.per_file(str(report)) == {"tests/test_a.py": 2.0, "tests/test_b.py": 3.25}
    text = script.table({"tests/test_a.py": 4.0}, {"tests/test_a.py": 2.0})
    assert "4.00 s  tests/test_a.py   (before 2.00 s, 2.00x)" in text and "total over 1 files" in text
