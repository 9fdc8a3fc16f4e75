"""Progress bars redraw rarely when the output is not a terminal (log files, CI), as usual in a terminal."""
import io

from memlens._progress import LOG_MININTERVAL_S, progress_bar


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_redirected_output_gets_a_long_redraw_interval():
    log = io.StringIO()
    bar = progress_bar(total=1000, file=log, desc="scoring")
    for _ in range(1000):
        bar.update(1)
    bar.close()
    assert bar.mininterval == LOG_MININTERVAL_S
    assert log.getvalue().count("scoring") <= 3  # the first draw and the final one, not a line per update


def test_terminal_keeps_tqdms_default_and_explicit_values_win():
    assert progress_bar(total=1, file=_Tty()).mininterval == 0.1
    assert progress_bar(total=1, file=io.StringIO(), mininterval=0.5).mininterval == 0.5
    assert list(progress_bar(range(3), file=io.StringIO(), disable=True)) == [0, 1, 2]
