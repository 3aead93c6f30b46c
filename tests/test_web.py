"""The page of runtime.web: its server, its frame preparation, and the page itself in a real Chromium.

The browser tests run Debian's headless Chromium once for the module (runtime.browser; once more with
the camera refused), its fake camera playing a clip of the built-in data written as .y4m. The page
reports what it fed the model frame by frame: the camera frame as the browser decoded it, the model's
input it prepared, and the uint8 logits LiteRT.js gave. Each is checked against an independent
reference: the frame against our own decoding of the .y4m, the input against torch_tsm's letterbox of
the page's own frame, the logits against runtime.stream's LiteRT runner in Python on the page's own
inputs (the parity stage "litert.js"). Without Chromium, chromedriver, LiteRT.js (npm), Selenium or
node they skip, saying which is missing; in CI (CI=true) they fail instead, so that a green CI means
the page was tested.
"""

import contextlib
import http.client
import io
import json
import os
import shutil
import subprocess
import urllib.parse
from pathlib import Path

import cv2
import numpy as np
import pytest

from runtime import browser
from runtime.clip import TFLiteRunner, dequantize, quantize
from runtime.predict import main as predict
from runtime.stream import StreamingTFLiteRunner
from runtime.web import LITERTJS, LITERTJS_DATATYPES, LITERTJS_INT8, PAGE, main, manifest
from torch_tsm.cli import run
from torch_tsm.frames import FrameTransform
from torch_tsm.labels import read_labels
from torch_tsm.synthetic import NO_EVENT, SIGN_LABELS, clip_scene, continuous_scene
from torch_tsm.transcript import DecisionRule, Transcriber, softmax

REPO = Path(__file__).resolve().parents[1]
# The built-in signs in Russian: the page must show Cyrillic as Bukva's labels need (no_event stays as it is).
IN_RUSSIAN = dict(
    zip(SIGN_LABELS, ["круг", "крест", "кольцо", "ромб", "вправо", "влево", "вниз", "вверх", "растёт", "сжимается"], strict=True)
)
FRAMES = 16  # frames the page records, at every camera frame (?step=1): within the 22 of the clip


def require(reason: str | None) -> None:
    """A browser test that cannot run here (`reason` says why) skips on a user's machine and fails in CI."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser test not run in CI: {reason}", pytrace=False)
    pytest.skip(f"no browser test: {reason}")


def link_model(folder: Path, source: Path, name: str, target: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / (target or name)).symlink_to(source / name)
    return folder


# --- the server, no browser -----------------------------------------------------------------------


@pytest.fixture
def server_folder(tmp_path):
    folder = tmp_path / "run"
    (folder / "sub").mkdir(parents=True)
    (folder / "labels.txt").write_text("a\nb\n", encoding="utf-8")
    (folder / "sub" / "secret.txt").write_text("no", encoding="utf-8")
    (folder / ".hidden").write_text("no", encoding="utf-8")
    (tmp_path / "outside.txt").write_text("no", encoding="utf-8")
    with browser.served(folder) as url:
        yield urllib.parse.urlsplit(url).port


def get(port: int, path: str, method: str = "GET") -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.putrequest(method, path, skip_accept_encoding=True)  # the path as written: no client normalizes it
    connection.endheaders()
    response = connection.getresponse()
    response.body = response.read()
    return response


@pytest.mark.parametrize(
    "path",
    [
        "/model/../outside.txt",
        "/model/%2e%2e/outside.txt",
        "/model/..%2Foutside.txt",
        "/model/%2E%2E%2Foutside.txt",
        "/../outside.txt",
        "/model//etc/passwd",
        "/model/%2Fetc%2Fpasswd",
        "//etc/passwd",
        "/etc/passwd",
        "/model/sub/secret.txt",
        "/model/sub%2Fsecret.txt",
        "/model/.hidden",
        "/model/..",
        "/model/",
        "/model/..\\outside.txt",
        "/litert/../web.py",
        "/app.js/../../web.py",
        "/web.py",
        "/runtime/web.py",
        "/node_modules/@litertjs/core/package.json",
    ],
)
def test_the_server_refuses_every_path_outside_its_files(server_folder, path):
    assert get(server_folder, path).status == 404


def test_the_server_serves_the_page_and_the_folder_s_files_cross_origin_isolated(server_folder):
    for path in ("/", "/app.js", "/prepare.js", "/model.js", "/style.css", "/model/labels.txt", "/model/manifest.json"):
        response = get(server_folder, path)
        assert response.status == 200, path
        assert response.getheader("Cross-Origin-Opener-Policy") == "same-origin"
        assert response.getheader("Cross-Origin-Embedder-Policy") == "require-corp"
        policy = response.getheader("Content-Security-Policy")
        assert "default-src 'self'" in policy and "connect-src 'self'" in policy, policy
    assert get(server_folder, "/model/labels.txt", "HEAD").status == 200
    assert get(server_folder, "/model/labels.txt", "POST").status == 501


def test_the_served_litert_js_maps_int8_tensors(server_folder):
    """The streaming model's buffers are int8, which LiteRT.js 2.5.3 refuses in JavaScript (its DATATYPES table
    maps float32, int32 and uint8): the page's copy of its core gains the int8 row. The browser tests below run
    the int8 buffers through it, frame by frame against Python's LiteRT."""
    require(browser.missing())
    original = (LITERTJS / "core" / "dist" / "index.js").read_text(encoding="utf-8")
    assert 'dtype: "int8"' not in original  # when LiteRT.js maps int8 itself, runtime.web serves it as it is
    served = get(server_folder, "/litert/core.js").body.decode()
    assert served == original.replace(LITERTJS_DATATYPES, LITERTJS_DATATYPES + LITERTJS_INT8)
    assert served.count(LITERTJS_INT8) == 1


