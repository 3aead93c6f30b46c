import logging
import os

import cv2
import numpy as np
import pytest
import torch
from torchvision.transforms.functional import gaussian_blur

from torch_tsm import augment
from torch_tsm.augment import ClipAugmentation, defocus
from torch_tsm.datamodule import ClipDataModule
from torch_tsm.datasets import (
    IDLE_CLIPS_PER_CLASS,
    IDLE_MARGIN_FRAMES,
    IDLE_MIN_FRAMES,
    BukvaVideo,
    ClipDataset,
    collate_clips,
    idle_spans,
    read_bukva,
    read_bukva_videos,
    read_frame_folder_videos,
    read_frame_folders,
)
from torch_tsm.errors import UserError
from torch_tsm.frames import (
    LETTERBOX_GREY,
    MULTISCALE_SCALES,
    FrameTransform,
    UnreadableVideo,
    _multiscale_box,
    resize_frame,
    segment_indices,
)
from torch_tsm.labels import BUKVA_LABELS, read_labels, write_labels
from torch_tsm.synthetic import DIRECTION_PAIRS, SYNTHETIC_LABELS, Sign, SyntheticClip, synthetic_clips


def test_segment_indices_evaluation_takes_middles():
    assert segment_indices(16, 8, None).tolist() == [1, 3, 5, 7, 9, 11, 13, 15]
    assert segment_indices(80, 8, None).tolist() == [5, 15, 25, 35, 45, 55, 65, 75]


def test_segment_indices_training_one_per_segment():
    rng = np.random.default_rng(0)
    for _ in range(100):
        picks = segment_indices(40, 8, rng)
        assert all(5 * s <= p < 5 * (s + 1) for s, p in enumerate(picks))


def test_short_videos_still_give_t_frames():
    assert segment_indices(3, 8, None).tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert segment_indices(1, 8, np.random.default_rng(0)).tolist() == [0] * 8


def test_letterbox_keeps_aspect_with_grey_bars():
    frame = np.full((60, 120, 3), 200, np.uint8)
    clip = FrameTransform(64)([frame, frame], np.random.default_rng(0))
    assert clip.shape == (2, 64, 64, 3) and clip.dtype == np.uint8
    assert (clip[:, :16] == LETTERBOX_GREY).all() and (clip[:, 48:] == LETTERBOX_GREY).all()
    assert (clip[:, 17:47] == 200).all()


def test_one_crop_flip_and_colour_change_for_all_frames_of_a_clip():
    frame = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    transform, augmentation = FrameTransform(32, resize="crop", train=True), ClipAugmentation(flip=True, photometric=True, blur=True)
    changed = 0
    for seed in range(10):
        rng = np.random.default_rng(seed)
        clip, _ = augmentation(transform([frame, frame.copy()], rng), 0, rng)
        assert np.array_equal(clip[0], clip[1])
        changed += not np.array_equal(clip[0], transform([frame], np.random.default_rng(seed))[0])
    assert changed == 10


def test_defocus_blurs_each_frame_alone_as_torchvision_does():
    # Frame 0 black, frame 1 white: a blur of the clip as one tall image would grey the rows where they meet.
    clip = np.stack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 255, np.uint8), np.zeros((32, 32, 3), np.uint8)])
    clip[2, 8:24, 8:24] = 255  # a white square, whose edges a blur softens
    blurred = defocus(clip, sigma=1.5)
    assert (blurred[0] == 0).all() and (blurred[1] == 255).all()
    # Reference: torchvision's gaussian_blur with a kernel of OpenCV's size for this sigma (reflected borders alike).
    kernel = round(1.5 * 3 * 2 + 1) | 1  # OpenCV's size for uint8 images: 3 sigma each side, odd
    expected = gaussian_blur(torch.from_numpy(clip[2]).permute(2, 0, 1), [kernel, kernel], [1.5, 1.5]).permute(1, 2, 0).numpy()
    assert np.abs(blurred[2].astype(int) - expected).max() <= 1
    assert 0 < blurred[2, 8, 16, 0] < 255  # the edge is soft


