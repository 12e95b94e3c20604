"""The commands' edge (runtimes/clikit.py): a signal ends a command with 128+N even when a library's cleanup replaces
the interrupt with its own error on the way out (torch.export, stopped inside a dispatch mode, raises "Trying to pop
empty mode stack" from its `finally`) and a wrapper turns that into a user error."""

import os
import signal

import pytest

from runtimes import clikit


class LoweringError(Exception):
    pass


@pytest.fixture
def handlers(monkeypatch):
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGHUP)}
    monkeypatch.setattr(clikit, "_received", [])
    clikit.install_signal_handlers()
    yield
    for s, h in old.items():
        signal.signal(s, h)


class _ModeStack:
    """Like torch's mode stack: its own cleanup fails when the body is torn down half-way."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        raise AssertionError("Trying to pop empty mode stack")


def _lowering(sig, keep_chain=True):
    def body():
        try:
            with _ModeStack():
                os.kill(os.getpid(), sig)  # the handler runs here and raises Interrupted
                raise RuntimeError("the signal was not delivered")
        except Exception as e:
            if keep_chain:
                raise LoweringError(f"lowering failed: {type(e).__name__}: {e}") from e
            raise LoweringError(f"lowering failed: {type(e).__name__}: {e}") from None
    return body


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("keep_chain", [True, False])
def test_a_signal_under_a_library_error_still_exits_128_plus_n(handlers, capsys, sig, keep_chain):
    rc = clikit.run_main("prog", _lowering(sig, keep_chain), debug=False, user_errors=(LoweringError,))
    err = capsys.readouterr().err
    assert rc == 128 + sig
    assert err == f"prog: interrupted ({signal.Signals(sig).name}); nothing was written\n"


def test_without_a_signal_errors_keep_their_exit_codes(handlers, capsys):
    def user():
        raise LoweringError("bad input")

    def bug():
        raise AssertionError("Trying to pop empty mode stack")

    assert clikit.run_main("prog", user, debug=False, user_errors=(LoweringError,)) == clikit.EXIT_USER
    assert capsys.readouterr().err == "prog: error: bad input\n"
    assert clikit.run_main("prog", bug, debug=False, user_errors=(LoweringError,)) == clikit.EXIT_INTERNAL
    assert "internal error: AssertionError" in capsys.readouterr().err


def test_ctrl_c_in_the_chain_is_130(capsys):
    def body():
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as e:
            raise LoweringError("wrapped") from e

    assert clikit.run_main("prog", body, debug=False, user_errors=(LoweringError,)) == 130
    assert "interrupted (SIGINT)" in capsys.readouterr().err


def test_system_exit_passes_through(handlers):
    with pytest.raises(SystemExit):
        clikit.run_main("prog", lambda: (_ for _ in ()).throw(SystemExit(2)), debug=False, user_errors=())


def test_the_gguf_readers_own_bar_stays_off_the_terminal_unless_debug(capsys):
    """transformers' GGUF reader draws a tqdm.auto bar that its verbosity settings do not reach; the exporter
    silences it while dequantizing and puts it back after."""
    import logging

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    from exporter import load

    original = gguf_utils.tqdm
    load.log.setLevel(logging.INFO)
    with load._quiet_gguf_bar():
        list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    assert "de-quantizing" not in capsys.readouterr().err
    assert gguf_utils.tqdm is original
    load.log.setLevel(logging.DEBUG)
    try:
        with load._quiet_gguf_bar():
            list(gguf_utils.tqdm(range(3), desc="Converting and de-quantizing GGUF tensors..."))
    finally:
        load.log.setLevel(logging.NOTSET)
    assert "de-quantizing" in capsys.readouterr().err
