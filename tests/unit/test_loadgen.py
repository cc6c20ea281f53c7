"""The serving benchmark's arithmetic: Server-Timing parsing, medians, and CPU sorted into roles."""

from __future__ import annotations

import json
import os

from linnaeus.serving.loadgen import CpuMeter, payloads_for, role_of, server_breakdown
from linnaeus.serving.timing import parse_server_timing, server_timing, timed


def test_server_timing_round_trips_through_the_header_in_milliseconds():
    header = server_timing({"parse": 0.0021, "decode": 0.0105, "model": 0.25})
    assert header == "parse;dur=2.10, decode;dur=10.50, model;dur=250.00"
    assert parse_server_timing(header) == {"parse": 2.1, "decode": 10.5, "model": 250.0}
    assert parse_server_timing("") == {}
    assert parse_server_timing('cache;desc="hit", db;dur=3') == {"db": 3.0}  # entries without dur are skipped


def test_timed_blocks_add_up_under_one_name():
    timings: dict = {}
    for _ in range(2):
        with timed(timings, "decode"):
            sum(range(10_000))
    assert set(timings) == {"decode"} and timings["decode"] > 0


def test_breakdown_is_the_median_per_entry_and_counts_a_missing_entry_as_zero():
    timings = [{"model": 1.0, "decode": 4.0}, {"model": 3.0}, {"model": 2.0, "decode": 2.0}]
    assert server_breakdown(timings) == {"decode": 2.0, "model": 2.0}


def test_processes_are_sorted_into_serving_roles_by_their_ray_titles():
    assert role_of(["ray::ProxyActor"], set(), 1) == "proxy"
    assert role_of(["ray::ServeReplica:bench:Ingress.handle_request"], set(), 1) == "ingress"
    assert role_of(["ray::ServeReplica:bench:ModelServer"], set(), 1) == "model"
    assert role_of(["/venv/bin/raylet", "--node"], set(), 1) == "ray"
    assert role_of(["python", "-c", "from multiprocessing.spawn import spawn_main"], {7}, 7) == "clients"
    assert role_of(["sshd"], set(), 1) == "other"


def test_cpu_meter_charges_this_process_busy_loop_to_its_role():
    meter = CpuMeter()
    meter.clients = {os.getpid()}
    meter.start()
    x = 0
    for i in range(3_000_000):
        x += i * i
    used = meter.stop()
    assert set(used) == {"proxy", "ingress", "model", "ray", "clients", "other"}
    assert used["clients"] > 0.05


def test_payloads_cycle_through_the_images_as_base64_json():
    bodies = payloads_for([b"a", b"b", b"c"], per_request=2, count=3)
    assert [json.loads(b)["images"] for b in bodies] == [["YQ==", "Yg=="], ["Yw==", "YQ=="], ["Yg==", "Yw=="]]