def test_defocus_on_half_the_clips():
    clip = np.zeros((2, 64, 64, 3), np.uint8)
    clip[:, ::2] = 255  # stripes: any blur greys them
    augmentation = ClipAugmentation(blur=True)
    blurred = [not np.array_equal(augmentation(clip, 0, np.random.default_rng(seed))[0], clip) for seed in range(200)]
    assert 80 <= sum(blurred) <= 120  # BLUR_CHANCE = 0.5


# The four colour steps against torchvision's adjust_* (the reference) on the same smooth images: within
# one grey level; hue through OpenCV's uint8 HSV (2-degree hue steps) within a few levels at edges.
@pytest.mark.parametrize(
    "step, factor, max_diff",
    [
        ("brightness", 0.5, 1),
        ("brightness", 1.5, 1),
        ("contrast", 0.5, 1),
        ("contrast", 1.5, 1),
        ("saturation", 0.5, 1),
        ("saturation", 1.5, 1),
        ("hue", 0.1, 8),
        ("hue", -0.07, 8),
    ],
)
def test_colour_steps_match_torchvision(step, factor, max_diff):
    from torchvision.transforms.v2 import functional as F

    pixels = torch.nn.functional.interpolate(
        torch.rand(1, 3, 4, 4, generator=torch.Generator().manual_seed(0)) * 255, size=(96, 32), mode="bilinear"
    )
    image = pixels[0].round().to(torch.uint8)  # (3, H, W)
    ours = getattr(augment, step)(image.permute(1, 2, 0).numpy().copy(), factor).astype(int)
    reference = getattr(F, f"adjust_{step}")(image, factor).permute(1, 2, 0).numpy().astype(int)
    assert np.abs(ours - reference).max() <= max_diff
    assert np.abs(ours - reference).mean() < 0.7
    assert np.abs(ours - image.permute(1, 2, 0).numpy()).mean() > 5  # the step changed the image


def test_a_flip_swaps_mirrored_labels_only():
    frame = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    clip = np.stack([frame, frame])
    augmentation = ClipAugmentation(flip=True, mirrored=augment.mirror_map([("right", "left")], ["still", "right", "left"]))
    flips = 0
    for seed in range(20):
        for label, mirror in [(0, 0), (1, 2), (2, 1)]:
            out, new_label = augmentation(clip, label, np.random.default_rng(seed))
            flipped = np.array_equal(out, clip[:, :, ::-1])
            assert flipped or np.array_equal(out, clip)
            assert new_label == (mirror if flipped else label)
            flips += flipped
    assert 0 < flips < 60


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a:b", [("a", "b")]),
        (" a : b ,c:d,", [("a", "b"), ("c", "d")]),
        ("a:b:c", "flip pair 'a:b:c' is not of the form A:B"),
        ("a", "flip pair 'a' is not of the form A:B"),
        ("x:b", "flip pair x:b: no class 'x' \\(classes: a, b, c, d\\)"),
        ("a:a", "flip pair a:a: a class may be in one pair only"),
        ("a:b,b:c", "flip pair b:c: a class may be in one pair only"),
    ],
)
def test_flip_pairs(text, expected):
    labels = ["a", "b", "c", "d"]
    if isinstance(expected, str):
        with pytest.raises(UserError, match=expected):
            augment.mirror_map(augment.parse_flip_pairs(text), labels)
    else:
        assert augment.parse_flip_pairs(text) == expected
        mirrored = augment.mirror_map(expected, labels)
        assert all(mirrored[labels.index(a)] == labels.index(b) and mirrored[labels.index(b)] == labels.index(a) for a, b in expected)