def test_manifest_says_what_is_wrong(streaming_converted, tmp_path):
    with pytest.raises(ValueError, match="no uint8 TFLite model here"):
        manifest(tmp_path)
    float_model = link_model(tmp_path / "float", streaming_converted, "model_streaming_float32.tflite", "model_streaming_uint8.tflite")
    shutil.copy(streaming_converted / "model_card.json", float_model)  # with its T (open_model reads it), only the tensors are wrong
    with pytest.raises(ValueError, match="float32 tensors"):
        manifest(float_model)
    streaming_as_clip = link_model(tmp_path / "clip", streaming_converted, "model_streaming_uint8.tflite", "model_uint8.tflite")
    with pytest.raises(ValueError, match="a streaming model .*, where a clip model is needed"):
        manifest(streaming_as_clip)


def test_manifest_carries_the_card_s_decision_rule(streaming_converted, tmp_path):
    """The page decides with the rule training chose (the card's "decision"), else with the defaults."""
    folder = streaming_folder(streaming_converted, tmp_path / "run")
    card = json.loads((folder / "model_card.json").read_text(encoding="utf-8"))
    card["decision"] = DecisionRule(frame_step=3, smooth=4, confirm=1, threshold=0.7).as_dict()
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    assert manifest(folder)["decision"] == {"frame_step": 3, "smooth": 4, "confirm": 1, "threshold": 0.7}
    del card["decision"]
    (folder / "model_card.json").write_text(json.dumps(card), encoding="utf-8")
    assert manifest(folder)["decision"] == DecisionRule().as_dict()


def test_manifest_gives_the_buffers_type_and_quantization(streaming_converted, tmp_path):
    runner = StreamingTFLiteRunner(streaming_converted / "model_streaming_uint8.tflite")
    buffers = manifest(streaming_folder(streaming_converted, tmp_path / "run"))["buffers"]
    assert [b["name"] for b in buffers] == [f"buffer_{i}" for i in range(runner.num_buffers)]
    for b in buffers:
        scale, zero_point = runner.inputs[b["name"]]["quantization"]
        assert (b["dtype"], b["shape"], b["scale"], b["zero_point"]) == ("int8", list(runner.inputs[b["name"]]["shape"]), scale, zero_point)


