"""One writer per job (arctax.lifecycle.JobState.claim / run / one_writer): real processes
racing for one job's owner file; a copy that waits adopts what the owner finished, takes over
from a dead one, and never adopts a done marker of an earlier run."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from arctax.lifecycle import STOPPED_EXIT, JobState, one_writer, read_owner

# A job in a process: claim the state, hold it for HOLD s writing its interval, then finish
# (outputs, then the done marker) or not. argv: folder, out file, hold seconds, finish (0/1).
JOB = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import arctax.lifecycle as lc
    from arctax.lifecycle import JobState

    lc.OWNER_POLL_S = 0.1
    folder, out, hold, finish = sys.argv[1], Path(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    job = JobState(folder, fp="f", job="training")

    def work():
        t0 = time.time()
        time.sleep(hold)
        out.write_text(json.dumps({"worked": [t0, time.time()]}))
        if finish == "1":
            job.mark_done("finished.json", {"by": sys.argv[2]})
        return "worked"

    got = job.run(work, "finished.json", [out], adopt=lambda rec: "adopted")
    print(got, flush=True)
    """
)


def start(folder: Path, out: Path, hold: float, finish: bool = True) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", JOB, str(folder), str(out), str(hold), "1" if finish else "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(path: Path, timeout: float = 20.0) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert time.time() < end, f"{path} never appeared"
        time.sleep(0.05)


def test_a_second_copy_waits_then_adopts_what_the_first_finished(tmp_path, monkeypatch):
    monkeypatch.setattr("arctax.lifecycle.OWNER_POLL_S", 0.1)
    folder, out = tmp_path / "state", tmp_path / "out.json"
    first = start(folder, out, hold=1.5)
    wait_for(folder.with_name("state.owner.json"))
    job = JobState(folder, fp="f", job="training")
    t0 = time.time()
    got = job.run(lambda: pytest.fail("the second copy worked"), "finished.json", [out],
                  adopt=lambda rec: rec)  # fmt: skip
    assert first.wait(30) == 0 and first.stdout.read().strip() == "worked"
    assert got == {"by": str(out)}  # the first copy's done record
    assert json.loads(out.read_text())["worked"][1] <= time.time()
    assert time.time() - t0 > 0.5  # it waited
    assert not job.owner_file.exists()  # released


def test_copies_started_at_once_never_work_at_the_same_time(tmp_path):
    """Four processes on one job: one works, the others wait and adopt; the owner file is
    created exclusively, so no two intervals of work overlap."""
    folder = tmp_path / "state"
    procs = [start(folder, tmp_path / "out.json", hold=0.4) for _ in range(4)]
    said = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), said
    results = sorted(o.strip() for o, _ in said)
    assert results == ["adopted", "adopted", "adopted", "worked"], said
    waiting = [e for _, e in said if "another copy of this job owns" in e]
    assert len(waiting) == 3 and all("delete" in e for e in waiting)


def test_a_copy_takes_over_from_a_killed_owner_and_does_the_work(tmp_path, capsys):
    folder, out = tmp_path / "state", tmp_path / "out.json"
    owner = start(folder, out, hold=60)
    wait_for(folder.with_name("state.owner.json"))
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    job = JobState(folder, fp="f", job="training")
    got = job.run(lambda: "worked", "finished.json", [out], adopt=lambda rec: "adopted")
    assert got == "worked"
    err = capsys.readouterr().err
    assert f"training: took over {folder}" in err and f"pid {owner.pid}" in err and "gone" in err


