"""python -m runtime.web MODEL_DIR: the folder's uint8 model on your own camera, in a browser page.

    python -m runtime.web models/RUN                # then open http://127.0.0.1:8000/ on this machine (or add --open)
    python -m runtime.web models/RUN --port 8080 --host 0.0.0.0   # other machines too (no camera there over http: a dropped video)

The page (runtime/web_page/) runs the model with LiteRT.js in WebAssembly: the streaming uint8 model
(model_streaming_uint8.tflite, or the Keras route's) one camera frame at a time with its buffers fed
back, else the clip uint8 model on a sliding window of the last T frames. Each frame is prepared as
runtime.predict prepares it (letterbox to the model's size, uint8 pixels), and the page shows the top-3
labels, frames per second and the model's time per frame. A video file dropped on the page plays
instead of the camera.

Nothing leaves the machine: the page loads only what this server serves, which is the page's own files,
the LiteRT.js files installed with it (the Makefile's npm install, shipped in the wheel; its core module
served with int8 tensors mapped, LITERTJS_INT8), and the model folder's files by name (no sub-folder, no
`..`, no absolute path). What the page needs to know of the model (which file, its size and frame count,
the labels, its tensors' types and quantization, which LiteRT.js cannot tell) is /model/manifest.json,
made here with Python's LiteRT on every request: a page reloaded after a conversion finds the new model.
A folder with no model of ours is served too, and the page says what is wrong (as the command does when
it starts).
"""

import argparse
import hashlib
import json
import re
import sys
import urllib.parse
import webbrowser
from base64 import b64encode
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from torch_tsm.cli import add_verbose_flag, setup, user_errors
from torch_tsm.cli import run as run_command
from torch_tsm.errors import UserError

PAGE = Path(__file__).parent / "web_page"
LITERTJS = PAGE / "node_modules" / "@litertjs"
# The page's one module of LiteRT.js imports its helper by its npm name: the page's import map names it.
LITERTJS_FILES = {  # URL under /litert/ -> file under LITERTJS
    "core.js": "core/dist/index.js",
    "wasm-utils.js": "wasm-utils/dist/index.js",
}
# LiteRT.js 2.5.3 maps float32, int32 and uint8 tensors to JavaScript's typed arrays and refuses any other
# (its DATATYPES table), though its WebAssembly core runs int8 tensors as every LiteRT does. The streaming
# model's buffers are int8 (conversion/streaming.py): the page's copy of core.js gains the int8 row, as
# served; a LiteRT.js that maps int8 itself is served as it is.
LITERTJS_DATATYPES = "var DATATYPES = Object.freeze([\n"
LITERTJS_INT8 = '  {\n    dtype: "int8",\n    typedArrayConstructor: Int8Array,\n    elementType: ElementType.INT8\n  },\n'
# The WebAssembly builds the page may load (LiteRT.js picks one by the browser's features): with relaxed
# SIMD, with threads as well (a cross-origin isolated page), and the compatible one for browsers without.
LITERTJS_WASM = ("litert_wasm_internal", "litert_wasm_threaded_internal", "litert_wasm_compat_internal")
STREAMING_MODELS = ("model_streaming_uint8.tflite", "model_keras_streaming_uint8.tflite")
CLIP_MODELS = ("model_uint8.tflite", "model_keras_uint8.tflite")
MIME_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".wasm": "application/wasm",
    ".txt": "text/plain; charset=utf-8",
}


def litertjs_version() -> str:
    """The exact LiteRT.js version the page is pinned to (runtime/web_page/package.json, what npm installs)."""
    return json.loads((PAGE / "package.json").read_text(encoding="utf-8"))["dependencies"]["@litertjs/core"]


# --- the model folder ----------------------------------------------------------------------------


def find_model(folder: Path) -> Path:
    """The folder's streaming uint8 model, else its clip uint8 model (either conversion route)."""
    if not folder.is_dir():
        raise UserError(f"{folder}: model folder not found")
    for name in (*STREAMING_MODELS, *CLIP_MODELS):
        if (folder / name).is_file():
            return folder / name
    raise UserError(
        f"{folder}: no uint8 TFLite model here (looked for {', '.join(STREAMING_MODELS + CLIP_MODELS)}); "
        f"convert a checkpoint first: tsm-convert --checkpoint {folder}/best.ckpt --output {folder} --streaming"
    )


def manifest(folder: Path) -> dict:
    """What the page needs of the folder's model: file, mode, sizes, labels, the decision rule (the card's),
    the tensors' types and quantization."""
    from runtime.models import class_names, open_model
    from runtime.predict import decision_rule  # the labels, T and the rule found as predict finds them

    path = find_model(folder)
    model = open_model(path, streaming=path.name in STREAMING_MODELS)
    signature = model.interpreter.get_signature_runner()
    inputs, outputs = signature.get_input_details(), signature.get_output_details()
    tensors = (_streaming_tensors if model.streaming else _clip_tensors)(path, inputs, outputs)
    return {
        "file": path.name,
        "mode": "stream" if model.streaming else "clip",
        "image_size": model.image_size,
        "num_segments": model.num_segments,
        "labels": class_names(model),
        "decision": decision_rule(path).as_dict(),
        "litertjs": litertjs_version(),
        **tensors,
    }


