"""A built-in procedural video dataset: the toolkit's demo, its test data, and its proof that the shift works.

Each clip is a bright glyph on a dark, mildly cluttered background with per-frame noise. Some classes
are static glyphs; the others come in pairs that are the SAME frames played forwards or backwards
(left/right, down/up, grow/shrink). No single frame tells the two classes of a pair apart, so a
per-frame model averaged over time (shift="none") is at chance within each pair, while a model that
mixes neighbouring frames (TSM) can separate them. Class 0, `no_event`, is the scene with no sign in
it (background and camera noise), as in Bukva's label set.

Continuous videos are what a camera sees of a person signing: one scene (one background) for the whole
video, signs one after another with idle stretches of varied length between them, and the [begin, end)
frames of every sign: the ground truth of live recognition (runtime.live).

Everything is generated from (seed, split, index): no download, same clips and videos on every machine.
A video is drawn as a Scene: its layout first (cheap), then only the frames asked for, each with camera
noise of its own (keyed by the frame's number), since training keeps few of them (a window 26 of a video's
~100 frames, a clip 8 of its 12-24) and the noise is most of a frame's cost.
"""

from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

NO_EVENT = "no_event"  # class 0, as in Bukva: no sign is shown
STATIC_GLYPHS = ("circle", "cross", "ring", "diamond")
# (glyph, motion, forward class, backward class)
MOTION_PAIRS = (
    ("square", "horizontal", "move_right", "move_left"),
    ("triangle", "vertical", "move_down", "move_up"),
    ("plus", "scale", "grow", "shrink"),
)
SIGN_LABELS = [*STATIC_GLYPHS, *(name for pair in MOTION_PAIRS for name in pair[2:])]
SYNTHETIC_LABELS = [NO_EVENT, *SIGN_LABELS]
DIRECTION_PAIRS = [pair[2:] for pair in MOTION_PAIRS]
MIRRORED_CLASSES = [("move_right", "move_left")]  # what a horizontal flip turns into each other; every glyph is symmetric
SPLIT_STREAMS = {"train": 0, "val": 1, "test": 2}  # "test": continuous videos only, held out from choosing settings
VIDEO_STREAM = 1  # continuous videos draw from (seed, split, index, VIDEO_STREAM): apart from the clips
# A continuous video's timing, in frames of a 30 fps camera: a sign lasts 12-24 frames (as a clip), the idle
# stretches between signs 10-40 (0.3-1.3 s). The model sees every FRAME_STEP-th frame, as the Bukva demo.
VIDEO_FPS = 30
FRAME_STEP = 2
IDLE_FRAMES = (10, 40)


@dataclass(frozen=True)
class SyntheticClip:
    """One generated video; the frames are made on demand, so the dataset holds no pixels."""

    seed: int
    split: str
    index: int
    label: int
    size: int

    @property
    def name(self) -> str:
        return f"synthetic/{self.split}/{self.index}"

    @property
    def num_frames(self) -> int:
        return int(self._rng().integers(12, 25))

    def frames(self, indices: np.ndarray) -> list[np.ndarray]:
        video = clip_scene(self._rng(), SYNTHETIC_LABELS[self.label], self.size)
        return [video[int(i)] for i in indices]

    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], self.index])


def synthetic_clips(split: str, count: int, seed: int, size: int) -> list[SyntheticClip]:
    """`count` clips, classes balanced (clip i has class i mod K)."""
    return [SyntheticClip(seed, split, i, i % len(SYNTHETIC_LABELS), size) for i in range(count)]


# (glyph name, (x, y) centre in pixels, radius in pixels, RGB colour): one frame's sign
Glyph = tuple[str, tuple[float, float], float, tuple[int, int, int]]


