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


def test_the_record_holds_both_runs_and_renders_the_sentence(load_script, tmp_path):
    script = load_script("eval/test_durations.py")
    for name, time, skipped in (("new", "300.5", "1"), ("old", "601.0", "0")):
        (tmp_path / f"{name}.xml").write_text(
            f'<testsuites><testsuite name="pytest" tests="3" failures="0" errors="0" skipped="{skipped}" time="{time}">'
            '<testcase classname="tests.unit.test_a" name="t1" time="1.5"/>'
            '<testcase classname="tests.unit.test_a" name="t2" time="0.5"/>'
            '<testcase classname="tests.unit.test_b" name="t3" time="3.25"/>'
            '</testsuite></testsuites>')
    out = tmp_path / "make_test.json"
    assert script.main([str(tmp_path / "new.xml"), "--against", str(tmp_path / "old.xml"), "--out", str(out),
                        "--commit", "a" * 40, "--against-commit", "b" * 40]) == 0
    import json
    record = json.loads(out.read_text())
    assert record["run"]["suite_seconds"] == 300.5 and record["run"]["passed"] == 2 and record["run"]["skipped"] == 1
    assert record["before"]["passed"] == 3 and record["ratio_suite_seconds"] == round(300.5 / 601.0, 3)
    assert list(record["run"]["seconds_per_file"]) == ["tests/unit/test_b.py", "tests/unit/test_a.py"]
    text = script.readme_table(record)
    assert "(2 pytest workers) took 5.0 minutes" in text and "against 10.0 minutes for bbbbbbb (one process)" in text
