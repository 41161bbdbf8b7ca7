"""``vmdsim run`` prints an accounting whose lines add up, and fails when completions are lost."""

from __future__ import annotations

import json

from clirig import identities, invoke

from vmdsim.hw.nvme import NvmeController


def test_json_carries_the_accounting_and_it_adds_up():
    r = invoke("run", "--duration", "2", "--json")
    assert r.exit_code == 0, r.output
    a = json.loads(r.output)["accounting"]
    assert a["posted"] == a["consumed"] + a["lost"] + a["abandoned"] + a["discarded"]
    assert a["nvme_messages"]["fired"] == a["signalled"] + a["admin"]
    assert a["real"] + a["spurious"] >= a["posted"] > 0 and a["lost_by_queue"] == []


def test_lost_completions_are_listed_and_make_run_fail(monkeypatch):
    real = NvmeController.queue_vector

    def misrouted(self, q):  # every queue 2 signals an entry nobody unmasked
        v = real(self, q)
        return self.msix.nvec - 1 if q == 2 and v is not None else v

    monkeypatch.setattr(NvmeController, "queue_vector", misrouted)
    r = invoke("run", "--duration", "2")
    assert r.exit_code == 1
    lines = r.stdout.splitlines()
    lost = int(next(x for x in lines if x.startswith("lost interrupts")).split()[-1])
    assert lost > 0
    assert [x for x in lines if x.startswith("  lost on nvme")]
    assert all("masked" in x for x in lines if x.startswith("  lost on"))
    assert f"vmdsim: {lost} completion(s) lost: nvme0q2" in r.stderr
    for line, left, right in identities(lines):
        assert left == right, line