def test_the_command_refuses_a_missing_folder_in_one_line(tmp_path, capsys):
    assert run(main, [str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"error: {tmp_path / 'nowhere'}: model folder not found"]


# --- the page's frame preparation, in node --------------------------------------------------------


def test_the_page_prepares_frames_exactly_as_python(tmp_path):
    """prepare.js's letterbox against torch_tsm's (OpenCV) on camera sizes, shrinking and enlarging: equal."""
    require(None if shutil.which("node") else "node not found (Debian: apt-get install nodejs)")
    rng = np.random.default_rng(0)
    cases = [
        (640, 480, 64),
        (1280, 720, 224),
        (1920, 1080, 224),
        (480, 640, 64),
        (128, 96, 64),
        (333, 217, 64),
        (50, 40, 224),
        (64, 64, 64),
    ]
    frames = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for w, h, _ in cases]
    for i, frame in enumerate(frames):
        frame.tofile(tmp_path / f"{i}.rgb")
    script = (
        f"import {{ readFileSync, writeFileSync }} from 'node:fs'; import {{ letterbox }} from '{PAGE / 'prepare.js'}';"
        f"const cases = {json.dumps(cases)};"
        f"cases.forEach(([w, h, s], i) => writeFileSync('{tmp_path}/' + i + '.out', letterbox(new Uint8Array(readFileSync('{tmp_path}/' + i + '.rgb')), w, h, s)));"
    )
    subprocess.run(["node", "--input-type=module", "-e", script], check=True, timeout=60)
    for i, ((w, h, size), frame) in enumerate(zip(cases, frames)):
        expected = FrameTransform(size)([frame], np.random.default_rng(0))[0]
        np.testing.assert_array_equal(
            np.fromfile(tmp_path / f"{i}.out", np.uint8).reshape(expected.shape), expected, err_msg=f"{w}x{h} -> {size}"
        )


def random_decisions(rng: np.random.Generator) -> dict:
    """One random case for the decision rule: labels (no_event among them or not), settings, and logits
    of kept frames that hold a class for a while, as a model does, with exact and near ties: uint8-like
    levels (many equal logits), or a runner-up a hair below the top."""
    k = int(rng.choice([2, 3, 5, 11]))
    labels = [f"sign{i}" for i in range(k)]
    if rng.random() < 0.7:
        labels[int(rng.integers(k))] = NO_EVENT
    rule = DecisionRule(
        int(rng.integers(1, 4)), int(rng.integers(1, 6)), int(rng.integers(1, 6)), float(rng.choice([0.3, 0.5, 0.7, 0.9, rng.random()]))
    )
    length = int(rng.integers(1, 60))
    held = np.repeat(rng.integers(k, size=length), rng.integers(1, 8, size=length))[:length]  # the class shown, held for a few frames
    logits = rng.normal(0, rng.choice([0.1, 1, 3]), (length, k))
    logits[np.arange(length), held] += rng.choice([0.5, 2, 6])
    kind = rng.integers(3)
    if kind == 1:  # dequantized uint8: a few levels, so equal logits within and across frames
        logits = np.round(logits / 0.5) * 0.5
    elif kind == 2:  # a runner-up a hair below the top
        runner_up = (held + 1) % k
        logits[np.arange(length), runner_up] = logits[np.arange(length), held] - rng.choice([0.0, 1e-12, 1e-6], size=length)
    return {"labels": labels, "rule": rule.as_dict(), "logits": logits.tolist()}


def test_the_page_decides_exactly_as_python(tmp_path):
    """decide.js against torch_tsm.transcript.Transcriber on a few thousand random logit sequences: the
    same letters at the same kept frames, every one."""
    require(None if shutil.which("node") else "node not found (Debian: apt-get install nodejs)")
    rng = np.random.default_rng(0)
    cases = [random_decisions(rng) for _ in range(3000)]
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = (
        f"import {{ readFileSync, writeFileSync }} from 'node:fs'; import {{ Transcriber }} from '{PAGE / 'decide.js'}';"
        f"const cases = JSON.parse(readFileSync('{tmp_path}/cases.json'));"
        "const printed = cases.map(({ labels, rule, logits }) => {"
        "  const transcriber = new Transcriber(labels, rule);"
        "  return logits.map((frame, i) => [i, transcriber.add(frame)]).filter(([, k]) => k !== null);"
        "});"
        f"writeFileSync('{tmp_path}/printed.json', JSON.stringify(printed));"
    )
    subprocess.run(["node", "--input-type=module", "-e", script], check=True, timeout=120)
    printed = json.loads((tmp_path / "printed.json").read_text())
    letters = 0
    for i, (case, got) in enumerate(zip(cases, printed, strict=True)):
        transcriber = Transcriber(case["labels"], DecisionRule.from_dict(case["rule"]))
        expected = [[j, k] for j, logits in enumerate(case["logits"]) if (k := transcriber(np.array(logits))) is not None]
        assert got == expected, f"case {i}: {case['rule']}"
        letters += len(expected)
    assert letters > len(cases)  # the cases print letters, not only nothing