@dataclass(eq=False)  # an array inside: compared by identity
class Scene:
    """A video's frames as a sequence drawn on demand: one background, the glyph (if any) of each frame,
    and a key for the camera noise. `scene[i]`: (S, S, 3) uint8 RGB frame i; `scene[a:b]`, `scene[kept]`
    and `np.asarray(scene)` stack theirs, as an array of the frames would; len(scene): its frames."""

    background: np.ndarray  # (S, S, 3) float32
    noise_key: int
    glyphs: list[Glyph | None] = field(default_factory=list)  # per frame; None: the background alone

    def __len__(self) -> int:
        return len(self.glyphs)

    def __getitem__(self, index: int | slice | np.ndarray) -> np.ndarray:
        if isinstance(index, slice | np.ndarray | list):  # (n, S, S, 3), as an array's slice or its frames[kept]
            numbers = range(*index.indices(len(self))) if isinstance(index, slice) else np.asarray(index, np.int64)
            return np.stack([self[int(i)] for i in numbers]) if len(numbers) else np.empty((0, *self.background.shape), np.uint8)
        if not -len(self) <= index < len(self):
            raise IndexError(f"frame {index} of a {len(self)}-frame video")
        index %= len(self)
        frame, glyph = self.background, self.glyphs[index]
        if glyph is not None:
            frame = frame.copy()
            _draw_glyph(frame, *glyph)
        return _camera(np.random.default_rng([self.noise_key, index]), frame)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self[i] for i in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        # (L, S, S, 3) uint8: np.asarray(scene) draws every frame
        return self[:].astype(dtype or np.uint8, copy=False)


def clip_scene(rng: np.random.Generator, label: str, size: int) -> Scene:
    # -> L frames, L in 12..24, of one sign (or of none: no_event); the first draw of rng is the length (see SyntheticClip)
    length = int(rng.integers(12, 25))
    if label == NO_EVENT:
        scene = _scene(rng, size)
        scene.glyphs += [None] * length
        return scene
    glyph, track = _glyph_and_track(rng, label, length)
    scene = _scene(rng, size)
    scene.glyphs += _sign_glyphs(rng, glyph, track, size)
    return scene


@dataclass(frozen=True)
class Sign:
    """One sign of a continuous video: its class name and its frames [begin, end) in the video."""

    label: str
    begin: int
    end: int


@dataclass(frozen=True)
class SyntheticVideo:
    """One generated continuous video: `num_signs` signs in one scene. Frames are made on demand."""

    seed: int
    split: str
    index: int
    num_signs: int
    size: int

    @property
    def name(self) -> str:
        return f"synthetic/{self.split}/video-{self.index}"

    @property
    def fps(self) -> float:
        return VIDEO_FPS

    def render(self, min_frames: int = 0) -> tuple[Scene, list[Sign]]:
        # -> the L frames (drawn as they are indexed), the signs in order
        rng = np.random.default_rng([self.seed, SPLIT_STREAMS[self.split], self.index, VIDEO_STREAM])
        return continuous_scene(rng, self.size, self.num_signs, min_frames)


def synthetic_videos(split: str, count: int, seed: int, size: int, num_signs: int = 5) -> list[SyntheticVideo]:
    return [SyntheticVideo(seed, split, i, num_signs, size) for i in range(count)]


def continuous_scene(rng: np.random.Generator, size: int, num_signs: int, min_frames: int = 0) -> tuple[Scene, list[Sign]]:
    """A camera's view of someone signing: idle, sign, idle, sign, ..., idle, all in one scene (one
    background, camera noise on every frame); each sign's class drawn at random (a letter may follow
    itself, with idle between). The last idle stretch is lengthened to `min_frames` frames in all.
    -> the L frames, the signs in order."""
    scene = _scene(rng, size)

    def idle(count: int) -> None:
        scene.glyphs.extend([None] * count)

    signs: list[Sign] = []
    idle(int(rng.integers(*IDLE_FRAMES, endpoint=True)))
    for _ in range(num_signs):
        label = SIGN_LABELS[int(rng.integers(len(SIGN_LABELS)))]
        length = int(rng.integers(12, 25))
        glyph, track = _glyph_and_track(rng, label, length)
        signs.append(Sign(label, len(scene), len(scene) + length))
        scene.glyphs.extend(_sign_glyphs(rng, glyph, track, size))
        idle(int(rng.integers(*IDLE_FRAMES, endpoint=True)))
    idle(max(0, min_frames - len(scene)))
    return scene, signs


def _scene(rng: np.random.Generator, size: int) -> Scene:
    # One background and the camera's noise key, drawn before the frames' glyphs
    return Scene(_background(rng, size), noise_key=int(rng.integers(2**63)))