def test_an_owner_that_never_finished_is_not_adopted_after_a_takeover(tmp_path, monkeypatch):
    """A done marker of an earlier run is there; the owner waited for dies without finishing:
    the copy takes over and works (the earlier marker is not this run's)."""
    monkeypatch.setattr("arctax.lifecycle.OWNER_POLL_S", 0.1)
    folder, out = tmp_path / "state", tmp_path / "out.json"
    folder.mkdir()
    (folder / "finished.json").write_text("{}")  # an earlier run's
    out.write_text("{}")  # and its output
    owner = start(folder, out, hold=1.0, finish=False)
    wait_for(folder.with_name("state.owner.json"))
    job = JobState(folder, fp="f", job="training")

    def kill_soon():
        time.sleep(0.5)
        owner.kill()
        owner.wait()  # reaped, as Slurm reaps a job's processes

    import threading

    threading.Thread(target=kill_soon, daemon=True).start()
    assert job.run(lambda: "worked", "finished.json", [out], adopt=lambda r: "adopted") == "worked"


def test_a_stale_done_marker_is_not_adopted_when_the_owner_ends_without_finishing(tmp_path,
                                                                                  monkeypatch):  # fmt: skip
    monkeypatch.setattr("arctax.lifecycle.OWNER_POLL_S", 0.1)
    folder, out = tmp_path / "state", tmp_path / "out.json"
    folder.mkdir()
    (folder / "finished.json").write_text("{}")
    old = time.time() - 3600
    import os

    os.utime(folder / "finished.json", (old, old))
    owner = start(folder, out, hold=1.0, finish=False)  # ends cleanly, writes no marker
    wait_for(folder.with_name("state.owner.json"))
    job = JobState(folder, fp="f", job="training")
    assert job.run(lambda: "worked", "finished.json", [out], adopt=lambda r: "adopted") == "worked"
    assert owner.wait(30) == 0


def test_an_owner_that_cannot_be_proved_dead_is_waited_for_and_a_stop_exits_75(tmp_path,
                                                                               monkeypatch):  # fmt: skip
    """Another host, no Slurm job: nothing proves it dead. The copy waits (saying who and what
    to delete) until a stop signal, then exits 75 with its stop line."""
    monkeypatch.setattr("arctax.lifecycle.OWNER_POLL_S", 0.1)
    folder = tmp_path / "state"
    folder.mkdir()
    owner_file = folder.with_name("state.owner.json")
    owner_file.write_text(json.dumps({"host": "login-7", "pid": 1, "slurm_job_id": None}))
    script = textwrap.dedent(
        f"""
        from arctax.lifecycle import JobState
        import arctax.lifecycle as lc
        lc.OWNER_POLL_S = 0.1
        JobState({str(folder)!r}, fp="f", job="training").claim("finished.json")
        """
    )
    p = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    assert p.poll() is None  # still waiting
    p.send_signal(signal.SIGTERM)
    err = p.communicate(timeout=30)[1]
    assert p.returncode == STOPPED_EXIT, err
    assert "pid 1 on login-7" in err and f"delete {owner_file}" in err
    assert "training stopped (received SIGTERM): waiting for its other copy" in err
    assert read_owner(owner_file)["host"] == "login-7"  # untouched


def test_one_writer_marks_done_after_the_work_and_adopts_for_a_waiting_copy(tmp_path):
    state, out = tmp_path / "eval_state", tmp_path / "summary.json"

    def work():
        assert not (state / "done.json").exists()  # an earlier marker is dropped first
        out.write_text("{}")
        return "table"

    (state).mkdir()
    (state / "done.json").write_text("{}")
    assert one_writer(state, "evaluation", [out], work) == "table"
    assert (state / "done.json").stat().st_mtime >= out.stat().st_mtime
    assert not state.with_name("eval_state.owner.json").exists()


def test_a_failing_job_releases_its_owner_file(tmp_path):
    job = JobState(tmp_path / "state", fp="f", job="training")
    with pytest.raises(OSError, match="No space left"):
        job.run(lambda: (_ for _ in ()).throw(OSError(28, "No space left on device")),
                "finished.json", [], adopt=lambda r: r)  # fmt: skip
    assert not job.owner_file.exists()
    assert job.claim("finished.json") is None  # the next copy takes it at once
    job.release()


