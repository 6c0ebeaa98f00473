"""The documentation stays true to the code: every option the binaries know is in the
README's configuration table, exactly as `--config-table` prints it."""
import os
import subprocess

from conftest import BIN, ROOT


def test_readme_configuration_table_matches_the_option_table():
    out = subprocess.run([os.path.join(BIN, "agentbus-ingress"), "--config-table"],
                         capture_output=True, text=True, check=True).stdout
    readme = open(os.path.join(ROOT, "README.md")).read()
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert len(rows) > 20
    missing = [row for row in rows if row not in readme]
    assert not missing, "README.md lacks (or has another version of) these rows:\n" + "\n".join(missing)