# --- the page in Chromium -------------------------------------------------------------------------


def camera_clip() -> np.ndarray:
    # -> (L, 96, 128, 3): a built-in clip (move_down, 22 frames) as a 4:3 camera sees it
    return as_camera(np.asarray(clip_scene(np.random.default_rng(3), "move_down", 64)))


def as_camera(video: np.ndarray) -> np.ndarray:
    # (L, 64, 64, 3) -> (L, 96, 128, 3): 4:3, as a camera sees it, so that the page letterboxes
    video = video.repeat(2, axis=1).repeat(2, axis=2)  # 128 x 128, each pixel 2 x 2
    return np.ascontiguousarray(video[:, 16:112])


def write_webm(frames: np.ndarray, path: Path) -> None:
    # (L, H, W, 3) RGB -> a VP8 .webm at 30 frames per second, as a user's file
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"VP80"), 30, (frames.shape[2], frames.shape[1]))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


@pytest.fixture(scope="module")
def page_browser(tmp_path_factory):
    require(browser.missing())
    folder = tmp_path_factory.mktemp("camera")
    camera = folder / "camera.y4m"
    browser.write_y4m(camera_clip(), camera)
    with browser.chromium(camera) as driver:
        yield driver


def open_folder(driver, folder: Path, query: str = f"?step=1&record={FRAMES}") -> dict:
    with browser.served(folder) as url:
        page = browser.open_page(driver, f"{url}/{query}", FRAMES)
        # Nothing but this server: every resource the page loaded (scripts, WebAssembly, model) is its own.
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(entry => entry.name)")
        assert loaded and all(name.startswith(f"{url}/") for name in loaded), loaded
        return page


def streaming_folder(streaming_converted: Path, folder: Path, model: str = "model_streaming_uint8.tflite") -> Path:
    """A streaming uint8 model with its card, and its labels in Russian."""
    link_model(folder, streaming_converted, model)
    shutil.copy(streaming_converted / "model_card.json", folder)
    labels = [IN_RUSSIAN.get(label, label) for label in read_labels(streaming_converted / "labels.txt")]
    (folder / "labels.txt").write_text("\n".join(labels) + "\n", encoding="utf-8")
    return folder


def assert_decoded_as(frames: np.ndarray, reference: np.ndarray, levels: int) -> None:
    """Each frame the browser decoded is one of the reference frames, within `levels` (its own YUV -> RGB);
    Chromium may start a camera's stream with one all-black frame before the first real one."""
    real = [frame for i, frame in enumerate(frames) if not (i == 0 and frame.max() == 0)]
    assert len(real) >= len(frames) - 1
    reference = reference.astype(int)
    for frame in real:
        distance = np.abs(reference - frame).mean(axis=(1, 2, 3))
        nearest = int(distance.argmin())
        assert np.abs(reference[nearest] - frame).max() <= levels, (
            f"frame unlike reference frame {nearest}: mean |diff| {distance[nearest]:.2f}"
        )


def assert_stream_matches_python(got: browser.Recorded, model: Path) -> np.ndarray:
    """The page prepared its frames as runtime.predict does, and LiteRT.js's uint8 logits are Python
    LiteRT's on the same inputs, the stream's buffers carried over. Returns Python's (N, K) float logits."""
    np.testing.assert_array_equal(got.inputs, FrameTransform(got.inputs.shape[1])(list(got.camera), np.random.default_rng(0)))
    runner = StreamingTFLiteRunner(model)
    logits = runner.run_stream(got.inputs)
    expected = quantize(logits, runner.outputs["logits"]).astype(int)
    assert (got.logits.argmax(axis=1) == expected.argmax(axis=1)).all(), "top-1 differs on some frame"
    assert np.abs(got.logits.astype(int) - expected).max() <= 1, "uint8 logits more than one quantization step apart"
    return logits