def _streaming_tensors(path: Path, inputs: dict, outputs: dict) -> dict:
    # frame (1, S, S, 3) uint8 + buffer_i int8 -> logits (1, K) uint8 + new_buffer_i int8, each new_buffer_i
    # quantized as buffer_i (buffers converted before they were int8 are uint8: the page runs those too)
    buffers = [f"buffer_{i}" for i in range(len(inputs) - 1)]
    if set(inputs) != {"frame", *buffers} or set(outputs) != {"logits", *(f"new_{name}" for name in buffers)}:
        raise UserError(
            f"{path}: not a streaming model of this toolkit (inputs {sorted(inputs)}, outputs {sorted(outputs)}; expected frame + buffer_i -> logits + new_buffer_i)"
        )
    _check_types(path, [inputs["frame"], outputs["logits"]], ("uint8",))
    _check_types(path, [*(inputs[name] for name in buffers), *(outputs[f"new_{name}"] for name in buffers)], ("int8", "uint8"))
    frame = [int(n) for n in inputs["frame"]["shape"]]
    if len(frame) != 4 or frame[0] != 1 or frame[1] != frame[2] or frame[3] != 3:
        raise UserError(f"{path}: its frame input is {frame}; a streaming model of this toolkit takes (1, S, S, 3)")
    for name in buffers:
        if _quantization(inputs[name]) != _quantization(outputs[f"new_{name}"]):
            raise UserError(f"{path}: new_{name} is not quantized as {name}, so it cannot be fed back as it is")
    return {
        "frame": _quantization(inputs["frame"]),
        "logits": _quantization(outputs["logits"]),
        "buffers": [
            {"name": name, "shape": [int(n) for n in inputs[name]["shape"]], "dtype": _dtype(inputs[name]), **_quantization(inputs[name])}
            for name in buffers
        ],
    }


def _clip_tensors(path: Path, inputs: dict, outputs: dict) -> dict:
    # one clip (1, T, S, S, 3) uint8 (open_model checked its shape) -> one logits (1, K) uint8
    if len(outputs) != 1:
        raise UserError(f"{path}: not a clip model of this toolkit ({len(outputs)} outputs; expected one, the logits)")
    (clip,), (logits,) = inputs.items(), outputs.values()
    _check_types(path, [clip[1], logits], ("uint8",))
    return {"input": clip[0], "frame": _quantization(clip[1]), "logits": _quantization(logits)}


def _check_types(path: Path, details: list[dict], allowed: tuple[str, ...]) -> None:
    other = sorted({_dtype(detail) for detail in details} - set(allowed))
    if other:
        raise UserError(
            f"{path}: has {', '.join(other)} tensors at its inputs or outputs; the page runs the uint8 models (tsm-convert makes them)"
        )


def _dtype(detail: dict) -> str:
    import numpy as np

    return np.dtype(detail["dtype"]).name


def _quantization(detail: dict) -> dict:
    # a quantized tensor's (scale, zero point): real value = (q - zero_point) * scale
    scale, zero_point = detail["quantization"]
    return {"scale": float(scale), "zero_point": int(zero_point)}


# --- the server ----------------------------------------------------------------------------------


def page_files() -> dict[str, Path]:
    """Every URL the page may load, to its file: a fixed table, so no request path ever becomes a file path."""
    files = {f"/{path.name}": path for path in PAGE.iterdir() if path.suffix in (".html", ".js", ".css")}
    files["/"] = PAGE / "index.html"
    if LITERTJS.is_dir():
        files |= {f"/litert/{url}": LITERTJS / name for url, name in LITERTJS_FILES.items()}
        files |= {
            f"/litert/wasm/{name}{suffix}": LITERTJS / "core" / "wasm" / f"{name}{suffix}"
            for name in LITERTJS_WASM
            for suffix in (".js", ".wasm")
        }
    return files


def litertjs_core_with_int8(core: Path) -> bytes:
    """LiteRT.js's core module with int8 tensors mapped to Int8Array (LITERTJS_INT8, where it lacks them)."""
    source = core.read_text(encoding="utf-8")
    if 'dtype: "int8"' in source:
        return source.encode()
    if source.count(LITERTJS_DATATYPES) != 1:
        raise RuntimeError(f"{core}: no DATATYPES table to add int8 to; this LiteRT.js is not the one runtime/web_page/package.json pins")
    return source.replace(LITERTJS_DATATYPES, LITERTJS_DATATYPES + LITERTJS_INT8).encode()


