"""The HTTP/JSON edge: a page and JSON endpoints over the gateway, through the facedit_client SDK.

    POST /api/photo    multipart `file` (and `fidelity`: "faithful", the default, or "fast"): every face
                       found -> latent ids (cached by the gateway), crops and the faithful inversion's report
    POST /api/random   {"seed": 7 or null}: a generated face -> its latent id
    POST /api/edit     {"latent_id", "edits": {"smile": 1.5}, "keep": [...], "method", "text", "text_strength"}
    GET  /api/attributes  the pack's attributes, methods and recommended ranges
    GET  /healthz      200 while the gateway answers, 503 otherwise
    GET  /openapi.json  the OpenAPI description of all of these

Images travel as data URLs (base64 PNG). Every failure is a JSON {"error": <a sentence for a person>,
"code", "trace_id"}; no stack trace ever leaves the process (it goes to the log). Uploads are refused
(413) on their Content-Length before anything is read or sent to the gateway.
"""
from __future__ import annotations

import base64
import json
import logging
import random
import time
from pathlib import Path
from typing import Annotated

from facedit_client import Client, Edit, Face, FaceditError
from facedit_client.requests import FIDELITIES, method_name
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

STATIC = Path(__file__).resolve().parent / "static"
UPLOAD_PATHS = ("/api/photo",)
FORM_OVERHEAD = 16 << 10  # multipart boundaries and headers around the file
IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
log = logging.getLogger("web")

# What a person reads for each gRPC status; INVALID_ARGUMENT and NOT_FOUND keep the gateway's own
# sentence (no face found, unknown attribute 'x', ...), which already says what to change.
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "OUT_OF_RANGE": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404,
               "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
               "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504}
