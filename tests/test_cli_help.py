"""`hksan-keras --help` and `hksan-keras COMMAND --help` (in process: no subprocess)."""

import sys

import pytest

from hksan_keras import cli


def _run(monkeypatch, capsys, *argv):
    monkeypatch.setattr(sys, "argv", ["hksan-keras", *argv])
    with pytest.raises(SystemExit) as exit_:
        cli.run()
    return exit_.value.code, capsys.readouterr()


@pytest.mark.parametrize("flag", ["--help", "-h", "help"])
def test_help_lists_every_command_and_exits_0(monkeypatch, capsys, flag):
    code, out = _run(monkeypatch, capsys, flag)
    assert code == 0
    for command in cli.COMMANDS:
        assert f"  {command} " in out.out
    assert "COMMAND --help" in out.out


def test_a_commands_help_describes_each_of_its_flags(monkeypatch, capsys):
    code, out = _run(monkeypatch, capsys, "distill", "--help")
    assert code == 0
    assert out.out.startswith("usage: hksan-keras distill --config=FILE")
    for name in cli.COMMON_FLAGS + ["method"]:
        assert f"  --{name}: " in out.out
    assert "kd+ls" in out.out and "repeat this option" in out.out


def test_no_command_or_an_unknown_one_shows_the_commands_and_exits_2(monkeypatch, capsys):
    for argv in ([], ["distil"]):
        code, out = _run(monkeypatch, capsys, *argv)
        assert code == 2
        assert "Commands:" in out.err and "expected a command" in out.err