def _sign_glyphs(rng: np.random.Generator, glyph: str, track: np.ndarray, size: int) -> list[Glyph]:
    # (L, 3) rows of (x, y, radius) in fractions of the frame size -> the glyph of each of the L frames, in one colour
    colour = tuple(int(c) for c in rng.integers(170, 256, size=3))
    return [(glyph, (x * size, y * size), radius * size, colour) for x, y, radius in track]


def _camera(rng: np.random.Generator, frame: np.ndarray) -> np.ndarray:
    # (S, S, 3) float32 scene -> (S, S, 3) uint8: what the camera records of it, with its sensor noise (sigma 8)
    recorded = rng.standard_normal(frame.shape, dtype=np.float32)
    recorded *= 8
    recorded += frame
    return np.clip(recorded, 0, 255, out=recorded).astype(np.uint8)


def _glyph_and_track(rng: np.random.Generator, label: str, length: int) -> tuple[str, np.ndarray]:
    # -> glyph name, (L, 3) rows of (x, y, radius) in fractions of the frame size
    radius = rng.uniform(0.14, 0.18)
    x, y = rng.uniform(0.3, 0.7, size=2)
    jitter = rng.normal(0, 0.01, size=(length, 3)) * [1, 1, 0.2]
    if label in STATIC_GLYPHS:
        return label, np.array([x, y, radius]) + jitter
    glyph, motion, forward, backward = next(p for p in MOTION_PAIRS if label in p[2:])
    t = np.linspace(0, 1, length)
    start, end = rng.uniform(0.22, 0.38), rng.uniform(0.62, 0.78)
    moving = start + (end - start) * t
    if motion == "horizontal":
        track = np.stack([moving, np.full(length, y), np.full(length, radius)], axis=1)
    elif motion == "vertical":
        track = np.stack([np.full(length, x), moving, np.full(length, radius)], axis=1)
    else:
        track = np.stack([np.full(length, x), np.full(length, y), 0.08 + 0.14 * t], axis=1)
    track = track + jitter
    return glyph, track if label == forward else track[::-1]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    # -> (S, S, 3) float: a dark colour with a few dim rectangles and lines as clutter
    image = np.empty((size, size, 3), np.float32)
    image[:] = rng.integers(15, 70, size=3)
    for _ in range(int(rng.integers(2, 6))):
        p1, p2 = rng.integers(0, size, size=(2, 2))
        colour = tuple(float(c) for c in rng.integers(30, 110, size=3))
        if rng.random() < 0.5:
            cv2.rectangle(image, tuple(map(int, p1)), tuple(map(int, p2)), colour, -1)
        else:
            cv2.line(image, tuple(map(int, p1)), tuple(map(int, p2)), colour, max(1, size // 32))
    return image


def _draw_glyph(image: np.ndarray, glyph: str, centre: tuple[float, float], radius: float, colour: tuple) -> None:
    cx, cy, r = centre[0], centre[1], max(radius, 2.0)
    thickness = max(1, int(round(r / 3)))
    if glyph == "circle":
        cv2.circle(image, (int(cx), int(cy)), int(r), colour, -1, cv2.LINE_AA)
    elif glyph == "ring":
        cv2.circle(image, (int(cx), int(cy)), int(r - thickness / 2), colour, thickness, cv2.LINE_AA)
    elif glyph == "cross":
        d = r * 0.75
        cv2.line(image, (int(cx - d), int(cy - d)), (int(cx + d), int(cy + d)), colour, thickness, cv2.LINE_AA)
        cv2.line(image, (int(cx - d), int(cy + d)), (int(cx + d), int(cy - d)), colour, thickness, cv2.LINE_AA)
    elif glyph == "plus":
        cv2.line(image, (int(cx - r), int(cy)), (int(cx + r), int(cy)), colour, thickness, cv2.LINE_AA)
        cv2.line(image, (int(cx), int(cy - r)), (int(cx), int(cy + r)), colour, thickness, cv2.LINE_AA)
    else:
        corners = {
            "square": [(-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)],
            "diamond": [(0, -1), (1, 0), (0, 1), (-1, 0)],
            "triangle": [(0, -1), (0.9, 0.7), (-0.9, 0.7)],
        }[glyph]
        points = np.array([(cx + u * r, cy + v * r) for u, v in corners], np.int32)
        cv2.fillPoly(image, [points], colour, cv2.LINE_AA)
