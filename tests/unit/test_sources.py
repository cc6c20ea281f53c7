from __future__ import annotations

import io
import shutil
import tarfile

import pytest

from linnaeus import storage
from linnaeus.data.inputs import (
    InputError,
    plan_csv,
    plan_folder,
    plan_webdataset,
    read_webdataset_tar,
    webdataset_taxon,
)


def _folder(tmp_path, taxa_csv: str, folders: dict[str, int]):
    (tmp_path / "taxa.csv").write_text(taxa_csv)
    for folder, n in folders.items():
        (tmp_path / "images" / folder).mkdir(parents=True)
        for i in range(n):
            (tmp_path / "images" / folder / f"{i}.jpg").write_bytes(b"x")
    return storage.resolve(tmp_path)


HEADER = "folder,kingdom,phylum,class,order,family,genus,species,common_name\n"


def test_folder_plan_joins_images_with_their_taxa_row(tmp_path):
    loc = _folder(tmp_path, HEADER + "Pica,Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,"
                  "hudsonia,Black-billed Magpie\n", {"Pica": 3})
    plan = plan_folder(loc)
    assert len(plan.items) == 3 and not plan.rejects
    assert plan.items[0]["species"] == "hudsonia" and plan.items[0]["image_id"] == "Pica/0.jpg"


def test_folder_plan_reports_malformed_rows_and_orphan_folders(tmp_path):
    loc = _folder(tmp_path, HEADER
                  + "Good,Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,hudsonia,magpie\n"
                  + "Short,Animalia,Chordata\n"
                  + "NoGenus,Animalia,Chordata,Aves,,,,hudsonia,thing\n",
                  {"Good": 1, "Short": 2, "NoGenus": 1, "Orphan": 1})
    plan = plan_folder(loc)
    assert [i["image_id"] for i in plan.items] == ["Good/0.jpg"]
    reasons = {(r["input"], r["reason"]) for r in plan.rejects}
    assert ("taxa.csv:3", "malformed_taxonomy") in reasons
    assert ("taxa.csv:4", "malformed_taxonomy") in reasons
    assert ("images/Orphan/0.jpg", "no_taxonomy") in reasons
    short = [r for r in plan.rejects if r["input"] == "images/Short/1.jpg"]
    assert short and "taxa.csv:3" in short[0]["detail"]
    assert len(plan.rejects) == 2 + 2 + 1 + 1  # 2 rows, 2+1 images of bad rows, 1 orphan


def test_folder_plan_without_taxa_csv_fails_naming_it(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(InputError, match="taxa.csv"):
        plan_folder(storage.resolve(tmp_path))


def test_csv_plan_resolves_relative_paths_and_reports_bad_rows(tmp_path):
    (tmp_path / "index.csv").write_text(
        "path,kingdom,phylum,class,order,family,genus,species,common_name,caption\n"
        "a.jpg,Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,hudsonia,magpie,on a fence\n"
        ",Animalia,Chordata,Aves,Passeriformes,Corvidae,Pica,hudsonia,magpie,\n"
        "c.jpg,,,,,,,,,\n")
    plan = plan_csv(storage.resolve(tmp_path / "index.csv"))
    assert plan.items[0]["path"] == f"{tmp_path}/a.jpg" and plan.items[0]["caption"] == "on a fence"
    assert sorted(r["reason"] for r in plan.rejects) == ["malformed_taxonomy"] * 2


def test_csv_plan_without_path_column_fails_before_reading_images(tmp_path):
    (tmp_path / "index.csv").write_text("file,kingdom\nx.jpg,Animalia\n")
    with pytest.raises(InputError, match=r"missing column\(s\) \['path'"):
        plan_csv(storage.resolve(tmp_path / "index.csv"))


def _tar(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_webdataset_rows_prefer_tags_and_drop_fallback_common_names():
    tag = b"a photo of kingdom Animalia phylum Chordata class Aves genus Geococcyx."
    data = _tar({"k1.jpg": b"img", "k1.taxonTag.txt": tag, "k1.common_name.txt": b"Geococcyx",
                 "k1.taxonomic_name.txt": b"Animalia Chordata Aves Geococcyx",
                 "k2.taxonTag.txt": tag,  # no image
                 "k3.jpg": b"img",  # no taxonomy
                 "k4.jpg": b"img", "k4.taxonomic_name.txt": b"Animalia Chordata"})
    rows = {r.get("image_id") or r["input"]: r for r in read_webdataset_tar(data, "s.tar")}
    assert rows["s.tar/k1"]["genus"] == "Geococcyx" and rows["s.tar/k1"]["order"] is None
    assert rows["s.tar/k1"]["common_name"] is None  # BioCLIP's fallback, not a common name
    assert rows["s.tar/k2"]["reason"] == "missing_image"
    assert rows["s.tar/k3"]["reason"] == "malformed_taxonomy"
    assert rows["s.tar/k4"]["phylum"] == "Chordata" and rows["s.tar/k4"]["image"] == b"img"


def test_tol_sample_taxonomy_reads_real_common_names(shared_data):
    data = (shared_data / "tol-sample" / "shard-000000.tar").read_bytes()
    rows = [r for r in read_webdataset_tar(data, "shard-000000.tar")]
    assert len(rows) == 100 and all("reason" not in r for r in rows)
    goldfinch = next(r for r in rows if r["species"] == "tristis")
    assert goldfinch["common_name"] == "American Goldfinch" and goldfinch["family"] == "Fringillidae"


def test_webdataset_plan_lists_tars_only(tmp_path, shared_data):
    for name in ("shard-000000.tar", "README.md"):
        shutil.copy(shared_data / "tol-sample" / name, tmp_path / name)
    plan = plan_webdataset(storage.resolve(tmp_path))
    assert [i["tar"].rsplit("/", 1)[-1] for i in plan.items] == ["shard-000000.tar"]
    with pytest.raises(InputError, match="no .tar shards"):
        plan_webdataset(storage.resolve(tmp_path / "empty"))


def test_webdataset_taxon_needs_some_taxonomy_member():
    from linnaeus.taxonomy import TaxonomyError

    with pytest.raises(TaxonomyError, match="no taxonTag"):
        webdataset_taxon({"jpg": b""})