@pytest.mark.parity
@pytest.mark.parametrize("model", ["model_streaming_uint8.tflite", "model_keras_streaming_uint8.tflite"])
def test_litert_js_stage_matches_python_litert_frame_by_frame(page_browser, streaming_converted, tmp_path, model):
    """The "litert.js" stage: the page on the fake camera against runtime.stream in Python, same decoded frames,
    with either conversion route's streaming model."""
    folder = streaming_folder(streaming_converted, tmp_path / "run", model)
    page = open_folder(page_browser, folder)
    assert page["state"] == "running", page["error"]
    assert page["runtime"]["isolated"] is True  # the server's COOP/COEP headers
    got = browser.recorded(page)
    assert len(got.inputs) == FRAMES
    assert_decoded_as(got.camera, browser.camera_rgb(camera_clip()), levels=2)
    assert page["manifest"]["file"] == model
    logits = assert_stream_matches_python(got, folder / model)

    # What the page shows: the top-3 of what its decision rule decides on, the mean probabilities of the last `smooth` frames.
    probabilities = softmax(logits[-page["manifest"]["decision"]["smooth"] :]).mean(axis=0)
    top3 = np.argsort(-probabilities, kind="stable")[:3]  # ties in class order, as the page's stable sort
    shown = [row.text.split("\n") for row in page_browser.find_elements("css selector", "#top3 li")]
    assert [label for label, _ in shown] == [page["manifest"]["labels"][k] for k in top3]
    assert np.allclose([float(score) for _, score in shown], probabilities[top3], atol=0.006)


# A file of the model folder dropped on the page, as a user drops one from their file manager.
DROP = """
const [name, done] = arguments;
const blob = await (await fetch(`/model/${name}`)).blob();
const data = new DataTransfer();
data.items.add(new File([blob], name, { type: blob.type }));
document.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
done();
"""


def test_a_dropped_video_plays_instead_of_the_camera(page_browser, streaming_converted, tmp_path):
    folder = streaming_folder(streaming_converted, tmp_path / "run")
    write_webm(camera_clip(), folder / "clip.webm")
    decoded = np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in read_all(folder / "clip.webm")])
    with browser.served(folder) as url:
        assert browser.open_page(page_browser, f"{url}/?step=1&record={FRAMES}", FRAMES)["state"] == "running"  # the camera first
        page_browser.execute_async_script(DROP, "clip.webm")
        page = browser.wait_for_frames(page_browser, FRAMES)
        assert page["state"] == "running", page["error"]
        assert page_browser.find_element("id", "status").text == "playing clip.webm"
        got = browser.recorded(page)
        assert_decoded_as(got.camera, decoded, levels=3)
        assert_stream_matches_python(got, folder / "model_streaming_uint8.tflite")

        page_browser.execute_async_script(DROP, "labels.txt")  # not a video
        page = browser.wait_for_frames(page_browser, FRAMES)
        assert page["state"] == "error" and "cannot be played" in page["error"], page["error"]