def test_flip_pairs_from_a_file(tmp_path):
    (tmp_path / "pairs.txt").write_text("swipe_left:swipe_right\nrotate_cw : rotate_ccw\n", encoding="utf-8")
    assert augment.parse_flip_pairs(str(tmp_path / "pairs.txt")) == [("swipe_left", "swipe_right"), ("rotate_cw", "rotate_ccw")]


def test_multiscale_boxes_follow_the_baseline_scales():
    rng = np.random.default_rng(0)
    sides = {round(s * 200) for s in MULTISCALE_SCALES}  # int() of 200 x scale, within a pixel
    seen = set()
    for _ in range(300):
        top, bottom, left, right = _multiscale_box(200, 300, rng)
        h, w = bottom - top, right - left
        assert top >= 0 and bottom <= 200 and left >= 0 and right <= 300
        assert any(abs(h - s) <= 1 for s in sides) and any(abs(w - s) <= 1 for s in sides)
        steps = [min(range(4), key=lambda i: abs(MULTISCALE_SCALES[i] * 200 - side)) for side in (h, w)]
        assert abs(steps[0] - steps[1]) <= 1  # mmaction2's max_wh_scale_gap=1
        seen.add((h, w))
    assert len(seen) == 10  # every allowed pair of the 4 scales is drawn: 4 equal + 2 x 3 neighbours


def test_multiscale_letterboxes_its_crop_and_evaluates_on_the_whole_frame():
    frame = np.full((90, 160, 3), 200, np.uint8)
    train = FrameTransform(64, resize="multiscale", train=True)([frame], np.random.default_rng(1))[0]
    evaluation = FrameTransform(64, resize="multiscale")([frame], np.random.default_rng(1))[0]
    assert np.array_equal(evaluation, FrameTransform(64)([frame], np.random.default_rng(1))[0])  # = letterbox
    assert not np.array_equal(train, evaluation) and (train == LETTERBOX_GREY).any()


def test_resize_keeps_pictures_and_filters_detail_it_cannot_show():
    rng = np.random.default_rng(0)
    smooth = cv2.GaussianBlur(rng.integers(0, 255, (1080, 1920, 3), dtype=np.uint8), (0, 0), 4)
    area = cv2.resize(smooth, (455, 256), interpolation=cv2.INTER_AREA).astype(float)
    ours = resize_frame(smooth, (455, 256))
    assert ours.shape == (256, 455, 3) and np.abs(ours - area).mean() < 1  # measured 0.44
    # 1-pixel stripes at Full HD are finer than 256 px can show: an area filter makes them flat grey
    # (OpenCV's one-step area resize leaves a std of 6), one bilinear resize samples them into moire.
    stripes = np.zeros((1080, 1920, 3), np.uint8)
    stripes[:, ::2] = 255
    assert resize_frame(stripes, (455, 256)).std() < 1
    assert cv2.resize(stripes, (455, 256), interpolation=cv2.INTER_LINEAR).std() > 50


