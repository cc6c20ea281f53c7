"""The HTTP front: FastAPI on Ray Serve. Auth, limits, decoding and cropping happen here, on CPUs.

Notable:
- Each endpoint takes JSON (images base64) or multipart (images as file parts, other fields as form
  fields); both are validated by the same pydantic model, and OpenAPI at /docs lists both.
- Refusals are `ApiError`s with a status, a short reason and a message naming the field, index and
  limit: 401 (API key), 429 (per-client limits), 413 (body, image bytes, pixels, counts), 422 (fields),
  400 (an image that is not one or has extreme proportions, bad base64, a subset name that matches
  nothing), 503 with Retry-After (the model replica died under the request, or its queue is full). A
  500 means a bug, never client input or a lost replica.
- Images are decoded and cropped to the model's input in a thread pool (PIL releases the GIL), and
  travel to the model deployment as one uint8 numpy array per request ([N, 3, S, S]).
- The API key is read from `ServeArgs.api_key_file` (a mounted secret, re-read when it changes) or the
  environment variable `api_key_env` (serve/auth.py); `/healthz` and `/docs` stay open for probes and
  readers. Per-client rate and in-flight limits (serve/clients.py) answer 429 with Retry-After.
- Every answer from `/v1/*` (refusals too, with the parts reached; not a client that hung up) carries
  a `Server-Timing` header (ms spent in this replica: `parse` — reading the body (from HAProxy's
  connection, or fetched from Serve's proxy actor) and validating it, base64 included — `decode`
  (thread-pool wait included), `model` — the round trip to the model deployment, its queue included —
  and `ingress`, the whole handler), so a client can tell the service's time from the network's and
  the HTTP front's.
"""

# No `from __future__ import annotations`: FastAPI must see real annotations on the routes.
import asyncio
import base64
import binascii
import logging
import time

import numpy as np
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError
from ray.serve.config import BackpressureConfig
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError, ReplicaUnavailableError
from starlette.requests import ClientDisconnect

from linnaeus.clip.preprocess import eval_crop, eval_pixels
from linnaeus.config import ServeLimits
from linnaeus.images import ImageLimits, ImageRejected, decode_image
from linnaeus.serving.timing import server_timing, timed
from serve import schemas
from serve.auth import ApiKey
from serve.clients import ClientLimiter, client_id
from serve.metrics import IngressMetrics

api = FastAPI(title="Linnaeus", version="1", description=(
    "Open-vocabulary classification, tree-of-life taxonomy and embeddings from a BioCLIP-style model."))

logger = logging.getLogger("ray.serve")
_IMAGE_STATUS = {"too_large": 413, "too_many_pixels": 413}
_UNAVAILABLE = (RayActorError, ReplicaUnavailableError, DeploymentUnavailableError)


class ApiError(Exception):
    def __init__(self, status: int, reason: str, detail: str, retry_after_s: int | None = None):
        super().__init__(detail)
        self.status, self.reason, self.detail, self.retry_after_s = status, reason, detail, retry_after_s


def _error_response(exc: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
    if exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    return JSONResponse({"detail": exc.detail, "reason": exc.reason}, exc.status, headers=headers or None)


def _timed(response: Response, timings: dict, start: float) -> Response:
    """`response` with the timings taken so far (a refusal too: a slow 413 says whether the body was the cost)."""
    timings["ingress"] = time.perf_counter() - start
    response.headers["server-timing"] = server_timing(timings)
    return response


async def _remote(method, *args):
    """A call to the model deployment; a replica that died under the call, none alive yet, or a full
    queue is a 503 with Retry-After (the client should retry), never a 500."""
    try:
        return await method.remote(*args)
    except BackPressureError:
        raise ApiError(503, "model_overloaded", "the model's queue is full; retry shortly", retry_after_s=1) from None
    except _UNAVAILABLE as exc:
        logger.warning("model deployment unavailable: %s", type(exc).__name__)
        raise ApiError(503, "model_unavailable", "the model replica serving this request went away; retry "
                                                 "(a replacement is starting)", retry_after_s=1) from None


def _b64(text: str, index: int) -> bytes:
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, "bad_base64", f"images[{index}]: not valid base64") from None


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# Past 32 requests in flight, at most 128 wait (behind HAProxy in each replica; behind Serve's proxy in
# each proxy, for all replicas), then 503 with Retry-After at once: an overloaded service says so instead
# of keeping clients waiting without bound.
@serve.deployment(max_ongoing_requests=32, max_queued_requests=128,
                  backpressure_config=BackpressureConfig(status_code=503, retry_after_s=1))