def content_security_policy(html: str) -> str:
    """Only this server, for everything the page loads or connects to; the page's inline import map by its hash."""
    inline = [
        b64encode(hashlib.sha256(script.encode()).digest()).decode()
        for script in re.findall(r"<script type=\"importmap\">(.*?)</script>", html, re.S)
    ]
    scripts = " ".join(f"'sha256-{digest}'" for digest in inline)
    # 'wasm-unsafe-eval' compiles WebAssembly; blob: and mediastream: are the camera and a dropped video.
    return (
        f"default-src 'self'; script-src 'self' 'wasm-unsafe-eval' {scripts}; worker-src 'self' blob:; "
        "media-src 'self' blob: mediastream:; img-src 'self' blob: data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'"
    )


class PageHandler(BaseHTTPRequestHandler):
    """GET and HEAD of the page's files, /model/manifest.json and the model folder's files by name; 404 otherwise."""

    folder: Path  # set on the subclass that serve() makes
    files: dict[str, Path]
    generated: dict[str, bytes]  # URL -> body made at start (LiteRT.js's core with int8)
    policy: str

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, send_body: bool) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/model/manifest.json":
            try:
                body = {"ok": True, **manifest(self.folder)}
            except (UserError, OSError) as error:
                body = {"ok": False, "error": str(error)}
            self._send(HTTPStatus.OK, json.dumps(body, ensure_ascii=False).encode(), MIME_TYPES[".json"], send_body)
            return
        if path in self.generated:
            self._send(HTTPStatus.OK, self.generated[path], MIME_TYPES[".js"], send_body)
            return
        file = self.files.get(path) or self._model_file(path)
        if file is None or not file.is_file():
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", MIME_TYPES[".txt"], send_body)
            return
        self._send(HTTPStatus.OK, file.read_bytes(), MIME_TYPES.get(file.suffix, "application/octet-stream"), send_body)

    def _model_file(self, path: str) -> Path | None:
        # /model/NAME: a file directly in the folder. The name is decoded first, so %2F and %2e%2e are
        # caught too; anything with a separator, `..` or a leading dot is refused, whatever it resolves to.
        if not path.startswith("/model/"):
            return None
        name = urllib.parse.unquote(path.removeprefix("/model/"))
        if not name or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
            return None
        return self.folder / name

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, send_body: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")  # a reload after a conversion gets the new model
        # Cross-origin isolation: WebAssembly threads need SharedArrayBuffer, which only such a page has.
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Content-Security-Policy", self.policy)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if send_body:
            self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:
        pass  # the page reports; a line per wasm file and frame of the manifest would bury the command's own lines


class PageServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a closed tab mid-answer is no error
            super().handle_error(request, client_address)


def serve(folder: Path, host: str = "127.0.0.1", port: int = 8000) -> PageServer:
    """A server for the page and `folder` (not yet serving: call serve_forever). Port 0 picks a free one."""
    if not folder.is_dir():
        raise UserError(f"{folder}: model folder not found")
    files = page_files()
    generated = {"/litert/core.js": litertjs_core_with_int8(files.pop("/litert/core.js"))} if "/litert/core.js" in files else {}
    handler = type(
        "Handler",
        (PageHandler,),
        {
            "folder": folder.absolute(),
            "files": files,
            "generated": generated,
            "policy": content_security_policy(files["/"].read_text(encoding="utf-8")),
        },
    )
    try:
        return PageServer((host, port), handler)
    except OSError as error:
        raise UserError(f"{host}:{port}: cannot serve there ({error.strerror or error}); choose another --port") from error


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.web", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path, help="a converted model folder (models/RUN)")
    parser.add_argument("--host", default="127.0.0.1", help="the address to listen on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="0: any free port")
    parser.add_argument("--open", action="store_true", help="open the page in this machine's default browser")
    add_verbose_flag(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup(args.verbose)
    folder = args.folder
    with user_errors(args.verbose):
        if not folder.is_dir():
            raise UserError(f"{folder}: model folder not found")
        if not LITERTJS.is_dir():
            raise UserError(
                f"{LITERTJS}: LiteRT.js is not installed; in the repository `make install` installs it (it needs npm), or install the wheel"
            )
        server = serve(folder, args.host, args.port)
        try:
            found = manifest(folder)
            print(
                f"{folder}: {found['file']} ({found['mode']} mode, {found['image_size']} px, {len(found['labels'])} classes), LiteRT.js {found['litertjs']}"
            )
        except UserError as error:
            print(f"warning: {error}\n  the page says so too; reload it once the folder holds a model", file=sys.stderr)
    host, port = server.server_address[:2]
    url = f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}/"
    print(f"open {url} (Ctrl-C stops)", flush=True)
    if args.open:
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main))
