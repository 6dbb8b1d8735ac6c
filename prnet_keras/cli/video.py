"""The video and webcam part of prnet-predict / load_model.py (``--video``, ``--webcam``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from prnet_keras.errors import InputError


def add_video_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("video and webcam")
    g.add_argument("--overlay", default="landmarks,pose",
                   help="what the annotated video / window shows: comma list of landmarks,pose,mesh,depth, or none")
    g.add_argument("--every", type=int, default=1, help="--outputs for every N-th frame only")
    g.add_argument("--redetect-every", type=int, default=10,
                   help="run the detector every N frames while faces are tracked (0: only when a track is lost)")
    g.add_argument("--no-track", action="store_true",
                   help="detect on every frame instead of cropping from the previous landmarks (slower)")
    g.add_argument("--no-smooth", action="store_true", help="no temporal smoothing of landmarks, mesh and pose")
    g.add_argument("--smooth-min-cutoff", type=float, default=1.0,
                   help="One Euro filter: cut-off frequency at rest in Hz (lower: steadier, more lag)")
    g.add_argument("--smooth-beta", type=float, default=0.5,
                   help="One Euro filter: speed coefficient, per face size (higher: less lag in fast motion)")
    g.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")


def run_video(args: argparse.Namespace, outputs: list[str], opts: dict[str, Any],
              make_predictor: Callable[[str], Any]) -> int:
    """--video FILE or --webcam [INDEX]: check the input and options, load the model
    (``make_predictor(detector)``), run the stream. ``outputs``: the parsed --outputs;
    ``opts``: the resolved inference options (detector, thresholds, max_image_pixels)."""
    from prnet_keras.inference.smoothing import OneEuroParams
    from prnet_keras.inference.video import parse_overlays, run_stream
    from prnet_keras.inference.videoio import VideoSource

    overlays = parse_overlays(args.overlay)
    if args.every < 1:
        raise InputError(f"--every: expected >= 1, got {args.every}")
    if args.redetect_every < 0:
        raise InputError(f"--redetect-every: expected >= 0, got {args.redetect_every}")
    if args.max_frames is not None and args.max_frames < 1:
        raise InputError(f"--max-frames: expected >= 1, got {args.max_frames}")
    detector_name = opts["detector"]
    if args.bbox is not None or detector_name == "none":
        raise InputError("--video/--webcam: faces are found by a detector; --bbox and --detector none apply to images")
    smoothing = None if args.no_smooth else OneEuroParams(args.smooth_min_cutoff, args.smooth_beta)
    if args.webcam is not None:
        from prnet_keras.viz.window import FrameWindow

        FrameWindow.check_display()  # no display: one error line before the model loads
    # bad input: one line before the model loads
    source = VideoSource(args.webcam if args.webcam is not None else args.video, opts["max_image_pixels"])
    try:
        predictor = make_predictor(detector_name)
        from prnet_keras.inference.detect import get_detector
        from prnet_keras.inference.tracking import FaceTracker

        detector = get_detector(detector_name, opts["min_confidence"], opts["min_face_size"], predictor.detector_engine)
        tracker = FaceTracker(predictor, detector, redetect_every=args.redetect_every, tracking=not args.no_track,
                              smoothing=smoothing)
        log = lambda m: print(m, file=sys.stderr)  # noqa: E731
        if args.webcam is not None:
            window = FrameWindow(f"prnet-keras: camera {args.webcam} (q quits, s saves the meshes)")
            try:
                summary = run_stream(source, tracker, args.output, None, overlays, outputs, args.every,
                                     display=window.show, log=log, max_frames=args.max_frames)
            finally:
                window.close()
        else:
            video_path = args.output / f"{args.video.stem}_annotated.mp4"
            summary = run_stream(source, tracker, args.output, video_path, overlays, outputs, args.every,
                                 progress=not args.no_progress, log=log, max_frames=args.max_frames)
    finally:
        source.close()
    print(f"{summary['frames']} frame(s), {summary['faces']} face(s) tracked, "
          f"{summary['detector_runs']} detector run(s), {summary['fps']:.1f} fps; "
          f"{len(summary['written']) + len(summary['snapshots'])} mesh file(s); output in {args.output}")
    return 0