def test_a_dropped_video_is_transcribed_frame_exact_as_predict_transcribes_it(page_browser, streaming_converted, tmp_path):
    """A continuous video of several signs, dropped on the page: every frame_step-th frame of the file is
    decided, none skipped, and the page's transcript is predict's on the same file, whatever the model
    prints (its truth is not asserted: the tests' model is not what this checks)."""
    folder = streaming_folder(streaming_converted, tmp_path / "run")
    model = folder / "model_streaming_uint8.tflite"
    frames, _ = continuous_scene(np.random.default_rng(7), 64, num_signs=4)
    write_webm(as_camera(np.asarray(frames)), folder / "signs.webm")
    with browser.served(folder) as url:
        assert browser.open_page(page_browser, f"{url}/?record=10000", 1)["state"] == "running"  # the camera first
        # Chromium's player may drop a frame it deems late (rarely at the page's half speed), and the page says so: another try
        for _ in range(3):
            page_browser.execute_async_script(DROP, "signs.webm")
            page = browser.wait_for_video(page_browser)
            if page["state"] != "running" or page["dropped"] == 0:
                break
        assert page["dropped"] == 0, f"Chromium's player dropped {page['dropped']} frames in each of 3 plays"
        screenshot = REPO / "build" / "web" / "transcript.png"  # for the README (docs/web-page.png, in 128 colours)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        assert page_browser.save_screenshot(str(screenshot))
    assert page["state"] == "running", page["error"]
    rule = DecisionRule.from_dict(page["manifest"]["decision"])
    got = browser.recorded(page)
    kept = np.stack([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB) for frame in read_all(folder / "signs.webm")[:: rule.frame_step]])
    # None skipped: every kept frame in order, each the frame of its number (its own YUV -> RGB); the file's
    # last frame alone may be missing, as Chromium's player can end a file without presenting it to the page.
    assert len(kept) - 1 <= len(got.camera) <= len(kept)
    assert np.abs(got.camera.astype(int) - kept[: len(got.camera)]).max() <= 3

    # The page decided as Python's Transcriber decides on the page's own logits, exactly.
    labels = page["manifest"]["labels"]
    transcriber = Transcriber(labels, rule)
    logits = dequantize(got.logits, StreamingTFLiteRunner(model).outputs["logits"])
    expected = [(i * rule.frame_step, labels[k]) for i, frame in enumerate(logits) if (k := transcriber(frame)) is not None]
    assert [(letter["frame"], letter["label"]) for letter in page["letters"]] == expected
    assert page["transcript"] == [label for _, label in expected]
    assert page_browser.find_element("id", "transcript").text == " ".join(page["transcript"])

    # predict on the same file: the same transcript.
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        predict([str(folder / "signs.webm"), "--model", str(model), "--json"])
    assert page["transcript"] == json.loads(printed.getvalue())["transcript"]


def read_all(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while (frame := capture.read())[0]:
        frames.append(frame[1])
    capture.release()
    return frames


def test_the_page_falls_back_to_the_clip_model(page_browser, converted, tmp_path):
    folder = link_model(tmp_path / "run", converted, "model_uint8.tflite")
    shutil.copy(converted / "labels.txt", folder)
    page = open_folder(page_browser, folder)
    assert page["state"] == "running", page["error"]
    assert page["manifest"]["mode"] == "clip"
    got = browser.recorded(page)
    t = page["manifest"]["num_segments"]
    assert len(got.logits) == FRAMES - t + 1  # one prediction a frame once T frames have come
    runner = TFLiteRunner(folder / "model_uint8.tflite")
    windows = np.stack([got.inputs[i - t + 1 : i + 1] for i in range(t - 1, FRAMES)])
    expected = quantize(runner(windows), runner.output).astype(int)
    assert (got.logits.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert np.abs(got.logits.astype(int) - expected).max() <= 1


def test_the_page_says_what_is_wrong(page_browser, streaming_converted, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    not_ours = link_model(tmp_path / "float", streaming_converted, "model_streaming_float32.tflite", "model_streaming_uint8.tflite")
    shutil.copy(streaming_converted / "model_card.json", not_ours)  # with its T (open_model reads it), only the tensors are wrong
    for folder, expected in ((empty, "no uint8 TFLite model here"), (not_ours, "float32 tensors")):
        page = open_folder(page_browser, folder)
        assert page["state"] == "error" and expected in page["error"]
        assert page_browser.find_element("id", "status").text == page["error"]  # on the page, not only in a variable


def test_the_page_says_the_camera_was_refused(streaming_converted, tmp_path):
    require(browser.missing())
    folder = link_model(tmp_path / "run", streaming_converted, "model_streaming_uint8.tflite")
    shutil.copy(streaming_converted / "model_card.json", folder)
    browser.write_y4m(camera_clip()[:2], tmp_path / "camera.y4m")
    with browser.chromium(tmp_path / "camera.y4m", allow_camera=False) as driver:
        page = open_folder(driver, folder)
        assert page["state"] == "error" and page["error"].startswith("Camera permission refused"), page["error"]
        assert driver.find_element("id", "status").text == page["error"]
