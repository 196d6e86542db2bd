"""What the command-line client shows while it works, on stderr.

On a terminal: progress bars (tqdm, Debian's ``python3-tqdm``), one for the uploads (images
acknowledged) and one per job, fed by the server's progress messages (its fraction and text).
Elsewhere (a log file, a pipe, CI): one plain line per step instead of bars that would fill the
log with carriage returns. Quiet: nothing.
"""
import sys


class Display:
    """Progress of one CLI run. ``mode`` is ``"bar"``, ``"lines"`` or ``"quiet"``; ``"auto"``
    picks bars when ``stream`` is a terminal and tqdm is installed, lines otherwise."""

    def __init__(self, mode="auto", stream=None):
        self.stream = stream or sys.stderr
        self._tqdm = None
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        if mode == "bar":
            try:
                from tqdm import tqdm
                self._tqdm = tqdm
            except ImportError:
                mode = "lines"
        self.mode = mode
        self._bar = None
        self._last_line = None

    def note(self, text):
        """A line for the user (not an error): shown unless quiet, above any bar."""
        if self.mode == "quiet":
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    # ---- uploads -------------------------------------------------------------------------

    def upload_start(self, total):
        if self.mode == "bar":
            self._bar = self._tqdm(total=total, desc="uploading", unit="img", file=self.stream, leave=False,
                                   dynamic_ncols=True)

    def upload_done(self, index, total, name, ack):
        """Image ``index`` (1-based) of ``total`` was acknowledged."""
        if self.mode == "bar":
            self._bar.update(1)
        elif self.mode == "lines":
            shown = f" ({name})" if name else ""
            print(f"uploaded {index}/{total}{shown} -> {ack.image_path}, session holds {ack.image_count}",
                  file=self.stream, flush=True)

    # ---- jobs ----------------------------------------------------------------------------

    def job_start(self, what):
        self.close()
        if self.mode == "bar":
            self._bar = self._tqdm(total=100, desc=what, file=self.stream, leave=False, dynamic_ncols=True,
                                   bar_format="{desc:<40.40} |{bar}| {percentage:3.0f}% [{elapsed}]")

    def job_progress(self, p):
        """One server progress message (:class:`da3client.protocol.Progress`)."""
        if self.mode == "bar":
            # The server's fraction never goes backwards within a job; set it rather than add.
            self._bar.n = round(p.progress * 100, 1)
            self._bar.set_description_str(p.message or p.stage, refresh=False)
            self._bar.refresh()
        elif self.mode == "lines":
            line = f"[{p.stage}] {p.progress * 100:3.0f}% {p.message}"
            if line != self._last_line:
                print(line, file=self.stream, flush=True)
                self._last_line = line

    def job_done(self, result):
        """The job's result arrived: the bar shows it full, then goes."""
        if self.mode == "bar" and self._bar is not None:
            self._bar.n = 100
            self._bar.set_description_str(f"{result.kind}: {result.image_count} images", refresh=False)
            self._bar.refresh()
        self.close()

    def close(self):
        """Removes the current bar (before an error or the summary is printed)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
