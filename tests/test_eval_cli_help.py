"""What ``tttlrm-eval --help`` and its error messages tell a user to type must be accepted by ``tttlrm-eval``.

tyro shows a ``bool`` field with a default as a flag pair (``--splatfacto.enabled`` / ``--splatfacto.no-enabled``)
and refuses ``--splatfacto.enabled False``; the help's examples are hand-written text, so they are parsed here.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex

import pytest
import tyro

from tttlrm_ns.eval.cli import EvalConfig, __doc__ as CLI_DOC


def _help_text() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        tyro.cli(EvalConfig, args=["--help"], description=CLI_DOC)
    return out.getvalue()


def _example_commands(text: str) -> list[list[str]]:
    """The ``tttlrm-eval ...`` command lines of the help (backslash continuations joined), as argument lists."""
    joined = re.sub(r"\\\s*\n\s*", " ", text)
    return [shlex.split(line.strip())[1:] for line in joined.splitlines() if line.strip().startswith("tttlrm-eval ")]


def test_help_examples_parse():
    text = _help_text()
    commands = _example_commands(text)
    assert len(commands) == 3, text[:2000]
    parsed = [tyro.cli(EvalConfig, args=args) for args in commands]
    assert [str(c.scenes[0]) for c in parsed] == ["tttlrm_ns/assets/sample_scene", "path/to/mydesk",
                                                   "path/to/gso_toy"]
    obj = parsed[2]  # the example that turns the splatfacto baseline off
    assert obj.method == "tttlrm-object" and obj.splatfacto.enabled is False
    assert parsed[1].refine_steps == 10 and parsed[1].splatfacto.steps == 1500
    # The option list shows the flag pair, and the refused "--x False" form appears nowhere.
    assert "--splatfacto.no-enabled" in text and "enabled False" not in text


def test_refused_form_is_refused():
    """Guards the premise of the test above: if tyro ever accepts the value form, the help may show either."""
    with contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit):
        tyro.cli(EvalConfig, args=["x", "--splatfacto.enabled", "False"])


def test_error_message_flag_parses(tmp_path):
    """The splatfacto baseline on a non-opencv scene stops with a message naming the flag that turns it off."""
    from tttlrm_ns.eval.runner import make_dataparser

    with pytest.raises(ValueError, match="opencv-cameras dataparser") as e:
        make_dataparser(EvalConfig(dataparser="nerfstudio-data"), tmp_path, train_frames=[1, 2])
    (flag,) = re.findall(r"--splatfacto\.\S+", str(e.value))
    assert tyro.cli(EvalConfig, args=[str(tmp_path), flag]).splatfacto.enabled is False
