"""The README's first-screen commands stay true: CI runs exactly its test command; configs it names exist."""

import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _read(path):
  with open(os.path.join(REPO, path)) as f:
    return f.read()


def test_ci_runs_exactly_the_readme_test_command():
  commands = re.findall(r"^    (apt-get update .*)$", _read("README.md"), flags=re.M)
  assert len(commands) == 2, "the README's first screen gives two set-up commands"
  main_cmd, test_cmd = commands
  assert "cnn_val.main --config=configs/default.py" in main_cmd and "pytest" in test_cmd
  ci_lines = [line.strip() for line in _read(".ci/run").splitlines()]
  assert test_cmd in ci_lines


def test_every_config_in_the_readme_exists():
  for name in set(re.findall(r"`(\w+\.py)`", _read("README.md"))):
    assert os.path.exists(os.path.join(REPO, "configs", name)), name


def test_the_library_example_runs():
  text = _read("README.md")
  section = text[text.index("## Use cnn_val from your own code"):]
  code = re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)  # pylint: disable=exec-used
  assert namespace["metrics"]["count"] == 32 and namespace["state"].step == 3
