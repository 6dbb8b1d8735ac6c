"""A live window for a stream of RGB frames (the webcam view), in a child process.

The window is a Tk window (Python's own GUI toolkit: no OpenCV GUI build, which the
headless wheel lacks) run by a child Python process, like the other viewers: a GUI
toolkit never shares a process with TensorFlow, and a closed or crashed window cannot take
the caller down. Frames go to the child through its stdin (a small header, then the raw
RGB bytes); the keys pressed in the window come back through its stdout.

    window = FrameWindow("camera 0")
    keys = window.show(frame)      # RGB uint8 (H, W, 3); keys pressed since the last call
    window.close()

Closing the window counts as pressing ``q``.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading

import numpy as np

from prnet_keras.errors import InputError

_HEADER = struct.Struct("<II")


class FrameWindow:
    """Shows RGB uint8 frames in a window of the frames' size (see module doc)."""

    @staticmethod
    def check_display() -> None:
        """InputError when no window can be opened here (no display, or no Tk)."""
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            raise InputError("--webcam: no display to open a window on (DISPLAY is not set)")
        try:
            import tkinter  # noqa: F401
        except ImportError:
            raise InputError("--webcam: the live window needs Python's tkinter "
                             "(Debian/Ubuntu: apt-get install python3-tk)") from None

    def __init__(self, title: str = "prnet-keras", timeout_s: float = 30.0) -> None:
        self._proc = subprocess.Popen([sys.executable, "-m", "prnet_keras.viz.window", title], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self._keys: list[str] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_keys, daemon=True, name="prnet-window-keys")
        self._reader.start()
        if not self._ready.wait(timeout_s) or self._proc.poll() is not None:
            exited = self._proc.poll() is not None
            err = self._proc.stderr.read().decode("utf-8", "replace").strip().splitlines() if exited else []
            self.close()
            why = err[-1] if err else "the window process did not start"
            raise InputError(f"--webcam: cannot open a window ({why})")

    def _read_keys(self) -> None:
        for line in self._proc.stdout:
            text = line.decode("utf-8", "replace").rstrip("\n")
            if text == "ready":
                self._ready.set()
            elif text.startswith("key "):
                with self._lock:
                    self._keys.append(text[4:])
        with self._lock:
            self._keys.append("q")  # the window is gone
        self._ready.set()

    @property
    def closed(self) -> bool:
        return self._proc.poll() is not None

    def show(self, frame: np.ndarray) -> list[str]:
        """Display one RGB uint8 (H, W, 3) frame; returns the keys pressed since the last call."""
        a = np.ascontiguousarray(frame, np.uint8)
        if a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"window: expected an (H, W, 3) RGB frame, got shape {a.shape}")
        if not self.closed:
            try:
                self._proc.stdin.write(_HEADER.pack(a.shape[1], a.shape[0]) + a.tobytes())
                self._proc.stdin.flush()
            except (BrokenPipeError, OSError):
                pass
        with self._lock:
            keys, self._keys = self._keys, []
        return keys

    def close(self) -> None:
        try:
            if self._proc.stdin and not self._proc.stdin.closed:
                self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _child(title: str) -> int:  # pragma: no cover - runs in the window process
    import tkinter as tk

    root = tk.Tk()
    root.title(title)
    label = tk.Label(root, borderwidth=0, highlightthickness=0, padx=0, pady=0)
    label.pack()
    latest: list = [None]
    done = threading.Event()

    def read_frames() -> None:
        stream = sys.stdin.buffer
        while True:
            head = stream.read(_HEADER.size)
            if len(head) < _HEADER.size:
                break
            w, h = _HEADER.unpack(head)
            data = stream.read(w * h * 3)
            if len(data) < w * h * 3:
                break
            latest[0] = (w, h, data)
        done.set()

    def emit(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    def tick() -> None:
        if latest[0] is not None:
            w, h, data = latest[0]
            latest[0] = None
            image = tk.PhotoImage(data=b"P6 %d %d 255\n" % (w, h) + data, format="PPM")
            label.configure(image=image)
            label.image = image  # keep a reference: Tk shows nothing otherwise
        if done.is_set():
            root.destroy()
            return
        root.after(5, tick)

    root.bind("<Key>", lambda e: emit(f"key {e.char}") if e.char else None)
    root.protocol("WM_DELETE_WINDOW", lambda: (emit("key q"), root.destroy()))
    threading.Thread(target=read_frames, daemon=True).start()
    emit("ready")
    root.after(5, tick)
    root.mainloop()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child(sys.argv[1] if len(sys.argv) > 1 else "prnet-keras"))
