import subprocess
import sys


def run(*args):
    return subprocess.run([sys.executable, "-m", "liverseg_monai", *args], capture_output=True, text=True)


def test_synth_writes_a_dataset(tmp_path):
    proc = run("synth", "lits", "--out", str(tmp_path), "--n", "3", "--size", "16,16,8")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "dataset.json").is_file() and (tmp_path / "volume-2.nii.gz").is_file()


def test_errors_are_one_clear_line(tmp_path):
    proc = run("prepare", "lits", "--src", str(tmp_path / "nope"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and str(tmp_path / "nope") in proc.stderr
    bad = run("synth", "lits", "--out", str(tmp_path), "--no-such-option", "1")
    assert bad.returncode == 2 and "no_such_option" in bad.stderr