def test_a_copy_queued_before_the_owner_finished_adopts_and_gets_its_outputs_back(
    tmp_path, monkeypatch
):
    """A dead driver's orphan finished while the new driver's copy waited in the queue; the
    copy's own Snakemake deleted the outputs before the script ran. The copy adopts (the run
    finished after it was submitted) and links the outputs back, the same bytes."""
    state, out = tmp_path / "state", tmp_path / "out" / "best.ckpt"
    out.parent.mkdir()
    orphan = JobState(state, fp="f", job="training")
    orphan.claim("finished.json")
    out.write_bytes(b"weights")
    orphan.mark_done("finished.json", {"epochs_run": 3}, [out])
    orphan.release()
    out.unlink()  # Snakemake, before running the copy's script
    copy = JobState(state, fp="f", job="training")
    monkeypatch.setattr("arctax.lifecycle.requested_since", lambda: time.time() - 60)
    got = copy.run(lambda: pytest.fail("worked again"), "finished.json", [out],
                   adopt=lambda rec: rec)  # fmt: skip
    assert got["epochs_run"] == 3 and out.read_bytes() == b"weights"
    events = [json.loads(x)["event"] for x in copy.events_file.read_text().splitlines()]
    assert events == ["owns", "releases", "owns", "adopts", "releases"]
    # submitted after it finished (a forced re-run): the job runs again
    monkeypatch.setattr("arctax.lifecycle.requested_since", lambda: time.time() + 60)
    assert copy.run(lambda: "worked", "finished.json", [out], adopt=lambda r: "adopted") == "worked"
    # no driver and no Slurm (a job run by hand): the same
    monkeypatch.setattr("arctax.lifecycle.requested_since", lambda: None)
    assert copy.run(lambda: "worked", "finished.json", [out], adopt=lambda r: "adopted") == "worked"


def test_kept_outputs_go_with_the_done_marker(tmp_path):
    job = JobState(tmp_path / "state", job="evaluation")
    out = tmp_path / "summary.json"
    out.write_text("{}")
    job.mark_done("done.json", {}, [out])
    assert (tmp_path / "state" / "done.json.outputs" / "0-summary.json").read_text() == "{}"
    job.unmark_done("done.json")
    assert not (tmp_path / "state" / "done.json.outputs").exists()
    assert not job.restore("done.json", [tmp_path / "gone.json"])


def test_the_work_is_asked_for_since_the_live_driver_took_its_lock(tmp_path, monkeypatch):
    """A retry of a copy in the same driver run counts from the driver's start (a Slurm
    submission would be after the orphan finished); no live driver: the Slurm submission."""
    from arctax.lifecycle import requested_since
    from arctax.lifecycle.driver import record_owner

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("arctax.lifecycle.slurm_job_submitted", lambda: 123.0)
    assert requested_since() == 123.0  # no driver here
    lock = tmp_path / ".snakemake" / "locks" / "0.output.lock"
    lock.parent.mkdir(parents=True)
    lock.write_text("x\n")
    rec = record_owner(tmp_path, ["0.output.lock"], ["snakemake"])  # this process: alive
    assert requested_since() == json.loads(rec.read_text())["since"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    rec.write_text(json.dumps({**json.loads(rec.read_text()), "pid": dead.pid}))
    assert requested_since() == 123.0  # its driver is gone: not a live request


def test_an_owner_record_is_read_bounded(tmp_path):
    """An owner file or done marker is another copy's, maybe another host's: a huge, deep or
    non-regular one reads as no record, never as megabytes parsed."""
    import os

    big = tmp_path / "big.json"
    big.write_text('{"pid": 1, "pad": "' + "x" * (2 << 20) + '"}')
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    ok = tmp_path / "ok.json"
    ok.write_text('{"pid": 1}')
    assert [read_owner(p) for p in (big, deep, fifo, ok)] == [None, None, None, {"pid": 1}]