@serve.ingress(api)
class Ingress:
    def __init__(self, limits: ServeLimits, api_key_env: str | None, preprocess_cfg: dict | None, model,
                 api_key_file: str | None = None):
        self.limits, self.model = limits, model
        self.image_limits = ImageLimits(limits.max_image_bytes, limits.max_image_pixels)
        self.api_key = ApiKey(api_key_env, api_key_file)
        self.clients = ClientLimiter(limits.client_rate, limits.client_burst, limits.client_concurrency)
        self.metrics = IngressMetrics()
        self._info: dict | None = None
        self._info_at = 0.0
        # Built here, not on the first request: importing the transforms takes seconds in a new process.
        self._crop = eval_crop(preprocess_cfg) if preprocess_cfg else None

    async def _model_info(self) -> dict:
        # degraded: ask again, at most once a second, until the bank is in (not a call per request)
        stale = self._info is not None and self._info.get("bank_error") and time.monotonic() - self._info_at > 1.0
        if self._info is None or stale:
            self._info, self._info_at = await _remote(self.model.info), time.monotonic()
            if self._crop is None:
                self._crop = eval_crop(self._info["preprocess_cfg"])
        return self._info

    # --- plumbing --------------------------------------------------------------------------------
    async def _handle(self, request: Request, response: Response, endpoint: str, body_model, work):
        start, status, reason = time.perf_counter(), 200, None
        timings: dict = {}
        client = None
        try:
            self._authorise(request)
            client = self._admit(request)
            with timed(timings, "parse"):
                fields, blobs = await self._parse(request, body_model)
            result = await work(fields, blobs, timings)
            _timed(response, timings, start)
            return result
        except ApiError as exc:
            status, reason = exc.status, exc.reason
            return _timed(_error_response(exc), timings, start)
        except ClientDisconnect:  # nobody reads the answer; not a server fault either
            status, reason = 400, "client_disconnected"
            return JSONResponse({"detail": "client disconnected", "reason": reason}, 400)
        except Exception as exc:  # a bug or a dead replica: say so, keep the reason out of the client's way
            status, reason = 500, "internal"
            logger.exception("%s: internal error", endpoint)
            body = {"detail": f"internal error ({type(exc).__name__})", "reason": "internal"}
            return _timed(JSONResponse(body, 500), timings, start)
        finally:
            if client is not None:
                self.clients.release(client)
            self.metrics.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
            self.metrics.latency.observe(time.perf_counter() - start, tags={"endpoint": endpoint})
            if reason:
                self.metrics.errors.inc(tags={"endpoint": endpoint, "reason": reason})

    def _authorise(self, request: Request) -> None:
        if not self.api_key.accepts(request.headers.get("authorization", "")):
            raise ApiError(401, "unauthorised", "missing or wrong API key (send 'Authorization: Bearer <key>')")

    def _admit(self, request: Request) -> str | None:
        """The client's id once admitted (release it when done), None when no limit is on."""
        if not (self.limits.client_rate or self.limits.client_concurrency):
            return None
        client = client_id(request.headers.get("authorization", ""), request.headers.get("x-forwarded-for", ""),
                           request.client.host if request.client else None)
        refusal = self.clients.admit(client)
        if refusal:
            raise ApiError(429, refusal.reason, refusal.detail, retry_after_s=refusal.retry_after_s)
        return client

    async def _body(self, request: Request) -> bytes:
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise ApiError(413, "body_too_large", f"request body {int(declared):,} bytes > limit {limit:,}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "body_too_large", f"request body > limit {limit:,} bytes")
            chunks.append(chunk)
        request._body = body = b"".join(chunks)  # starlette's own cache: form() parses it from here
        return body

    async def _parse(self, request: Request, body_model) -> tuple[schemas.Request, list[bytes]]:
        body = await self._body(request)
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            return await self._parse_form(request, body_model)
        if kind not in ("application/json", ""):
            raise ApiError(415, "unsupported_media_type", f"content-type {kind!r}: send application/json "
                                                          "or multipart/form-data")
        try:
            fields = body_model.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise ApiError(422, "invalid_field", _validation_message(exc)) from None
        return fields, [_b64(s, i) for i, s in enumerate(getattr(fields, "images", None) or [])]

    async def _parse_form(self, request: Request, body_model):
        limit = self.limits.max_images + self.limits.max_labels + self.limits.max_texts + 16
        try:
            form = await request.form(max_files=self.limits.max_images, max_fields=limit)
        except Exception as exc:  # starlette raises on malformed forms and on its own count limits
            if "Too many files" in str(exc):
                raise ApiError(413, "too_many_images", f"images: more than the limit of {self.limits.max_images} "
                                                       "files per request") from None
            raise ApiError(400, "bad_form", f"multipart form: {exc}") from None
        try:
            blobs = [await part.read() for part in form.getlist("images") if hasattr(part, "read")]
        finally:
            await form.close()  # parts over 1 MB are spooled to temporary files
        raw: dict = {}
        for key in form.keys():
            values = [v for v in form.getlist(key) if isinstance(v, str)]
            if key in ("labels", "subset", "texts"):
                raw[key] = values
            elif values:
                raw[key] = values[0]
        if blobs:
            raw["images"] = [""] * len(blobs)  # placeholders: the bytes are already here
        try:
            return body_model.model_validate(raw), blobs
        except ValidationError as exc:
            raise ApiError(422, "invalid_field", _validation_message(exc)) from None

    def _check_counts(self, images: int = 0, labels: list[str] = (), texts: list[str] = (), k: int = 1,
                      labels_name: str = "labels") -> None:
        lim = self.limits
        for name, count, most in (("images", images, lim.max_images), (labels_name, len(labels), lim.max_labels),
                                  ("texts", len(texts), lim.max_texts)):
            if count > most:
                raise ApiError(413, f"too_many_{name}", f"{name}: {count} > limit {most} per request")
        if k > lim.max_k:
            raise ApiError(422, "too_many_k", f"k: {k} > limit {lim.max_k}")
        for name, strings in ((labels_name, labels), ("texts", texts)):
            for i, text in enumerate(strings):
                if len(text) > lim.max_text_chars:
                    raise ApiError(422, "text_too_long",
                                   f"{name}[{i}]: {len(text)} characters > limit {lim.max_text_chars}")
                if not text.strip():
                    raise ApiError(422, "empty_text", f"{name}[{i}]: empty")

    async def _pixels(self, blobs: list[bytes], endpoint: str, timings: dict) -> np.ndarray:
        await self._model_info()
        self.metrics.images.inc(len(blobs), tags={"endpoint": endpoint})

        def one(i: int, data: bytes) -> np.ndarray:
            try:
                return eval_pixels(decode_image(data, self.image_limits), self._crop)
            except ImageRejected as exc:
                raise ApiError(_IMAGE_STATUS.get(exc.reason, 400), exc.reason, f"images[{i}]: {exc}") from None
            except Exception as exc:  # the image decoded but cannot be cropped: still the client's image
                raise ApiError(400, "unprocessable_image", f"images[{i}]: {type(exc).__name__}: {exc}") from None

        with timed(timings, "decode"):
            return np.stack(await asyncio.gather(*(asyncio.to_thread(one, i, b) for i, b in enumerate(blobs))))

    @staticmethod
    async def _call(timings: dict, method, *args):
        with timed(timings, "model"):
            return await _remote(method, *args)

    # --- endpoints -------------------------------------------------------------------------------
    @api.post("/v1/classify", response_model=schemas.ClassifyResponse,
              openapi_extra=schemas.openapi_body(schemas.ClassifyRequest))
    async def classify(self, request: Request, response: Response):
        async def work(f: schemas.ClassifyRequest, blobs, timings):
            self._check_counts(images=len(blobs), labels=f.labels, k=f.k)
            pixels = await self._pixels(blobs, "classify", timings)
            results = await self._call(timings, self.model.classify, pixels, f.labels, f.k, f.templates)
            return {"model": self._info["model"], "results": results}
        return await self._handle(request, response, "classify", schemas.ClassifyRequest, work)

    @api.post("/v1/taxonomy", response_model=schemas.TaxonomyResponse,
              openapi_extra=schemas.openapi_body(schemas.TaxonomyRequest))
    async def taxonomy(self, request: Request, response: Response):
        async def work(f: schemas.TaxonomyRequest, blobs, timings):
            subset = f.subset or []
            self._check_counts(images=len(blobs), labels=subset, k=f.k, labels_name="subset")
            info = await self._model_info()
            if info.get("bank_error"):
                raise ApiError(503, "label_bank_unavailable", info["bank_error"], retry_after_s=5)
            if not info["bank_taxa"]:
                raise ApiError(503, "no_label_bank", "this service has no label bank loaded; build one with "
                                                     "jobs/build_label_bank.py and redeploy")
            pixels = await self._pixels(blobs, "taxonomy", timings)
            results = await self._call(timings, self.model.taxonomy, pixels, f.rank, f.k, f.subset)
            if isinstance(results, dict) and "unavailable" in results:
                raise ApiError(503, "label_bank_unavailable", results["unavailable"], retry_after_s=5)
            if isinstance(results, dict):
                raise ApiError(400, "bad_subset", results["error"])
            return {"model": self._info["model"], "rank": f.rank, "results": results}
        return await self._handle(request, response, "taxonomy", schemas.TaxonomyRequest, work)

    @api.post("/v1/embed", response_model=schemas.EmbedResponse,
              openapi_extra=schemas.openapi_body(schemas.EmbedRequest))
    async def embed(self, request: Request, response: Response):
        async def work(f: schemas.EmbedRequest, blobs, timings):
            self._check_counts(images=len(blobs), texts=f.texts or [])
            info = await self._model_info()
            if blobs:
                pixels = await self._pixels(blobs, "embed", timings)
                vectors = await self._call(timings, self.model.embed_pixels, pixels)
            else:
                vectors = await self._call(timings, self.model.embed_texts, f.texts)
            return {"model": info["model"], "dim": len(vectors[0]), "embeddings": vectors}
        return await self._handle(request, response, "embed", schemas.EmbedRequest, work)

    @api.get("/healthz", response_model=schemas.Health)
    async def healthz(self):
        try:
            info = await self._model_info()
        except ApiError as exc:  # no model replica to ask: not healthy, and say why
            return _error_response(exc)
        status = "degraded" if info.get("bank_error") else "ok"
        return {"status": status, "model": info["model"], "arch": info["arch"], "bank_taxa": info["bank_taxa"],
                "reason": info.get("bank_error")}