def write_video(path, frames, fps=10):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (frames[0].shape[1], frames[0].shape[0]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def numbered_frames(count, height=48, width=64):
    # frame i is uniformly grey level 20*i: decoded frames can be identified despite compression
    return [np.full((height, width, 3), 20 * i, np.uint8) for i in range(count)]


@pytest.fixture
def bukva_root(tmp_path):
    (tmp_path / "trimmed").mkdir()
    (tmp_path / "original").mkdir()
    rows = [
        ("a1", "Ж", True, 0, 10),
        ("a2", "Щ", True, 2, 8),
        ("a3", "Ё", False, 0, 10),
        ("corrupt", "А", True, 0, 10),
        ("missing", "Б", True, 0, 10),
        ("../escape", "В", True, 0, 10),
        ("a4", "Z", True, 0, 10),
    ]
    for name in ("a1", "a2", "a3", "a4"):
        write_video(tmp_path / "trimmed" / f"{name}.mp4", numbered_frames(10))
        write_video(tmp_path / "original" / f"{name}.mp4", numbered_frames(10))
    (tmp_path / "trimmed" / "corrupt.mp4").write_bytes(b"\x00\x01 not a video" * 100)
    lines = ["attachment_id\tuser_id\ttext\tbegin\tend\theight\twidth\ttrain\tlength"]
    lines += [f"{a}\tu1\t{text}\t{begin}\t{end}\t48\t64\t{train}\t10" for a, text, train, begin, end in rows]
    (tmp_path / "annotations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_bukva_reader_skips_bad_entries_and_names_them(bukva_root, caplog):
    with caplog.at_level(logging.WARNING):
        clips, report = read_bukva(bukva_root, "train")
    assert sorted(c.path.name for c in clips) == ["a1.mp4", "a2.mp4"]
    assert [BUKVA_LABELS[c.label] for c in sorted(clips, key=lambda c: c.path.name)] == ["Ж", "Щ"]
    assert len(report.problems) == 4
    text = caplog.text
    assert "corrupt.mp4" in text and "missing" in text and "'../escape'" in text and "unknown label 'Z'" in text
    assert "2 clips, 4 skipped" in text
    val, _ = read_bukva(bukva_root, "val")
    assert [BUKVA_LABELS[c.label] for c in val] == ["Ё"]


def test_bukva_frames_decode_in_order(bukva_root):
    clips, _ = read_bukva(bukva_root, "train")
    clip = next(c for c in clips if c.path.stem == "a1")
    assert clip.num_frames == 10
    frames = clip.frames(np.array([0, 3, 9]))
    assert [round(f.mean() / 20) for f in frames] == [0, 3, 9]


def test_bukva_original_is_cut_by_begin_end(bukva_root):
    clips, _ = read_bukva(bukva_root, "train", source="original")
    clip = next(c for c in clips if c.path.stem == "a2")
    assert clip.num_frames == 6  # [2, 8)
    frames = clip.frames(segment_indices(clip.num_frames, 3, None))
    assert [round(f.mean() / 20) for f in frames] == [3, 5, 7]


def counted_frames(count, height=24, width=32):
    # frame i is uniformly grey level 4*i (up to 63 frames): any two frames differ
    return [np.full((height, width, 3), 4 * i, np.uint8) for i in range(count)]


def idle_tree(root, rows, lengths):
    """A Bukva folder of original videos: rows of (id, text, train, begin, end), video id of lengths[id] counted frames."""
    (root / "original").mkdir(parents=True)
    for attachment, length in lengths.items():
        write_video(root / "original" / f"{attachment}.mp4", counted_frames(length))
    lines = ["attachment_id\tuser_id\ttext\tbegin\tend\theight\twidth\ttrain\tlength"]
    lines += [f"{a}\tu1\t{text}\t{begin}\t{end}\t24\t32\t{train}\t{lengths.get(a, 0)}" for a, text, train, begin, end in rows]
    (root / "annotations.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# (begin, end, length) -> idle [start, stop) parts, by hand with a margin of 8 and a minimum of 16 frames
@pytest.mark.parametrize(
    "begin, end, length, expected",
    [
        (20, 30, 60, [(38, 60)]),  # before: [0, 12) is 12 frames, too short
        (24, 36, 60, [(0, 16), (44, 60)]),  # both exactly the minimum
        (23, 37, 60, []),  # 15 frames each side
        (0, 10, 40, [(18, 40)]),  # a sign at the very start
        (25, 40, 40, [(0, 17)]),  # a sign to the very end
        (0, 40, 40, []),  # the whole video is the sign
    ],
)
def test_idle_spans(begin, end, length, expected):
    assert (IDLE_MARGIN_FRAMES, IDLE_MIN_FRAMES) == (8, 16)
    assert idle_spans(begin, end, length) == expected


IDLE_ROWS = [
    ("mid", "Ж", True, 24, 36),
    ("start", "А", True, 0, 10),
    ("short", "Б", True, 23, 37),
    ("quiet", "no_event", True, 5, 30),
    ("whole", "no_event", True, "", ""),
    ("held", "В", False, 20, 30),
    ("empty", "Г", True, 9, 9),
    ("late", "Д", True, 45, 50),
]
IDLE_LENGTHS = {"mid": 60, "start": 40, "short": 60, "quiet": 40, "whole": 20, "held": 60, "empty": 40, "late": 40}


def test_bukva_originals_give_idle_no_event_clips(tmp_path, caplog):
    root = idle_tree(tmp_path, IDLE_ROWS, IDLE_LENGTHS)
    with caplog.at_level(logging.INFO):
        clips, report = read_bukva(root, "train", source="original")
    got = sorted((c.path.stem, BUKVA_LABELS[c.label], c.start, c.num_frames) for c in clips)
    assert got == sorted(
        [
            ("mid", "Ж", 24, 12),
            ("mid", "no_event", 0, 16),
            ("mid", "no_event", 44, 16),
            ("start", "А", 0, 10),
            ("start", "no_event", 18, 22),
            ("short", "Б", 23, 14),  # no idle part long enough
            ("quiet", "no_event", 5, 25),  # a no_event row: its [begin, end), no idle parts added
            ("whole", "no_event", 0, 20),  # a no_event row without begin/end: the whole video
        ]
    )
    assert report.no_event_clips == {"labelled": 2, "idle": 3, "idle_left_out": 0}
    assert "8 clips, 2 skipped; no_event clips: 2 labelled, 3 from idle parts" in caplog.text
    assert "empty: begin/end '9'/'9': an empty range" in caplog.text
    assert "late.mp4: begin/end 45/50 start past the video's 40 frames" in caplog.text
    # an idle clip's frames are the video's frames after the sign and its margin
    idle = next(c for c in clips if c.path.stem == "start" and c.label == 0)
    decoded = decoded_letterboxed(idle.path, 32)
    assert np.array_equal(FrameTransform(32)(idle.frames(np.array([0, 21])), np.random.default_rng(0)), decoded[[18, 39]])
    held, report = read_bukva(root, "val", source="original")
    assert [(BUKVA_LABELS[c.label], c.start, c.num_frames) for c in held] == [("В", 20, 10), ("no_event", 38, 22)]  # the same split
    data = ClipDataModule("bukva", root, bukva_source="original")
    data.clips("train")
    assert data.no_event_clips == {"train": {"labelled": 2, "idle": 3, "idle_left_out": 0}}


def test_idle_clips_are_capped_at_a_few_times_a_sign_class(tmp_path, caplog):
    # 4 signs of 2 classes, each video with an idle part before and after its sign: 8 idle clips, where
    # IDLE_CLIPS_PER_CLASS x the mean class (2 clips) keeps 6, evenly through the rows: the 1st, 2nd, 4th, 5th, 7th, 8th
    rows = [(f"v{i}", "АБ"[i % 2], True, 24, 36) for i in range(4)]
    root = idle_tree(tmp_path, rows, {f"v{i}": 60 for i in range(4)})
    with caplog.at_level(logging.INFO):
        clips, report = read_bukva(root, "train", source="original")
    assert IDLE_CLIPS_PER_CLASS == 3
    assert report.no_event_clips == {"labelled": 0, "idle": 6, "idle_left_out": 2}
    idle = [(c.path.stem, c.start) for c in clips if BUKVA_LABELS[c.label] == "no_event"]
    assert idle == [("v0", 0), ("v0", 44), ("v1", 44), ("v2", 0), ("v3", 0), ("v3", 44)]
    assert sorted((c.path.stem, BUKVA_LABELS[c.label]) for c in clips if c.label) == [("v0", "А"), ("v1", "Б"), ("v2", "А"), ("v3", "Б")]
    assert (
        "10 clips, 0 skipped; no_event clips: 0 labelled, 6 from idle parts (2 more left out: at most 3x a sign class's clips)"
        in caplog.text
    )


def test_trimmed_bukva_gives_no_event_rows_only(tmp_path):
    root = idle_tree(tmp_path, IDLE_ROWS, IDLE_LENGTHS)
    (root / "original").rename(root / "trimmed")
    clips, report = read_bukva(root, "train")  # trimmed: each video whole, whatever begin/end say
    assert sorted((c.path.stem, BUKVA_LABELS[c.label], c.start, c.num_frames) for c in clips if c.label == 0) == [
        ("quiet", "no_event", 0, 40),
        ("whole", "no_event", 0, 20),
    ]
    assert report.no_event_clips == {"labelled": 2, "idle": 0, "idle_left_out": 0} and len(clips) == 7


def decoded_letterboxed(path, size):
    # the reference: every frame decoded with OpenCV alone, letterboxed by FrameTransform
    capture, frames = cv2.VideoCapture(str(path)), []
    while (frame := capture.read()[1]) is not None:
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
    capture.release()
    return FrameTransform(size)(frames, np.random.default_rng(0))


def test_bukva_original_videos_render_as_continuous_videos(tmp_path):
    root = idle_tree(tmp_path, IDLE_ROWS, IDLE_LENGTHS)
    write_video(root / "original" / "wide.mp4", [cv2.resize(f, (64, 24)) for f in counted_frames(30)], fps=25)
    with open(root / "annotations.tsv", "a", encoding="utf-8") as handle:
        handle.write("wide\tu2\tЁ\t10\t25\t24\t64\tTrue\t30\n")
    videos, report = read_bukva_videos(root, "train", image_size=48)
    assert sorted((v.path.stem, v.sign) for v in videos) == [  # no_event rows have no sign: left out, not skipped
        ("mid", Sign("Ж", 24, 36)),
        ("short", Sign("Б", 23, 37)),
        ("start", Sign("А", 0, 10)),
        ("wide", Sign("Ё", 10, 25)),
    ]
    assert len(report.problems) == 2  # the empty range and the sign past the end
    wide = next(v for v in videos if v.path.stem == "wide")
    assert wide.fps == 25 and wide.name == str(root / "original" / "wide.mp4")
    frames, signs = wide.render()
    assert signs == [Sign("Ё", 10, 25)] and frames.dtype == np.uint8
    assert np.array_equal(frames, decoded_letterboxed(wide.path, 48))
    assert (frames[:, :12] == LETTERBOX_GREY).all() and frames.shape == (30, 48, 48, 3)  # 64 x 24 letterboxed
    padded, _ = wide.render(min_frames=40)
    assert padded.shape[0] == 40 and np.array_equal(padded[:30], frames) and (padded[30:] == frames[-1]).all()
    assert wide.render(min_frames=10)[0].shape[0] == 30  # never cut


def test_an_unreadable_bukva_video_raises_one_line_naming_it(tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x01 not a video" * 100)
    with pytest.raises(UnreadableVideo, match=r"broken\.mp4: cannot be opened as a video") as error:
        BukvaVideo(path, Sign("А", 0, 5), 30.0, 32).render()
    assert "\n" not in str(error.value)


def test_unreadable_clip_is_skipped_at_load_time(tmp_path, caplog):
    write_video(tmp_path / "ok.mp4", numbered_frames(5))
    from torch_tsm.datasets import VideoClip

    clips = [VideoClip(tmp_path / "ok.mp4", 1, 5), VideoClip(tmp_path / "gone.mp4", 2, 5)]
    dataset = ClipDataset(clips, 4, FrameTransform(32))
    with caplog.at_level(logging.WARNING):
        batch = collate_clips([dataset[0], dataset[1]])
    assert "gone.mp4" in caplog.text
    assert batch[0].shape == (1, 4, 3, 32, 32) and batch[1].tolist() == [1]


def test_no_usable_clip_is_a_clear_error(tmp_path):
    (tmp_path / "trimmed").mkdir()
    (tmp_path / "annotations.tsv").write_text(
        "attachment_id\tuser_id\ttext\tbegin\tend\theight\twidth\ttrain\tlength\nx\tu\tА\t0\t1\t1\t1\tTrue\t1\n"
    )
    with pytest.raises(ValueError, match="no usable clip"):
        read_bukva(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="annotations.tsv"):
        read_bukva(tmp_path / "nowhere", "train")


def test_frame_folders(tmp_path):
    for video, count in (("v1", 6), ("v2", 3), ("empty", 0)):
        (tmp_path / video).mkdir()
        for i, frame in enumerate(numbered_frames(count)):
            cv2.imwrite(str(tmp_path / video / f"{i:05d}.jpg"), frame)
    rows = ["video\tlabel\tsplit", "v1\twave\ttrain", "v2\tclap\ttrain", "empty\twave\ttrain", "nothere\tclap\ttrain", "v1\twave\tval"]
    (tmp_path / "annotations.tsv").write_text("\n".join(rows) + "\n")
    data = ClipDataModule("frames", tmp_path, num_segments=3, image_size=32)
    assert data.labels == ["clap", "wave"]
    clips, report = read_frame_folders(tmp_path, "train")
    assert [(c.num_frames, c.label) for c in clips] == [(6, 1), (3, 0)]
    assert len(report.problems) == 2
    assert [round(f.mean() / 20) for f in clips[0].frames(np.array([1, 3, 5]))] == [1, 3, 5]
    write_labels(["wave", "clap", "snap"], tmp_path / "labels.txt")
    assert data.labels == ["wave", "clap", "snap"]


def test_frame_folders_skip_escaping_names_and_unknown_labels(tmp_path, caplog):
    (tmp_path / "v1").mkdir()
    cv2.imwrite(str(tmp_path / "v1" / "00000.jpg"), numbered_frames(2)[1])
    write_labels(["wave", "clap"], tmp_path / "labels.txt")
    rows = ["video\tlabel\tsplit", "v1\twave\ttrain", "../v1\twave\ttrain", "v1\tdance\ttrain"]
    (tmp_path / "annotations.tsv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        clips, report = read_frame_folders(tmp_path, "train")
    assert [(c.name, c.label) for c in clips] == [(str(tmp_path / "v1"), 0)]
    assert len(report.problems) == 2
    assert "video '../v1' is not a plain folder name" in caplog.text and "unknown label 'dance'" in caplog.text


def test_frame_folders_with_a_bad_sign_place_or_frame_rate(tmp_path, caplog):
    for video in ("v1", "v2", "v3"):
        (tmp_path / video).mkdir()
        for i, frame in enumerate(numbered_frames(6)):
            cv2.imwrite(str(tmp_path / video / f"{i:05d}.jpg"), frame)
    rows = ["video\tlabel\tsplit\tfps\tbegin\tend", "v1\twave\ttrain\tfast\t1\t4", "v2\twave\ttrain\t25\t4\t2", "v3\twave\ttrain\t0\tx\t3"]
    (tmp_path / "annotations.tsv").write_text("\n".join(rows) + "\n")
    with caplog.at_level(logging.WARNING):
        videos, report = read_frame_folder_videos(tmp_path, "train", 32)
    assert [(v.name, v.sign, v.fps) for v in videos] == [(str(tmp_path / "v1"), Sign("wave", 1, 4), 30.0)]  # an unreadable rate: 30
    assert "v2: begin/end '4'/'2': an empty range" in caplog.text and "v3: begin/end 'x'/'3' are not frame numbers" in caplog.text
    clips, _ = read_frame_folders(tmp_path, "train")
    assert [(c.num_frames, c.frame_paths[0].name) for c in clips] == [(3, "00001.jpg")]  # no no_event class: no idle clips


def test_labels_file_round_trip(tmp_path):
    write_labels(BUKVA_LABELS, tmp_path / "labels.txt")
    assert read_labels(tmp_path / "labels.txt") == BUKVA_LABELS
    assert len(BUKVA_LABELS) == 34 and BUKVA_LABELS[0] == "no_event" and BUKVA_LABELS[7] == "Ё"


def test_synthetic_is_deterministic_and_balanced():
    first, second = synthetic_clips("train", 20, 3, 32), synthetic_clips("train", 20, 3, 32)
    indices = np.arange(8)
    for a, b in zip(first, second):
        assert np.array_equal(np.stack(a.frames(indices)), np.stack(b.frames(indices)))
    assert [c.label for c in first[:10]] == list(range(10))
    other_seed = synthetic_clips("train", 1, 4, 32)[0]
    assert not np.array_equal(np.stack(first[0].frames(indices)), np.stack(other_seed.frames(indices)))


def test_synthetic_direction_pairs_are_the_same_frames_reversed():
    # Same (seed, split, index) with the two labels of a pair: identical frames, in reverse order,
    # up to the per-frame noise. No per-frame statistic can separate them.
    for forward, backward in DIRECTION_PAIRS:
        a = SyntheticClip(0, "train", 5, SYNTHETIC_LABELS.index(forward), 48)
        b = SyntheticClip(0, "train", 5, SYNTHETIC_LABELS.index(backward), 48)
        n = a.num_frames
        fa, fb = np.stack(a.frames(np.arange(n))).astype(float), np.stack(b.frames(np.arange(n))[::-1]).astype(float)
        assert np.abs(fa - fb).mean() < 12  # noise only (sigma 8)
        assert np.abs(fa[0] - fa[-1]).mean() > np.abs(fa - fb).mean()  # while the glyph really moves


def test_datamodule_batches(tmp_path):
    data = ClipDataModule(num_segments=4, image_size=32, batch_size=5, num_workers=0, synthetic_sizes=(20, 10))
    data.setup("fit")
    clips, labels = next(iter(data.train_dataloader()))
    assert clips.shape == (5, 4, 3, 32, 32) and clips.dtype == torch.uint8  # the model casts on its device
    assert clips.max() > 1  # raw pixels, not 0..1
    first = next(iter(data.val_dataloader()))[0]
    assert torch.equal(first, next(iter(data.val_dataloader()))[0])  # evaluation is deterministic


def training_pixels(num_workers: int, epochs: int = 2) -> list[dict[int, torch.Tensor]]:
    # -> per epoch, {label: the clip drawn for it}; one clip per label
    data = ClipDataModule(num_segments=4, image_size=32, batch_size=4, num_workers=num_workers, synthetic_sizes=(8, 4))
    data.setup("fit")
    loader, drawn = data.train_dataloader(), []
    for epoch in range(epochs):
        data.train_set.set_epoch(epoch)
        drawn.append({int(label): clip for clips, labels in loader for clip, label in zip(clips, labels)})
    return drawn


def test_training_draws_new_frames_each_epoch_whatever_the_worker_count():
    # Workers persist across epochs; without the epoch in the draw, every epoch would see the same frames.
    zero, two = training_pixels(0), training_pixels(2)
    assert all(not torch.equal(zero[0][label], zero[1][label]) for label in zero[0])
    assert all(torch.equal(zero[epoch][label], two[epoch][label]) for epoch in (0, 1) for label in zero[0])


def test_loader_defaults_are_ready_for_a_gpu():
    data = ClipDataModule(synthetic_sizes=(24, 12), batch_size=4)
    data.setup("fit")
    loader = data.train_dataloader()
    assert data.num_workers == len(os.sched_getaffinity(0))
    assert loader.persistent_workers and loader.prefetch_factor == 2
    assert not loader.pin_memory  # no trainer on a GPU here: pinning would only cost
