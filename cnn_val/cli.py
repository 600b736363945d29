"""The command-line entry points' shared wrapper: a user's mistake is one clear message, not a traceback.

    if __name__ == "__main__":
      cli.run(main)

`run` is absl's `app.run` with three differences: a flag that cannot be parsed (a misspelt `--config.FIELD`,
a value of the wrong type, a missing config file) prints one line naming the flag and exits 2, the exit code
for usage errors; the errors a user's input causes (`USER_ERRORS`: ValueError, FileNotFoundError; their
messages name the field or file and what to do) print `Error: ...` and exit 2 from `main` too; other OS
errors (a full disk) print one line and exit 1; `--help` exits 0. Set CNN_VAL_TRACEBACK=1 to see the
traceback behind a message.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Callable

from absl import app
from absl import flags

USAGE_ERROR = 2
USER_ERRORS = (ValueError, FileNotFoundError)
_HELP = ("--help", "-help", "-h", "--helpshort", "--helpfull", "--helpxml", "-?")


def machine_may_have_gpus() -> bool:
  """False only where TensorFlow can see no GPU: Linux without NVIDIA's driver or ROCm's device files. (Which
  GPUs a sweep's workers get is another question, with its own answer: `ablate.runner.have_gpus`, nvidia-smi.)"""
  if not sys.platform.startswith("linux"):
    return True  # no cheap way to tell (Apple's Metal plugin): assume there are
  return any(os.path.exists(p) for p in ("/proc/driver/nvidia", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd"))


_tensorflow_off_accelerators = False


def keep_tensorflow_off_accelerators() -> None:
  """tf.data only feeds the host: an entry point asks here that TensorFlow, wherever cnn_val imports it
  (`tensorflow()`), sees no GPU, so JAX gets all of their memory (TensorFlow would otherwise reserve most of
  it on first use). Nothing is imported here: a run on a prepared dataset never needs TensorFlow (the array
  cache, TensorBoard's own writer), and its import takes seconds (8-10 s on the 2-core CPU machines) that
  neither a run nor a mistake in the flags should wait for. Already imported, it is told at once."""
  global _tensorflow_off_accelerators
  _tensorflow_off_accelerators = True
  if "tensorflow" in sys.modules:
    _hide_gpus(sys.modules["tensorflow"])


def tensorflow():
  """TensorFlow, as cnn_val imports it (seconds, on first use): with the GPUs hidden from it where an entry point
  asked (`keep_tensorflow_off_accelerators`) and there may be GPUs (`machine_may_have_gpus`)."""
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  if _tensorflow_off_accelerators:
    _hide_gpus(tf)
  return tf


def _hide_gpus(tf) -> None:
  if not machine_may_have_gpus():
    return
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # TensorFlow's devices are set up already (code outside cnn_val used it): too late to hide
    pass


def _chain(error: BaseException) -> list[BaseException]:
  """config_flags wraps a KeyError in a KeyError in an AttributeError: the chain, outermost first."""
  chain = [error]
  while chain[-1].__context__ is not None and chain[-1].__context__ not in chain:
    chain.append(chain[-1].__context__)
  return chain


def _message(error: BaseException) -> str:
  """An exception's text without the quoting KeyError adds (str(KeyError('x')) is "'x'")."""
  if isinstance(error, KeyError) and error.args:
    return " ".join(str(error.args[0]).strip("'\"").split())
  return " ".join(str(error).split()).rstrip(".")


def flag_error(argv: list[str], error: BaseException) -> str:
  """One line for a flag that failed to parse, naming the flag as the user wrote it."""
  if isinstance(error, flags.Error):
    return f"{_message(error)}. Pass --help for the flags."
  chain = _chain(error)
  inner = chain[-1]
  given = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
  if isinstance(inner, KeyError):  # an unknown config field
    missing = _message(inner)
    parts = next((g.split(".") for g in given if missing in g.split(".")[1:]), None)
    field = ".".join(parts[:parts.index(missing, 1) + 1]) if parts else f"--config.{missing}"
    suggestion = next((m.group(1) for m in (re.search(r'Did you mean "([^"]+)"', str(e)) for e in chain) if m),
                      None)
    return (f"{field}: the config has no field '{missing}'"
            + (f"; did you mean '{suggestion}'?" if suggestion else ".")
            + " Every field is listed, with its meaning, in configs/default.py.")
  return f"{_message(inner)} (in the flags {' '.join(argv[1:])}). Pass --help for the flags."


def _parse(argv: list[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except  (config_flags raises what its parsers raise)
    if os.environ.get("CNN_VAL_TRACEBACK"):
      raise
    print(f"Error: {flag_error(argv, e)}", file=sys.stderr)
    raise SystemExit(USAGE_ERROR) from None


def run(main: Callable[[list[str]], None]) -> None:
  """app.run(main) with clean usage and input errors (exit 2) and `--help` exiting 0."""
  def guarded(argv):
    try:
      return main(argv)
    except app.UsageError as e:  # absl would print the whole usage and exit 1
      print(f"Error: {e} Pass --help for the flags.", file=sys.stderr)
      raise SystemExit(USAGE_ERROR) from None
    except USER_ERRORS as e:
      if os.environ.get("CNN_VAL_TRACEBACK"):
        raise
      print(f"Error: {e}", file=sys.stderr)
      raise SystemExit(USAGE_ERROR) from None
    except OSError as e:  # config_flags loads --config lazily; otherwise the machine (a full disk, permissions)
      if os.environ.get("CNN_VAL_TRACEBACK"):
        raise
      text = " ".join(str(e).split())
      config_file = re.search(r"Failed loading config file .*?Attempted \[[^]]*\]: (\S+) (.*)$", text)
      if "Failed loading config file" in text:
        where = f"{config_file.group(1)}: {config_file.group(2)}" if config_file else text
        print(f"Error: --config could not be loaded ({where}). Pass the path of a config file, e.g. "
              f"--config=configs/default.py.", file=sys.stderr)
        raise SystemExit(USAGE_ERROR) from None
      print(f"Error: {text}. Fix the cause and run the same command again: a run resumes from its latest "
            f"checkpoint.", file=sys.stderr)
      raise SystemExit(1) from None
  try:
    app.run(guarded, flags_parser=_parse)
  except SystemExit as e:
    if e.code == 1 and any(a in _HELP for a in sys.argv[1:]):  # absl exits 1 after printing the help
      raise SystemExit(0) from None
    raise
