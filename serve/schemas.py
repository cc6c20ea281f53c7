"""The HTTP API's request and response bodies (pydantic; FastAPI renders them at /docs).

Requests are flat (no nested models) so the same schema describes the JSON body and, with images as
file parts, the multipart form. Images in JSON are base64 strings (a `data:image/...;base64,` prefix
is accepted). Limits that operators tune (counts, sizes) are checked by the ingress, not here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from linnaeus.taxonomy import RankName

Templates = Literal["openai", "single", "none"]


class Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(Request):
    images: list[str] = Field(min_length=1, description="base64-encoded images")
    labels: list[str] = Field(min_length=1, description="free-text labels to choose among")
    k: int = Field(5, ge=1, description="answers per image")
    templates: Templates = Field("openai", description="openai: CLIP's 80 prompts averaged; single: "
                                                         "'a photo of {}.'; none: the label as given")


class TaxonomyRequest(Request):
    images: list[str] = Field(min_length=1, description="base64-encoded images")
    rank: RankName = "species"
    k: int = Field(5, ge=1)
    subset: list[str] | None = Field(None, description="only taxa matching these names (any rank, "
                                                         "scientific or common name)")


class EmbedRequest(Request):
    images: list[str] | None = Field(None, description="base64-encoded images")
    texts: list[str] | None = Field(None, description="texts, embedded as given")

    @model_validator(mode="after")
    def _one_kind(self):
        if bool(self.images) == bool(self.texts):
            raise ValueError("give either images or texts (one of them, not empty)")
        return self


class Scored(BaseModel):
    label: str
    probability: float


class ClassifyResponse(BaseModel):
    model: str
    results: list[list[Scored]]


class TaxonAnswer(BaseModel):
    rank: str
    name: str
    common_name: str | None
    lineage: dict[str, str | None]
    probability: float


class TaxonomyResponse(BaseModel):
    model: str
    rank: str
    results: list[list[TaxonAnswer]]


class EmbedResponse(BaseModel):
    model: str
    dim: int
    embeddings: list[list[float]]


class Health(BaseModel):
    status: str = Field(description="ok, or degraded (the service answers, some of it does not: see reason)")
    model: str
    arch: str
    bank_taxa: int
    reason: str | None = None


def multipart_schema(model: type[Request]) -> dict:
    """The form version of a request: image fields become repeated file parts."""
    schema = model.model_json_schema()
    props = dict(schema["properties"])
    for name in ("images",):
        if name in props:
            props[name] = {"type": "array", "items": {"type": "string", "format": "binary"},
                           "description": "image files, one part each"}
    return {"type": "object", "properties": props, "required": schema.get("required", [])}


def openapi_body(model: type[Request]) -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": model.model_json_schema()},
        "multipart/form-data": {"schema": multipart_schema(model)}}}}
