"""Progress of one run: a bar while it works (embeddings, with fetches and tiles as they go), and one summary
line in its place when it is done.

`progress=True` shows it always, `False` never; `None` (the default) shows it only on a terminal and only for
work that lasts longer than AUTO_DELAY_S, so quick calls and logs stay silent. The bar and the summary go to
stderr, never to stdout (the CLI may be writing data there).
"""

from __future__ import annotations

import time

AUTO_DELAY_S = 2.0  # progress=None: nothing shows for work shorter than this
REDRAW_S = 0.1  # the bar redraws at most this often


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('ch') else 's'}"


class RunProgress:
    """The counters of one `runner.run` and the bar that shows them."""

    def __init__(self, total: int, desc: str, progress: bool | None, fetches: int) -> None:
        from tqdm.auto import tqdm

        self.total, self.desc, self.fetches = total, desc, fetches
        self.done = self.failed = self.fetched = self.tiles = self.tiles_done = 0
        self.t0 = time.monotonic()
        self.bar = tqdm(total=total, unit="emb", desc=desc, leave=True,
                        disable={None: None, True: False, False: True}[progress],
                        delay=0.0 if progress else AUTO_DELAY_S, mininterval=REDRAW_S)

    def fetch_done(self) -> None:
        self.fetched += 1
        self._show()

    def tiles_planned(self, n: int) -> None:
        self.tiles += n
        self._show()

    def tile_done(self) -> None:
        self.tiles_done += 1
        self._show()

    def item_done(self, failed: bool) -> None:
        self.done += 1
        self.failed += failed
        self._show(advance=1)

    def _show(self, advance: int = 0) -> None:
        if self.bar.disable:
            return
        parts = [f"fetched {self.fetched}/{self.fetches}"]
        if self.tiles:
            parts.append(f"tiles {self.tiles_done}/{self.tiles}")
        if self.failed:
            parts.append(f"{self.failed} failed")
        self.bar.set_postfix_str(", ".join(parts), refresh=False)
        self.bar.update(advance)  # tqdm redraws at most every REDRAW_S, and not before its delay

    def summary(self) -> str:
        ok = self.done - self.failed
        parts = [f"{ok} of {_plural(self.total, 'embedding')}"]
        if self.failed:
            parts.append(f"{self.failed} failed")
        if self.tiles:
            parts.append(_plural(self.tiles_done, "tile"))
        parts.append(_plural(self.fetched, "fetch"))
        return f"{self.desc}: {', '.join(parts)} in {time.monotonic() - self.t0:.1f} s"

    def close(self) -> None:
        """Replace the bar by the summary line; nothing when the bar never showed."""
        if not self.bar.disable:
            self.bar.bar_format = "{desc}"
            self.bar.set_description_str(self.summary(), refresh=False)
        self.bar.close()