PLAIN_WORDS = {
    "NOT_FOUND": "This face is no longer remembered by the server (faces are kept one hour): upload it again.",
    "UNAUTHENTICATED": "The web service's token was refused by the face service.",
    "PERMISSION_DENIED": "The web service may not use this operation of the face service.",
    "RESOURCE_EXHAUSTED": "The face service is busy right now: try again in a few seconds.",
    "UNAVAILABLE": "The face service cannot be reached right now: try again in a moment.",
    "DEADLINE_EXCEEDED": "The face service took too long to answer: try again.",
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "", trace_id: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.trace_id = status, message, code, trace_id


class EditRequest(BaseModel):
    latent_id: str = Field(description="a face's id from /api/photo or /api/random")
    edits: dict[str, float] = Field(default_factory=dict, description="attribute -> strength, e.g. {'smile': 1.5}")
    keep: list[str] = Field(default_factory=list, description="attributes to keep fixed")
    method: str | None = Field(None, description="interfacegan, refined, crg, tlgan, istrc, words, sefa; null: the pack's")
    text: str = Field("", description="a phrase to move the face towards, e.g. 'a big grin'")
    text_strength: float = Field(2.0, description="how far to move along the phrase")


class RandomRequest(BaseModel):
    seed: int | None = Field(None, description="null: a random seed")


def inversion_dict(face) -> dict | None:
    """A PhotoFace's InversionReport (fidelity faithful) as JSON, None when it has none (fast)."""
    if not face.HasField("inversion"):
        return None
    r = face.inversion
    return {"identity_before": round(r.identity_before, 4), "identity_after": round(r.identity_after, 4),
            "pixel_error_before": round(r.pixel_error_before, 2), "pixel_error_after": round(r.pixel_error_after, 2),
            "steps": r.steps, "seconds": round(r.seconds, 2)}


def data_url(image: bytes, fmt: str = "png") -> str:
    return f"data:image/{fmt};base64," + base64.b64encode(image).decode()


def looks_like_image(head: bytes) -> bool:
    return head.startswith(IMAGE_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def from_grpc(err: FaceditError) -> ApiError:
    status = HTTP_STATUS.get(err.code, 502)
    if err.code in PLAIN_WORDS:
        message = PLAIN_WORDS[err.code]
    elif status == 400:
        message = err.message[:1].upper() + err.message[1:]
    else:
        message = "The face service failed on this request" + (f" (trace id {err.trace_id})." if err.trace_id else ".")
    return ApiError(status, message, err.code, err.trace_id)


class UploadLimit:
    """ASGI middleware: an upload whose Content-Length passes the limit (or that has none) is answered
    413 / 411 before its body is read, so it never reaches the gateway."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in UPLOAD_PATHS:
            length = dict(scope["headers"]).get(b"content-length")
            refusal = None
            if length is None or not length.isdigit():
                refusal = (411, "Send the photo with a Content-Length (a plain form upload).")
            elif int(length) > self.max_bytes + FORM_OVERHEAD:
                refusal = (413, (f"The file is too large: {int(length) / 2**20:.1f} MiB sent, at most "
                                 f"{self.max_bytes / 2**20:.0f} MiB accepted."))
            if refusal:
                body = json.dumps({"error": refusal[1], "code": "UPLOAD_REFUSED"}).encode()
                await send({"type": "http.response.start", "status": refusal[0],
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def create_app(client: Client, max_upload_bytes: int = 8 << 20) -> FastAPI:
    # docs_url/redoc_url off: their pages load scripts from a CDN; /openapi.json is the description
    app = FastAPI(title="facedit web", version="0.1.0", docs_url=None, redoc_url=None,
                  description="Face editing over HTTP/JSON; a client of the facedit gateway (gRPC).")
    app.add_middleware(UploadLimit, max_bytes=max_upload_bytes)
    attributes_cache: dict = {}

    def attributes() -> dict:
        if not attributes_cache:
            info = client.attributes(timeout_s=10)
            methods = sorted({method_name(d.method) for d in info.directions
                              if d.id.split("/", 1)[-1] in info.attributes})
            ranges = {}
            for d in info.directions:
                if d.method == info.default_method and d.id.split("/", 1)[-1] in info.attributes:
                    ranges[d.id.split("/", 1)[-1]] = [round(d.strength_min, 3), round(d.strength_max, 3)]
            attributes_cache.update(pack=info.pack.name, attributes=list(info.attributes), methods=methods,
                                    default_method=method_name(info.default_method), ranges=ranges)
        return attributes_cache

    @app.exception_handler(ApiError)
    async def api_error(_request, err: ApiError):
        return JSONResponse({"error": err.message, "code": err.code, "trace_id": err.trace_id}, err.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request, err: RequestValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'][1:]) or 'body'}: {e['msg']}" for e in err.errors()]
        return JSONResponse({"error": "The request is not valid: " + "; ".join(parts), "code": "BAD_REQUEST"}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request, err: StarletteHTTPException):
        return JSONResponse({"error": str(err.detail), "code": "HTTP"}, err.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception):
        log.error("unexpected error on %s", request.url.path, exc_info=err)
        return JSONResponse({"error": "Something went wrong in the web service; it is in its log.",
                             "code": "INTERNAL"}, 500)

    def call(fn):
        try:
            return fn()
        except FaceditError as err:
            log.info("gateway refused: %s %s", err.code, err.message)
            raise from_grpc(err) from None

    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz():
        """200 {"status": "serving"} while the gateway answers ListAttributes, 503 otherwise."""
        try:
            client.attributes(timeout_s=2)
        except FaceditError as err:
            return JSONResponse({"status": "not serving", "gateway": err.code}, 503)
        return {"status": "serving"}

    @app.get("/api/attributes")
    def api_attributes():
        """The pack's attributes, the methods that edit them, and each one's recommended range."""
        return call(attributes)

    @app.post("/api/photo")
    async def api_photo(file: Annotated[UploadFile, File(description="a photo (PNG, JPEG, GIF, WebP, BMP)")],
                        fidelity: Annotated[str, Form(description=(
                            "faithful (default): each face optimised against the photo, seconds per face, "
                            "so edits keep the person; fast: the encoder alone, milliseconds, a look-alike"))
                        ] = "faithful"):
        """Every face of the photo: its latent id (edit it by id: later edits render the faithful face
        again, fast), box, detector score, crop and, when faithful, the inversion's report."""
        if fidelity not in FIDELITIES:
            raise ApiError(400, f"Unknown fidelity '{fidelity}': choose faithful or fast.", "INVALID_ARGUMENT")
        data = await file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise ApiError(413, f"The file is too large: at most {max_upload_bytes / 2**20:.0f} MiB accepted.",
                           "UPLOAD_REFUSED")
        if not data:
            raise ApiError(400, "The file is empty: choose a photo.", "NOT_AN_IMAGE")
        if not looks_like_image(data[:16]):
            raise ApiError(415, "This file is not an image: upload a PNG, JPEG, GIF, WebP or BMP photo.",
                           "NOT_AN_IMAGE")
        first = (await run_in_threadpool(call, attributes))["attributes"][0]
        t0 = time.perf_counter()
        # in a worker thread: a faithful inversion takes seconds, and the event loop serves the others meanwhile
        resp = await run_in_threadpool(call, lambda: client.edit_photo(data, {first: 0.0}, return_crops=True,
                                                                        fidelity=fidelity))
        faces = [{"latent_id": f.latent_id, "box": [round(v) for v in f.box], "score": round(f.score, 3),
                  "image": data_url(f.crop_before), "inversion": inversion_dict(f)} for f in resp.faces]
        return {"faces": faces, "fidelity": fidelity, "ms": round(1000 * (time.perf_counter() - t0))}

    @app.post("/api/random")
    def api_random(req: RandomRequest):
        """A generated face (seed) as a face to edit: its latent id and image."""
        seed = req.seed if req.seed is not None else random.randrange(1 << 31)
        first = call(attributes)["attributes"][0]
        resp = call(lambda: client.edit(Face.seed(seed), {first: 0.0}, skip_scores=True))
        return {"faces": [{"latent_id": resp.latent_id, "seed": seed, "image": data_url(resp.image)}]}

    @app.post("/api/edit")
    def api_edit(req: EditRequest):
        """Edit a face by its latent id: attribute strengths, a phrase, attributes kept fixed, a method."""
        info = call(attributes)
        ops = [Edit(name, strength) for name, strength in req.edits.items() if strength != 0]
        if req.text.strip():
            ops.append(Edit.text(req.text.strip(), req.text_strength))
        if not ops:  # nothing moved: the face as it is
            free = [a for a in info["attributes"] if a not in req.keep] or info["attributes"]
            ops = [Edit(free[0], 0.0)]
        method = None if req.method in (None, "", "default") else req.method
        if method is not None and method not in info["methods"]:
            raise ApiError(400, f"Unknown method '{method}': choose one of {', '.join(info['methods'])}.",
                           "INVALID_ARGUMENT")
        t0 = time.perf_counter()
        resp = call(lambda: client.edit(Face.latent_id(req.latent_id), ops, keep=req.keep, method=method,
                                        return_original=True))
        identity = resp.photo_face.identity_cosine if resp.photo else float("nan")
        return {"latent_id": resp.latent_id, "image": data_url(resp.image), "original": data_url(resp.original),
                "scores_before": dict(resp.scores_before), "scores_after": dict(resp.scores_after),
                # a face from a photo: the whole photo with it edited, and its FaceNet identity cosine
                "photo": data_url(resp.photo) if resp.photo else "",
                "identity": identity if identity == identity else None,
                "ms": round(1000 * (time.perf_counter() - t0))}

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app
